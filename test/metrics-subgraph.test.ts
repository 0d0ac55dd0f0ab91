import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../lib/config.js';
import type { Db } from '../lib/db.js';
import type { Identity } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { DocumentCache, executeSubgraph, type SubgraphModule } from '../lib/subgraph.js';
import { createSubgraph as createMetricsSubgraph } from '../subgraphs/metrics/index.js';
import { type Aggregate, aggregateValues, bucketStart, DAY, HOUR, MINUTE } from '../subgraphs/metrics/series.js';
import { recomputeRollups } from '../workers/maintenance.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';
import { insertDevice, insertEnergy, insertOrg, insertReadings, insertSite, type RawReading } from './support/telemetry-fixtures.js';

/** A RoleContext whose databases are the test's own (so `tdb.queries` sees every statement). */
class TestContext extends RoleContext {
  constructor(
    private readonly testDb: Db,
    prefix: string,
  ) {
    super(loadConfig({ REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent' }), createLogger('silent'));
  }
  override get db(): Db {
    return this.testDb;
  }
  override get readDb(): Db {
    return this.testDb;
  }
}

const user = (orgId: string, role: Identity['role'] = 'viewer'): Identity => ({
  kind: 'user',
  subject: `u-${role}`,
  orgId,
  role,
  scopes: [],
});

let tdb: TestDatabase;
let ctx: TestContext;
let mod: SubgraphModule;
const prefix = `t${randomBytes(4).toString('hex')}:`;
let orgA: string;
let orgB: string;
let devA: string;
let devSub: string;
let devSibling: string;
let devOld: string;
let devB: string;
let root: { id: string; path: string };
let child: { id: string; path: string };

// Three whole UTC days of 1-minute readings, starting on a Monday in the past.
const T0 = Date.UTC(2026, 0, 5);
const raw: RawReading[] = [];

/** One top-level field of a result that must have data. */
function field(r: { data?: Record<string, unknown> | null | undefined }, name: string): unknown {
  expect(r.data).toBeTruthy();
  return (r.data as Record<string, unknown>)[name];
}

/** As the subgraph's HTTP handler does: parse and validate (cached), then execute with production masking. */
async function gql(identity: Identity, query: string, variables?: Record<string, unknown>) {
  const { doc, errors } = new DocumentCache(mod.schema).get(query);
  if (!doc) return { errors, data: undefined };
  return executeSubgraph(mod, doc, variables, undefined, identity, true);
}

const SERIES = `query($reps: [_Any!]!, $metric: String!, $from: DateTime!, $to: DateTime!, $interval: String, $agg: Aggregate) {
  _entities(representations: $reps) { ... on Device { id series(metric: $metric, from: $from, to: $to, interval: $interval, aggregate: $agg) { ts value } } }
}`;

beforeAll(async () => {
  tdb = await createTestDatabase();
  ctx = new TestContext(tdb.db, prefix);
  mod = createMetricsSubgraph(ctx);
  orgA = await insertOrg(tdb.db, `a-${randomBytes(3).toString('hex')}`);
  orgB = await insertOrg(tdb.db, `b-${randomBytes(3).toString('hex')}`);
  root = await insertSite(tdb.db, orgA, 'city');
  child = await insertSite(tdb.db, orgA, 'district', root);
  const grandchild = await insertSite(tdb.db, orgA, 'street', child);
  const sibling = await insertSite(tdb.db, orgA, 'other district', root);
  devA = await insertDevice(tdb.db, orgA, 'A-1', child.id);
  devSub = await insertDevice(tdb.db, orgA, 'A-2', grandchild.id);
  devSibling = await insertDevice(tdb.db, orgA, 'A-3', sibling.id);
  devOld = await insertDevice(tdb.db, orgA, 'A-4', grandchild.id, { decommissioned: true });
  devB = await insertDevice(tdb.db, orgB, 'B-1', null);

  // Irregular values (with repeats and negatives) so every aggregate differs between buckets.
  for (let i = 0; i < 3 * 24 * 60; i++) {
    raw.push({ time: new Date(T0 + i * MINUTE), deviceId: devA, metric: 'power', value: ((i * 37) % 101) - 20 + (i % 7) * 0.25 });
  }
  await insertReadings(tdb.db, orgA, raw);
  await insertReadings(tdb.db, orgB, [{ time: new Date(T0), deviceId: devB, metric: 'power', value: 999 }]);
  await recomputeRollups(tdb.db, { from: new Date(T0), to: new Date(T0 + 3 * DAY) });
});

afterAll(async () => {
  const keys = await ctx.redis.keys(`${prefix}*`);
  if (keys.length) await ctx.redis.del(...keys);
  await ctx.close();
  await tdb.drop();
});

/** The reference: buckets aligned to the epoch, aggregated in JS from the raw rows. */
function expected(from: number, to: number, intervalMs: number, agg: Aggregate) {
  const buckets = new Map<number, { t: number; v: number }[]>();
  const start = bucketStart(from, intervalMs);
  const end = bucketStart(to - 1, intervalMs) + intervalMs;
  for (const r of raw) {
    const t = r.time.getTime();
    if (t < start || t >= end || r.value === null) continue;
    const b = bucketStart(t, intervalMs);
    buckets.set(b, [...(buckets.get(b) ?? []), { t, v: r.value }]);
  }
  return [...buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([b, vs]) => ({ ts: new Date(b).toISOString(), value: aggregateValues(vs, agg) }));
}

async function series(interval: string | null, agg: Aggregate, from = T0, to = T0 + 3 * DAY, identity = user(orgA)) {
  tdb.queries.length = 0;
  const r = await gql(identity, SERIES, {
    reps: [{ __typename: 'Device', id: devA }],
    metric: 'power',
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    interval,
    agg,
  });
  expect(r.errors).toBeUndefined();
  const sqlText = tdb.queries.join('\n');
  const source = sqlText.includes('metrics_daily') ? 'daily' : sqlText.includes('metrics_hourly') ? 'hourly' : 'raw';
  const entity = (field(r, '_entities') as { series: { ts: string; value: number }[] }[])[0] as { series: { ts: string; value: number }[] };
  return { points: entity.series, source };
}

function expectSameSeries(got: { ts: string; value: number }[], want: { ts: string; value: number | null }[]) {
  expect(got.map((p) => p.ts)).toEqual(want.map((p) => p.ts));
  for (const [i, p] of got.entries()) expect(p.value).toBeCloseTo(want[i]?.value as number, 6);
}

describe('metrics subgraph: series', () => {
  const aggs: Aggregate[] = ['AVG', 'MIN', 'MAX', 'SUM', 'COUNT', 'LAST'];

  it.each(aggs)('gives the same %s from raw rows, hourly rollups and daily rollups as computed from the raw rows', async (agg) => {
    const raw15 = await series('15m', agg);
    expect(raw15.source).toBe('raw');
    expectSameSeries(raw15.points, expected(T0, T0 + 3 * DAY, 15 * MINUTE, agg));

    const hourly = await series('1h', agg);
    expect(hourly.source).toBe('hourly');
    expect(hourly.points).toHaveLength(72);
    expectSameSeries(hourly.points, expected(T0, T0 + 3 * DAY, HOUR, agg));

    const sixHours = await series('6h', agg);
    expect(sixHours.source).toBe('hourly');
    expectSameSeries(sixHours.points, expected(T0, T0 + 3 * DAY, 6 * HOUR, agg));

    const daily = await series('1d', agg);
    expect(daily.source).toBe('daily');
    expect(daily.points).toHaveLength(3);
    expectSameSeries(daily.points, expected(T0, T0 + 3 * DAY, DAY, agg));
  });

  it('rounds a range that starts mid-bucket down to whole buckets, so rollups and raw rows agree', async () => {
    const from = T0 + 90 * MINUTE;
    const to = T0 + 5 * HOUR + 10 * MINUTE;
    const hourly = await series('1h', 'SUM', from, to);
    expect(hourly.points[0]?.ts).toBe(new Date(T0 + HOUR).toISOString());
    expect(hourly.points).toHaveLength(5);
    expectSameSeries(hourly.points, expected(from, to, HOUR, 'SUM'));
  });

  it('chooses the interval from the range when none is given: raw minutes for hours, hourly for a month, daily for a year', async () => {
    const hour = await series(null, 'AVG', T0, T0 + HOUR);
    expect(hour.source).toBe('raw');
    expect(hour.points).toHaveLength(60);
    const month = await series(null, 'AVG', T0, T0 + 30 * DAY);
    expect(month.source).toBe('hourly');
    expect(month.points).toHaveLength(72);
    expect((await series(null, 'AVG', T0, T0 + 365 * DAY)).source).toBe('daily');
  });

  it('refuses a malformed interval, a reversed range and too many points with BAD_USER_INPUT', async () => {
    const ask = (interval: string, from = T0, to = T0 + DAY) =>
      gql(user(orgA), SERIES, {
        reps: [{ __typename: 'Device', id: devA }],
        metric: 'power',
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        interval,
        agg: 'AVG',
      });
    for (const bad of ['5', '1x', '-1h', '0m', 'hour', '7s']) {
      const r = await ask(bad);
      expect(r.errors?.[0]?.extensions?.code, bad).toBe('BAD_USER_INPUT');
    }
    expect((await ask('1h', T0 + DAY, T0)).errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const tooMany = await ask('1m', T0, T0 + 30 * DAY);
    expect(tooMany.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(tooMany.errors?.[0]?.message).toMatch(/10000/);
    const badDate = await gql(user(orgA), SERIES, {
      reps: [{ __typename: 'Device', id: devA }],
      metric: 'power',
      from: 'yesterday',
      to: new Date(T0).toISOString(),
    });
    expect(badDate.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('refuses an aggregate outside the enum, as a literal or as a variable', async () => {
    const r = await gql(
      user(orgA),
      `{ _entities(representations: [{__typename: "Device", id: "${devA}"}]) { ... on Device { series(metric: "power", from: "2026-01-05T00:00:00Z", to: "2026-01-06T00:00:00Z", aggregate: MEDIAN) { ts } } } }`,
    );
    expect(r.data).toBeUndefined();
    expect(r.errors?.[0]?.message).toMatch(/MEDIAN/);
    const v = await gql(user(orgA), SERIES, {
      reps: [{ __typename: 'Device', id: devA }],
      metric: 'power',
      from: new Date(T0).toISOString(),
      to: new Date(T0 + DAY).toISOString(),
      agg: 'MEDIAN',
    });
    expect(v.data).toBeUndefined();
    expect(v.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });
});

describe('metrics subgraph: energy', () => {
  it('counts kWh per interval across a counter reset, the new value counting from zero', async () => {
    const dev = await insertDevice(tdb.db, orgA, 'E-1', child.id);
    const h = (n: number, m = 0) => new Date(T0 + n * HOUR + m * MINUTE);
    // 99.0 before the range; hour 0: +0.5 +0.5; hour 1: +1, then reset to 0.25 (counts 0.25), +0.75
    await insertEnergy(tdb.db, orgA, dev, [
      { time: new Date(T0 - 10 * MINUTE), kwh: 99 },
      { time: h(0, 15), kwh: 99.5 },
      { time: h(0, 45), kwh: 100 },
      { time: h(1, 15), kwh: 101 },
      { time: h(1, 30), kwh: 0.25 },
      { time: h(1, 45), kwh: 1 },
    ]);
    const r = await gql(
      user(orgA),
      `query($id: _Any!) { _entities(representations: [$id]) { ... on Device { energy(from: "2026-01-05T00:00:00Z", to: "2026-01-05T02:00:00Z", interval: "1h") { ts kwh } } } }`,
      { id: { __typename: 'Device', id: dev } },
    );
    expect(r.errors).toBeUndefined();
    const pts = (field(r, '_entities') as { energy: { ts: string; kwh: number }[] }[])[0]?.energy ?? [];
    expect(pts.map((p) => p.ts)).toEqual([h(0).toISOString(), h(1).toISOString()]);
    expect(pts[0]?.kwh).toBeCloseTo(1, 9);
    expect(pts[1]?.kwh).toBeCloseTo(1 + 0.25 + 0.75, 9);
  });
});

describe('metrics subgraph: sites', () => {
  it('sums the latest power of the active devices of a site subtree and its energy per day', async () => {
    const now = Date.now();
    const put = (id: string, v: number) => ctx.redis.hset(`${prefix}latest:${id}`, 'power', JSON.stringify({ ts: now, v, t: null }));
    await put(devA, 100);
    await put(devSub, 40.5);
    await put(devSibling, 1000); // outside the subtree
    await put(devOld, 7); // decommissioned
    const day = (d: number, hour: number) => new Date(T0 + d * DAY + hour * HOUR);
    await insertEnergy(tdb.db, orgA, devSub, [
      { time: day(0, 0), kwh: 10 },
      { time: day(0, 20), kwh: 12 },
      { time: day(1, 3), kwh: 15 },
      { time: day(1, 20), kwh: 16 },
    ]);
    await insertEnergy(tdb.db, orgA, devSibling, [
      { time: day(0, 1), kwh: 0 },
      { time: day(1, 1), kwh: 500 },
    ]);
    const r = await gql(
      user(orgA),
      `query($reps: [_Any!]!) { _entities(representations: $reps) { ... on Site { id power energyPerDay(from: "2026-01-05T00:00:00Z", to: "2026-01-07T00:00:00Z") { ts kwh } } } }`,
      { reps: [{ __typename: 'Site', id: child.id }] },
    );
    expect(r.errors).toBeUndefined();
    const site = (field(r, '_entities') as { power: number; energyPerDay: { ts: string; kwh: number }[] }[])[0];
    expect(site?.power).toBeCloseTo(140.5, 9);
    // devSub: day 0 +2, day 1 +3 +1; devA and the energy test's device have no readings on day 1 in this subtree beyond theirs
    const perDay = Object.fromEntries((site?.energyPerDay ?? []).map((p) => [p.ts.slice(0, 10), p.kwh]));
    expect(perDay['2026-01-06']).toBeCloseTo(4, 9);
    expect(perDay['2026-01-05']).toBeCloseTo(2 + 1 + 2, 9); // devSub 2, plus device E-1 (also in this district): 1 + 2
  });
});

describe('metrics subgraph: latest values and status', () => {
  it('serves latest readings and status from the Redis hashes, in one pipeline per batch', async () => {
    await ctx.redis.hset(`${prefix}latest:${devSub}`, {
      voltage: JSON.stringify({ ts: T0, v: 231.5, t: null }),
      lamp: JSON.stringify({ ts: T0 + 1000, v: 1, t: 'true' }),
      mode: JSON.stringify({ ts: T0 + 2000, v: null, t: 'auto' }),
    });
    await ctx.redis.hset(`${prefix}status:${devSub}`, { online: '1', lastSeen: String(T0 + 5000), since: String(T0) });
    const r = await gql(
      user(orgA),
      `query($reps: [_Any!]!) { _entities(representations: $reps) { ... on Device { id latest { metric ts value text } status { online lastSeen } } } }`,
      {
        reps: [
          { __typename: 'Device', id: devSub },
          { __typename: 'Device', id: devSibling },
        ],
      },
    );
    expect(r.errors).toBeUndefined();
    const [sub, sib] = field(r, '_entities') as { latest: unknown[]; status: unknown }[];
    expect(sub?.latest).toEqual([
      { metric: 'lamp', ts: new Date(T0 + 1000).toISOString(), value: 1, text: 'true' },
      { metric: 'mode', ts: new Date(T0 + 2000).toISOString(), value: null, text: 'auto' },
      { metric: 'power', ts: expect.any(String), value: 40.5, text: null },
      { metric: 'voltage', ts: new Date(T0).toISOString(), value: 231.5, text: null },
    ]);
    expect(sub?.status).toEqual({ online: true, lastSeen: new Date(T0 + 5000).toISOString() });
    expect(sib?.status).toEqual({ online: false, lastSeen: null });
  });
});

describe('metrics subgraph: tenant isolation', () => {
  it("resolves another organization's device and site to null through _entities, never to data", async () => {
    await ctx.redis.hset(`${prefix}latest:${devA}`, 'voltage', JSON.stringify({ ts: T0, v: 230, t: null }));
    const q = `query($reps: [_Any!]!) { _entities(representations: $reps) {
      ... on Device { id latest { metric } status { online } series(metric: "power", from: "2026-01-05T00:00:00Z", to: "2026-01-06T00:00:00Z", interval: "1h") { value } energy(from: "2026-01-05T00:00:00Z", to: "2026-01-06T00:00:00Z") { kwh } }
      ... on Site { id power energyPerDay(from: "2026-01-05T00:00:00Z", to: "2026-01-07T00:00:00Z") { kwh } } } }`;
    const reps = [
      { __typename: 'Device', id: devA },
      { __typename: 'Site', id: root.id },
      { __typename: 'Device', id: 'not-a-uuid' },
    ];
    const asB = await gql(user(orgB), q, { reps });
    expect(asB.errors).toBeUndefined();
    expect(asB.data?._entities).toEqual([null, null, null]);
    const asA = await gql(user(orgA), q, { reps });
    expect(asA.errors).toBeUndefined();
    const [d, s] = field(asA, '_entities') as { series: unknown[]; power: number }[];
    expect(d?.series).toHaveLength(24);
    expect(s?.power).toBeGreaterThan(0);
    // org B's own device answers org B, with org B's data only
    const own = await gql(user(orgB), SERIES, {
      reps: [{ __typename: 'Device', id: devB }],
      metric: 'power',
      from: new Date(T0).toISOString(),
      to: new Date(T0 + DAY).toISOString(),
      interval: '1d',
      agg: 'SUM',
    });
    expect((field(own, '_entities') as { series: { value: number }[] }[])[0]?.series).toEqual([
      { ts: new Date(T0).toISOString(), value: 999 },
    ]);
  });

  it('refuses an API key without telemetry:read', async () => {
    const key: Identity = { kind: 'apikey', subject: 'k1', orgId: orgA, role: 'viewer', scopes: ['devices:read'] };
    const r = await gql(key, `{ _entities(representations: [{__typename: "Device", id: "${devA}"}]) { ... on Device { id } } }`);
    expect(r.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const ok = await gql(
      { ...key, scopes: ['telemetry:read'] },
      `{ _entities(representations: [{__typename: "Device", id: "${devA}"}]) { ... on Device { id } } }`,
    );
    expect(ok.data?._entities).toEqual([{ id: devA }]);
  });
});

describe('metrics subgraph: dead letters', () => {
  const Q = `query($first: Int, $after: String, $reason: String) { deadLetters(first: $first, after: $after, reason: $reason) {
    edges { cursor node { id topic reason detail payload deviceId receivedAt } } pageInfo { hasNextPage endCursor } } }`;

  beforeAll(async () => {
    const { sql } = await import('kysely');
    // Five in one transaction share received_at: pagination must still neither skip nor repeat.
    await sql`insert into dead_letters (org_id, topic, reason, payload)
      select ${orgA}::uuid, 'devices/x/telemetry', case when g % 2 = 0 then 'not_json' else 'unknown_device' end, 'p' || g
      from generate_series(1, 5) g`.execute(tdb.db);
    await sql`insert into dead_letters (org_id, topic, reason) values (${orgB}, 'devices/y/telemetry', 'not_json'), (null, 'bad/topic', 'topic')`.execute(
      tdb.db,
    );
  });

  it('lists only admins their own organization, newest first, paginated without gaps or repeats', async () => {
    const seen: string[] = [];
    let after: string | null = null;
    for (let page = 0; page < 5; page++) {
      const r = await gql(user(orgA, 'admin'), Q, { first: 2, after });
      expect(r.errors).toBeUndefined();
      const conn = field(r, 'deadLetters') as {
        edges: { node: { id: string; payload: string } }[];
        pageInfo: { hasNextPage: boolean; endCursor: string };
      };
      seen.push(...conn.edges.map((e) => e.node.payload));
      if (!conn.pageInfo.hasNextPage) break;
      after = conn.pageInfo.endCursor;
    }
    expect(seen).toEqual(['p5', 'p4', 'p3', 'p2', 'p1']);
    const filtered = await gql(user(orgA, 'admin'), Q, { reason: 'not_json' });
    expect((field(filtered, 'deadLetters') as { edges: unknown[] }).edges).toHaveLength(2);
  });

  it('refuses viewers and operators with FORBIDDEN', async () => {
    for (const role of ['viewer', 'operator'] as const) {
      const r = await gql(user(orgA, role), Q, {});
      expect(r.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    }
    const bad = await gql(user(orgA, 'admin'), Q, { after: 'garbage' });
    expect(bad.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('refuses a forged cursor naming an impossible instant with BAD_USER_INPUT, not a database error', async () => {
    const forged = Buffer.from(JSON.stringify(['2026-02-30 10:00:00.000001+00', '1'])).toString('base64url');
    const r = await gql(user(orgA, 'admin'), Q, { after: forged });
    expect(r.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(r.errors?.[0]?.message).toBe('invalid cursor');
  });
});
