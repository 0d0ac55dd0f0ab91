import { randomBytes, randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsChannel } from '../lib/contracts/events.js';
import { RULE_EVAL_QUEUE, type RuleEvalJob } from '../lib/contracts/rule-eval.js';
import { ruleStatsKey, rulesVersionKey } from '../lib/contracts/rule-state.js';
import { withTenant } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { RuleEvaluator } from './rule-eval.js';

let t: TestDatabase;
let redis: Redis;
let ev: RuleEvaluator;
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
const label = (id: string) => id.replaceAll('-', '_');

interface Org {
  orgId: string;
  city: string;
  street: string;
  profile: string;
  /** d[0] in the city site, d[1..3] in the street site (below the city), d[4] decommissioned */
  d: string[];
}

async function org(): Promise<Org> {
  const o = await t.db
    .insertInto('organizations')
    .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const city = randomUUID();
  const street = randomUUID();
  await t.db
    .insertInto('sites')
    .values([
      { id: city, org_id: o.id, name: 'City', path: label(city) },
      { id: street, org_id: o.id, name: 'Street', parent_id: city, path: `${label(city)}.${label(street)}` },
    ])
    .execute();
  const p = await t.db.insertInto('device_profiles').values({ org_id: o.id, name: 'light' }).returning('id').executeTakeFirstOrThrow();
  const d = Array.from({ length: 5 }, () => randomUUID());
  await t.db
    .insertInto('devices')
    .values(
      d.map((id, i) => ({
        id,
        org_id: o.id,
        serial: `SL-${i}`,
        name: `Light ${i}`,
        site_id: i === 0 ? city : street,
        profile_id: p.id,
        decommissioned_at: i === 4 ? new Date() : null,
      })),
    )
    .execute();
  return { orgId: o.id, city, street, profile: p.id, d };
}

async function rule(
  o: Org,
  r: Partial<{
    metric: string;
    operator: string;
    threshold: number;
    clear: number | null;
    severity: string;
    type: string;
    site: string | null;
    autoClear: boolean;
    enabled: boolean;
  }> = {},
) {
  const row = await t.db
    .insertInto('rules')
    .values({
      org_id: o.orgId,
      name: `rule-${randomBytes(3).toString('hex')}`,
      metric: r.metric ?? 'voltage',
      operator: r.operator ?? 'gt',
      threshold: r.threshold ?? 253,
      clear_threshold: r.clear ?? null,
      severity: r.severity ?? 'major',
      alarm_type: r.type ?? 'Overvoltage',
      auto_clear: r.autoClear ?? true,
      enabled: r.enabled ?? true,
      site_id: r.site ?? null,
      created_by: 'test',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  await redis.incr(rulesVersionKey(prefix, o.orgId));
  return row.id;
}

const job = (o: Org, readings: [device: number, value: number, ts: number, metric?: string][]): RuleEvalJob => ({
  orgId: o.orgId,
  readings: readings.map(([i, value, ts, metric]) => ({ deviceId: o.d[i] as string, metric: metric ?? 'voltage', ts, value })),
});

const alarmsOf = (o: Org) =>
  t.db.selectFrom('alarms').selectAll().where('org_id', '=', o.orgId).orderBy('raised_at').orderBy('id').execute();

beforeAll(async () => {
  t = await createTestDatabase();
  redis = new Redis(REDIS_URL);
  ev = new RuleEvaluator({ db: t.db, redis, redisUrl: REDIS_URL, prefix, logger: createLogger('silent') });
});

afterAll(async () => {
  await ev.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await t.drop();
});

describe('rule evaluation', () => {
  it('raises one alarm per breaching device, refreshes it while the breach lasts and clears it when the value recovers', async () => {
    const o = await org();
    const r = await rule(o);
    const s1 = await ev.evaluate(
      job(o, [
        [0, 260, 1000],
        [1, 230, 1000],
      ]),
    );
    expect(s1).toMatchObject({ readings: 2, matched: 1, raised: 1, cleared: 0 });
    let alarms = await alarmsOf(o);
    expect(alarms).toHaveLength(1);
    expect(alarms[0]).toMatchObject({ device_id: o.d[0], rule_id: r, type: 'Overvoltage', severity: 'major', value: 260, occurrences: 1 });
    expect(alarms[0]?.message).toBe('voltage 260 > 253');

    const s2 = await ev.evaluate(job(o, [[0, 270, 2000]]));
    expect(s2).toMatchObject({ raised: 0, cleared: 0 });
    alarms = await alarmsOf(o);
    expect(alarms).toHaveLength(1);
    expect(alarms[0]).toMatchObject({ value: 270, occurrences: 2, reading_ts: 2000, cleared_at: null });

    const s3 = await ev.evaluate(job(o, [[0, 240, 3000]]));
    expect(s3).toMatchObject({ cleared: 1 });
    alarms = await alarmsOf(o);
    expect(alarms[0]?.cleared_at).not.toBeNull();
    expect(alarms[0]?.cleared_by).toBe(`rule:${r}`);
    const history = await t.db
      .selectFrom('alarm_events')
      .select(['kind', 'actor', 'value'])
      .where('alarm_id', '=', alarms[0]?.id as string)
      .orderBy('id')
      .execute();
    expect(history).toEqual([
      { kind: 'raised', actor: `rule:${r}`, value: 260 },
      { kind: 'cleared', actor: `rule:${r}`, value: 240 },
    ]);

    // the next breach is a new alarm, not the old one reopened
    await ev.evaluate(job(o, [[0, 255, 4000]]));
    alarms = await alarmsOf(o);
    expect(alarms).toHaveLength(2);
    expect(alarms.filter((a) => a.cleared_at === null)).toHaveLength(1);
    const executions = await t.db.selectFrom('rule_executions').selectAll().where('rule_id', '=', r).orderBy('id').execute();
    expect(executions.map((e) => [e.raised, e.cleared])).toEqual([
      [1, 0],
      [0, 1],
      [1, 0],
    ]);
  });

  it('ignores a reading older than the one an alarm already reflects (jobs evaluated out of order)', async () => {
    const o = await org();
    await rule(o);
    await ev.evaluate(job(o, [[1, 260, 1000]]));
    await ev.evaluate(job(o, [[1, 240, 3000]])); // cleared by the newer reading
    const late = await ev.evaluate(job(o, [[1, 280, 2000]])); // an older job arrives late
    expect(late).toMatchObject({ raised: 0, stale: 1 });
    const alarms = await alarmsOf(o);
    expect(alarms).toHaveLength(1);
    expect(alarms[0]?.cleared_at).not.toBeNull();
    expect(alarms[0]?.value).toBe(240);
  });

  it('keeps the alarm inside the hysteresis band and clears it only past the clear threshold', async () => {
    const o = await org();
    await rule(o, { threshold: 253, clear: 248 });
    await ev.evaluate(job(o, [[1, 256, 1000]]));
    await ev.evaluate(job(o, [[1, 250, 2000]])); // below threshold, above clear threshold
    let [a] = await alarmsOf(o);
    expect(a).toMatchObject({ cleared_at: null, value: 250, occurrences: 1 });
    await ev.evaluate(job(o, [[1, 247, 3000]]));
    [a] = await alarmsOf(o);
    expect(a?.cleared_at).not.toBeNull();
  });

  it('leaves an alarm of a rule without automatic clearing active until someone clears it', async () => {
    const o = await org();
    await rule(o, { autoClear: false });
    await ev.evaluate(job(o, [[1, 256, 1000]]));
    await ev.evaluate(job(o, [[1, 230, 2000]]));
    const [a] = await alarmsOf(o);
    expect(a).toMatchObject({ cleared_at: null, value: 230 });
  });

  it('evaluates only devices in the rule scope, skips decommissioned devices, other metrics, disabled rules and non-numbers', async () => {
    const o = await org();
    await rule(o, { site: o.street, type: 'Street overvoltage' });
    await rule(o, { enabled: false, type: 'Disabled' });
    const s = await ev.evaluate({
      orgId: o.orgId,
      readings: [
        { deviceId: o.d[0] as string, metric: 'voltage', ts: 1000, value: 300 }, // city site: out of scope
        { deviceId: o.d[2] as string, metric: 'voltage', ts: 1000, value: 300 }, // street: in scope
        { deviceId: o.d[3] as string, metric: 'current', ts: 1000, value: 300 }, // other metric
        { deviceId: o.d[4] as string, metric: 'voltage', ts: 1000, value: 300 }, // decommissioned
        { deviceId: o.d[1] as string, metric: 'voltage', ts: 1000, value: null }, // text reading
      ],
    });
    expect(s).toMatchObject({ readings: 1, raised: 1 });
    const alarms = await alarmsOf(o);
    expect(alarms.map((a) => [a.device_id, a.type])).toEqual([[o.d[2], 'Street overvoltage']]);
  });

  it('lets the most severe rule decide for rules sharing an alarm type, whatever the order of the readings', async () => {
    const o = await org();
    await rule(o, { metric: 'current', threshold: 1, severity: 'minor', type: 'Electrical fault' });
    await rule(o, { metric: 'voltage', threshold: 253, severity: 'critical', type: 'Electrical fault' });
    // the minor rule's reading comes first and does not breach; the critical rule's does
    const s = await ev.evaluate(
      job(o, [
        [1, 0.5, 1000, 'current'],
        [1, 300, 1000, 'voltage'],
      ]),
    );
    expect(s.raised).toBe(1);
    const [a] = await alarmsOf(o);
    expect(a).toMatchObject({ type: 'Electrical fault', severity: 'critical', value: 300 });
  });

  it('picks up a rule created after the first job at once, through the rules version key', async () => {
    const o = await org();
    await ev.evaluate(job(o, [[1, 300, 1000]])); // no rules yet: cached as none
    await rule(o); // bumps the version
    const s = await ev.evaluate(job(o, [[1, 300, 2000]]));
    expect(s.raised).toBe(1);
  });

  it('skips a malformed job and malformed readings instead of failing', async () => {
    const o = await org();
    await rule(o);
    await expect(ev.evaluate({ orgId: 'not-a-uuid', readings: [] })).resolves.toMatchObject({ readings: 0 });
    await expect(ev.evaluate({ orgId: o.orgId, readings: 'x' } as never)).resolves.toMatchObject({ readings: 0 });
    const s = await ev.evaluate({
      orgId: o.orgId,
      readings: [
        { deviceId: 'nope', metric: 'voltage', ts: 1, value: 999 },
        { deviceId: o.d[1], metric: 'voltage', ts: 'x' } as never,
        { deviceId: o.d[1] as string, metric: 'voltage', ts: 5, value: 999 },
      ],
    });
    expect(s.raised).toBe(1);
  });

  it("never touches another organization's devices, even when a job names them", async () => {
    const a = await org();
    const b = await org();
    await rule(a);
    await rule(b);
    // a job of organization A carrying a device of B
    const s = await ev.evaluate({ orgId: a.orgId, readings: [{ deviceId: b.d[1] as string, metric: 'voltage', ts: 1000, value: 300 }] });
    expect(s).toMatchObject({ readings: 0, raised: 0 });
    expect(await alarmsOf(a)).toHaveLength(0);
    expect(await alarmsOf(b)).toHaveLength(0);
    // and row-level security hides B's alarms from a transaction scoped to A
    await ev.evaluate(job(b, [[1, 300, 1000]]));
    const seen = await withTenant(
      t.db,
      a.orgId,
      async (tx) => (await sql<{ n: number }>`select count(*)::int as n from alarms`.execute(tx)).rows[0]?.n,
    );
    expect(seen).toBe(0);
  });

  it('publishes alarmChanged events for raised and cleared alarms and counts evaluations per rule', async () => {
    const o = await org();
    const r = await rule(o, { site: o.city });
    const sub = new Redis(REDIS_URL);
    const got: unknown[] = [];
    sub.on('message', (_c, m) => got.push(JSON.parse(m)));
    await sub.subscribe(eventsChannel(prefix, o.orgId));
    try {
      await ev.evaluate(
        job(o, [
          [2, 300, 1000],
          [1, 200, 1000],
        ]),
      );
      await ev.evaluate(job(o, [[2, 200, 2000]]));
      for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((res) => setTimeout(res, 20));
      expect(got).toHaveLength(2);
      expect(got[0]).toMatchObject({
        field: 'alarmChanged',
        orgId: o.orgId,
        filter: { deviceId: o.d[2], siteId: o.street, sitePath: [o.city, o.street], severity: 'MAJOR' },
        data: { kind: 'RAISED', alarm: { id: expect.any(String) } },
      });
      expect(got[1]).toMatchObject({ data: { kind: 'CLEARED' } });
      const stats = await redis.hgetall(ruleStatsKey(prefix, r));
      expect(stats).toMatchObject({ evaluations: '2', readings: '3', matches: '1' });
      expect(Number(stats.lastEvaluatedAt)).toBeGreaterThan(0);
    } finally {
      sub.disconnect();
    }
  });

  it('raises exactly one alarm when two workers evaluate the same breach at once', async () => {
    const o = await org();
    await rule(o);
    const other = new RuleEvaluator({ db: t.db, redis, redisUrl: REDIS_URL, prefix, logger: createLogger('silent') });
    const results = await Promise.all([ev.evaluate(job(o, [[1, 300, 1000]])), other.evaluate(job(o, [[1, 300, 1000]]))]);
    expect(results.map((x) => x.raised).sort()).toEqual([0, 1]);
    expect(await alarmsOf(o)).toHaveLength(1);
  });

  it('consumes the rule-eval queue that ingest fills', async () => {
    const o = await org();
    await rule(o);
    const qPrefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
    const consumer = new RuleEvaluator({ db: t.db, redis, redisUrl: REDIS_URL, prefix: qPrefix, logger: createLogger('silent') }).start();
    const queue = new Queue(RULE_EVAL_QUEUE, { connection: { url: REDIS_URL }, prefix: `${qPrefix}bull` });
    try {
      await redis.incr(rulesVersionKey(qPrefix, o.orgId));
      await queue.add('batch', job(o, [[3, 300, 1000]]));
      for (let i = 0; i < 100 && (await alarmsOf(o)).length === 0; i++) await new Promise((res) => setTimeout(res, 50));
      expect((await alarmsOf(o)).map((a) => a.device_id)).toEqual([o.d[3]]);
    } finally {
      await consumer.close();
      await queue.obliterate({ force: true });
      await queue.close();
      const keys = await redis.keys(`${qPrefix}*`);
      if (keys.length) await redis.del(...keys);
    }
  });
});
