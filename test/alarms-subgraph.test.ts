import { randomUUID } from 'node:crypto';
import { parse } from 'graphql';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorOf } from '../lib/audit.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { withTenant } from '../lib/db.js';
import { encodeCursor } from '../lib/graphql-scalars.js';
import { ANONYMOUS, type Identity } from '../lib/identity.js';
import { executeSubgraph } from '../lib/subgraph.js';
import { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';
import { REDIS_URL } from './support/env.js';

let f: SubgraphFixture<ReturnType<typeof createAlarmsSubgraph>>;

beforeAll(async () => {
  f = await subgraphFixture(createAlarmsSubgraph);
});
afterAll(async () => {
  await f?.close();
});

const label = (id: string) => id.replaceAll('-', '_');

/** An organization with a root site, a child site below it, devices 0 (root), 1 and 2 (child), 3 (no site). */
interface Tenant {
  orgId: string;
  root: string;
  child: string;
  devices: string[];
  operator: Identity;
  viewer: Identity;
}

async function tenant(): Promise<Tenant> {
  const orgId = await f.org();
  const root = randomUUID();
  const child = randomUUID();
  await sql`insert into sites (id, org_id, parent_id, name, path) values
    (${root}, ${orgId}, null, 'City', ${label(root)}::ltree),
    (${child}, ${orgId}, ${root}, 'Main Street', ${`${label(root)}.${label(child)}`}::ltree)`.execute(f.t.db);
  const sites = [root, child, child, null];
  const devices = sites.map(() => randomUUID());
  for (const [i, id] of devices.entries()) {
    await sql`insert into devices (id, org_id, serial, name, site_id)
      values (${id}, ${orgId}, ${`SN-${i}-${id.slice(0, 8)}`}, ${`device ${i}`}, ${sites[i] ?? null})`.execute(f.t.db);
  }
  return { orgId, root, child, devices, operator: f.as(orgId, 'operator'), viewer: f.as(orgId, 'viewer') };
}

interface AlarmSeed {
  type?: string;
  severity?: string;
  raisedAt?: Date;
  ruleId?: string | null;
  acknowledged?: boolean;
  cleared?: boolean;
}

/** An alarm written directly, as the rule-eval worker would. */
async function insertAlarm(orgId: string, deviceId: string, a: AlarmSeed = {}): Promise<string> {
  const at = a.raisedAt ?? new Date();
  const { rows } = await sql<{ id: string }>`
    insert into alarms (org_id, device_id, rule_id, type, severity, message, value, raised_at, last_at, raised_by,
                        acknowledged_at, acknowledged_by, cleared_at, cleared_by)
    values (${orgId}, ${deviceId}, ${a.ruleId ?? null}, ${a.type ?? `T-${randomUUID().slice(0, 8)}`}, ${a.severity ?? 'major'},
            'seeded', 42, ${at}, ${at}, ${a.ruleId ? `rule:${a.ruleId}` : 'system:test'},
            ${a.acknowledged ? at : null}, ${a.acknowledged ? 'user:x' : null}, ${a.cleared ? at : null}, ${a.cleared ? 'rule:x' : null})
    returning id`.execute(f.t.db);
  return (rows[0] as { id: string }).id;
}

async function insertRule(orgId: string): Promise<string> {
  const { rows } = await sql<{ id: string }>`
    insert into rules (org_id, name, metric, operator, threshold, severity, alarm_type, created_by)
    values (${orgId}, ${`rule ${randomUUID()}`}, 'voltage', 'gt', 250, 'major', 'Overvoltage', 'user:x') returning id`.execute(f.t.db);
  return (rows[0] as { id: string }).id;
}

const FIELDS = `id type severity status active acknowledged message value occurrences raisedBy acknowledgedBy clearedBy
  raisedAt lastSeenAt acknowledgedAt clearedAt device { id } rule { id }`;
const RAISE = `mutation($input: RaiseAlarmInput!) { raiseAlarm(input: $input) { ${FIELDS} } }`;
const ACK = `mutation($id: ID!, $note: String) { acknowledgeAlarm(id: $id, note: $note) { ${FIELDS} } }`;
const CLEAR = `mutation($id: ID!, $note: String) { clearAlarm(id: $id, note: $note) { ${FIELDS} } }`;
const COMMENT = `mutation($id: ID!, $text: String!) { commentAlarm(id: $id, text: $text) { id } }`;
const ONE = `query($id: ID!) { alarm(id: $id) { ${FIELDS} history { at kind actor value note } } }`;
const LIST = `query($first: Int, $after: String, $filter: AlarmFilter) {
  alarms(first: $first, after: $after, filter: $filter) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } totalCount } }`;
const BY_IDS = `query($ids: [ID!]!) { alarmsByIds(ids: $ids) { id } }`;
const COUNTS = `query($siteId: ID) { alarmCounts(siteId: $siteId) { active unacknowledged critical major minor warning indeterminate } }`;
const ENTITIES = `query($r: [_Any!]!) { _entities(representations: $r) {
  ... on Device { id activeAlarmCount recent: alarms(first: 2) { id } open: alarms(active: true) { id } }
  ... on Alarm { id type history { kind } } } }`;

const listIds = async (who: Identity, filter: Record<string, unknown>) =>
  ((await f.ok(who, LIST, { first: 500, filter })).alarms.edges as { node: { id: string } }[]).map((e) => e.node.id);

describe('alarms subgraph: life cycle', () => {
  let t: Tenant;
  beforeAll(async () => {
    t = await tenant();
  });

  it('raises, lists, acknowledges and clears an alarm, recording each step in its history', async () => {
    const device = t.devices[1] as string;
    const raised = (
      await f.ok(t.operator, RAISE, { input: { deviceId: device, type: '  Door open ', severity: 'MAJOR', message: 'cabinet door' } })
    ).raiseAlarm;
    expect(raised).toMatchObject({
      type: 'Door open',
      severity: 'MAJOR',
      status: 'ACTIVE_UNACK',
      active: true,
      acknowledged: false,
      message: 'cabinet door',
      occurrences: 1,
      raisedBy: actorOf(t.operator),
      device: { id: device },
      rule: null,
      clearedAt: null,
    });
    expect(await listIds(t.viewer, {})).toContain(raised.id);

    const acked = (await f.ok(t.operator, ACK, { id: raised.id, note: 'on my way' })).acknowledgeAlarm;
    expect(acked).toMatchObject({ status: 'ACTIVE_ACK', active: true, acknowledged: true, acknowledgedBy: actorOf(t.operator) });

    const other = f.as(t.orgId, 'operator');
    const repeat = (await f.ok(other, ACK, { id: raised.id, note: 'me too' })).acknowledgeAlarm;
    expect(repeat).toMatchObject({ status: 'ACTIVE_ACK', acknowledgedBy: actorOf(t.operator), acknowledgedAt: acked.acknowledgedAt });

    const cleared = (await f.ok(other, CLEAR, { id: raised.id, note: 'closed it' })).clearAlarm;
    expect(cleared).toMatchObject({ status: 'CLEARED_ACK', active: false, acknowledged: true, clearedBy: actorOf(other) });
    const again = (await f.ok(t.operator, CLEAR, { id: raised.id })).clearAlarm;
    expect(again).toMatchObject({ status: 'CLEARED_ACK', clearedBy: actorOf(other), clearedAt: cleared.clearedAt });

    await f.ok(t.operator, COMMENT, { id: raised.id, text: '  hinge was loose  ' });
    const { alarm } = await f.ok(t.viewer, ONE, { id: raised.id });
    expect(alarm.history.map((h: { kind: string; actor: string; note: string | null }) => [h.kind, h.actor, h.note])).toEqual([
      ['RAISED', actorOf(t.operator), 'cabinet door'],
      ['ACKNOWLEDGED', actorOf(t.operator), 'on my way'],
      ['CLEARED', actorOf(other), 'closed it'],
      ['COMMENTED', actorOf(t.operator), 'hinge was loose'],
    ]);
    const audits = await sql<{ action: string }>`
      select action from audit_logs where org_id = ${t.orgId} and entity_type = 'alarm' and entity_id = ${raised.id} order by at`.execute(
      f.t.db,
    );
    expect(audits.rows.map((r) => r.action)).toEqual(['alarm.raise', 'alarm.acknowledge', 'alarm.clear', 'alarm.comment']);
  });

  it('counts a second raise of an active type as an occurrence, and raises a new alarm once it is cleared', async () => {
    const input = { deviceId: t.devices[2], type: 'Overheat', severity: 'MINOR' };
    const first = (await f.ok(t.operator, RAISE, { input: { ...input, message: 'warm' } })).raiseAlarm;
    const second = (await f.ok(t.operator, RAISE, { input: { ...input, severity: 'CRITICAL' } })).raiseAlarm;
    expect(second).toMatchObject({ id: first.id, occurrences: 2, severity: 'CRITICAL', message: 'warm', status: 'ACTIVE_UNACK' });
    expect(new Date(second.lastSeenAt).getTime()).toBeGreaterThanOrEqual(new Date(first.lastSeenAt).getTime());
    expect((await f.ok(t.viewer, ONE, { id: first.id })).alarm.history).toHaveLength(1);

    await f.ok(t.operator, CLEAR, { id: first.id });
    const third = (await f.ok(t.operator, RAISE, { input })).raiseAlarm;
    expect(third.id).not.toBe(first.id);
    expect(third).toMatchObject({ occurrences: 1, status: 'ACTIVE_UNACK', message: '' });
  });

  it('acknowledges a cleared alarm into CLEARED_ACK', async () => {
    const id = await insertAlarm(t.orgId, t.devices[0] as string, { cleared: true });
    expect((await f.ok(t.viewer, ONE, { id })).alarm.status).toBe('CLEARED_UNACK');
    expect((await f.ok(t.operator, ACK, { id })).acknowledgeAlarm.status).toBe('CLEARED_ACK');
  });
});

describe('alarms subgraph: filters and counts', () => {
  let t: Tenant;
  let ruleId: string;
  const ids: Record<string, string> = {};
  const T0 = Date.UTC(2026, 0, 10);

  beforeAll(async () => {
    t = await tenant();
    ruleId = await insertRule(t.orgId);
    const [d0, d1, d2, d3] = t.devices as [string, string, string, string];
    ids.rootCritical = await insertAlarm(t.orgId, d0, { type: 'Overvoltage', severity: 'critical', raisedAt: new Date(T0), ruleId });
    ids.childAcked = await insertAlarm(t.orgId, d1, { severity: 'major', raisedAt: new Date(T0 + 1000), acknowledged: true });
    ids.childCleared = await insertAlarm(t.orgId, d2, { severity: 'minor', raisedAt: new Date(T0 + 2000), cleared: true });
    ids.noSiteWarning = await insertAlarm(t.orgId, d3, { severity: 'warning', raisedAt: new Date(T0 + 3000) });
    ids.childDone = await insertAlarm(t.orgId, d1, {
      severity: 'critical',
      raisedAt: new Date(T0 + 4000),
      acknowledged: true,
      cleared: true,
    });
  });

  const sorted = (...keys: string[]) => keys.map((k) => ids[k]).sort();

  it('filters by status (any of those listed) and by severity', async () => {
    expect((await listIds(t.viewer, { status: ['ACTIVE_UNACK'] })).sort()).toEqual(sorted('rootCritical', 'noSiteWarning'));
    expect((await listIds(t.viewer, { status: ['ACTIVE_ACK', 'CLEARED_UNACK'] })).sort()).toEqual(sorted('childAcked', 'childCleared'));
    expect(await listIds(t.viewer, { status: ['CLEARED_ACK'] })).toEqual([ids.childDone]);
    expect((await listIds(t.viewer, { severity: ['CRITICAL', 'WARNING'] })).sort()).toEqual(
      sorted('rootCritical', 'noSiteWarning', 'childDone'),
    );
    expect((await listIds(t.viewer, { status: ['ACTIVE_UNACK'], severity: ['CRITICAL'] })).sort()).toEqual(sorted('rootCritical'));
  });

  it('filters by site subtree, device, rule, type and time range', async () => {
    expect((await listIds(t.viewer, { siteId: t.root })).sort()).toEqual(sorted('rootCritical', 'childAcked', 'childCleared', 'childDone'));
    expect((await listIds(t.viewer, { siteId: t.child })).sort()).toEqual(sorted('childAcked', 'childCleared', 'childDone'));
    expect(await listIds(t.viewer, { siteId: randomUUID() })).toEqual([]);
    expect(await listIds(t.viewer, { deviceId: t.devices[1] })).toEqual([ids.childDone, ids.childAcked]);
    expect(await listIds(t.viewer, { ruleId })).toEqual([ids.rootCritical]);
    expect(await listIds(t.viewer, { type: 'Overvoltage' })).toEqual([ids.rootCritical]);
    expect(await listIds(t.viewer, { type: 'overvoltage' })).toEqual([]);
    const range = { raisedAfter: new Date(T0 + 1000).toISOString(), raisedBefore: new Date(T0 + 3000).toISOString() };
    expect(await listIds(t.viewer, range)).toEqual([ids.childCleared, ids.childAcked]);
  });

  it('counts the filtered alarms in totalCount', async () => {
    const r = await f.ok(t.viewer, LIST, { first: 1, filter: { siteId: t.root } });
    expect(r.alarms.totalCount).toBe(4);
    expect(r.alarms.edges).toHaveLength(1);
    expect(r.alarms.pageInfo.hasNextPage).toBe(true);
  });

  it('counts active alarms per severity, org-wide and for a site subtree', async () => {
    expect((await f.ok(t.viewer, COUNTS, {})).alarmCounts).toEqual({
      active: 3,
      unacknowledged: 2,
      critical: 1,
      major: 1,
      minor: 0,
      warning: 1,
      indeterminate: 0,
    });
    expect((await f.ok(t.viewer, COUNTS, { siteId: t.child })).alarmCounts).toMatchObject({ active: 1, unacknowledged: 0, major: 1 });
    expect((await f.ok(t.viewer, COUNTS, { siteId: t.root })).alarmCounts).toMatchObject({ active: 2, critical: 1, major: 1 });
  });
});

describe('alarms subgraph: pagination', () => {
  it('pages newest first without duplicates or gaps, alarms raised at the same instant included', async () => {
    const t = await tenant();
    const same = new Date(Date.UTC(2026, 1, 1, 12, 0, 0, 123));
    const expected: string[] = [];
    for (let i = 0; i < 9; i++) {
      const raisedAt = i % 3 === 0 ? new Date(same.getTime() - i * 1000) : same;
      expected.push(await insertAlarm(t.orgId, t.devices[i % 4] as string, { raisedAt }));
    }
    const all = await listIds(t.viewer, {});
    expect([...all].sort()).toEqual([...expected].sort());
    const seen: string[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const r: { alarms: { edges: { node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } } = await f.ok(
        t.viewer,
        LIST,
        { first: 2, after },
      );
      seen.push(...r.alarms.edges.map((e) => e.node.id));
      if (!r.alarms.pageInfo.hasNextPage) break;
      after = r.alarms.pageInfo.endCursor;
    }
    expect(seen).toEqual(all);
  });

  it('refuses a cursor it did not make and a page size out of range', async () => {
    const t = await tenant();
    for (const after of ['garbage', encodeCursor(['yesterday', randomUUID()]), encodeCursor(['2026-01-01 00:00:00+00', 'x'])]) {
      expect(codes(await f.run(t.viewer, LIST, { after }))).toEqual(['BAD_USER_INPUT']);
    }
    expect(codes(await f.run(t.viewer, LIST, { first: 0 }))).toEqual(['BAD_USER_INPUT']);
    expect(codes(await f.run(t.viewer, LIST, { first: 501 }))).toEqual(['BAD_USER_INPUT']);
  });
});

describe('alarms subgraph: entities and batching', () => {
  let t: Tenant;
  beforeAll(async () => {
    t = await tenant();
  });

  const alarmQueries = () => f.t.queries.filter((q) => /^\s*select/i.test(q) && /\bfrom alarms\b/i.test(q));
  const eventQueries = () => f.t.queries.filter((q) => /^\s*select/i.test(q) && /\bfrom alarm_events\b/i.test(q));

  it('resolves the alarms of several devices with one query per field', async () => {
    const [d0, d1, d2] = t.devices as [string, string, string];
    const base = Date.UTC(2026, 2, 1);
    const a0 = await insertAlarm(t.orgId, d0, { raisedAt: new Date(base) });
    const a1 = await insertAlarm(t.orgId, d0, { raisedAt: new Date(base + 1000), cleared: true });
    const a2 = await insertAlarm(t.orgId, d0, { raisedAt: new Date(base + 2000) });
    const b0 = await insertAlarm(t.orgId, d1, { raisedAt: new Date(base), acknowledged: true });
    f.t.queries.length = 0;
    const r = await f.ok(t.viewer, ENTITIES, {
      r: [d0, d1, d2, 'not-a-uuid'].map((id) => ({ __typename: 'Device', id })),
    });
    expect(r._entities).toEqual([
      { id: d0, activeAlarmCount: 2, recent: [{ id: a2 }, { id: a1 }], open: [{ id: a2 }, { id: a0 }] },
      { id: d1, activeAlarmCount: 1, recent: [{ id: b0 }], open: [{ id: b0 }] },
      { id: d2, activeAlarmCount: 0, recent: [], open: [] },
      { id: 'not-a-uuid', activeAlarmCount: 0, recent: [], open: [] },
    ]);
    expect(alarmQueries()).toHaveLength(3);
  });

  it('resolves N alarm references and their history with one alarm query and one history query', async () => {
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push(await insertAlarm(t.orgId, t.devices[i % 4] as string));
    f.t.queries.length = 0;
    const r = await f.ok(t.viewer, ENTITIES, { r: ids.map((id) => ({ __typename: 'Alarm', id })) });
    expect(r._entities.map((e: { id: string }) => e.id)).toEqual(ids);
    expect(alarmQueries()).toHaveLength(1);
    expect(eventQueries()).toHaveLength(1);
  });

  it('answers alarmsByIds in the order asked, with null for unknown and foreign ids', async () => {
    const other = await tenant();
    const mine = await insertAlarm(t.orgId, t.devices[0] as string);
    const mine2 = await insertAlarm(t.orgId, t.devices[1] as string);
    const foreign = await insertAlarm(other.orgId, other.devices[0] as string);
    const unknown = randomUUID();
    f.t.queries.length = 0;
    const r = await f.ok(t.viewer, BY_IDS, { ids: [mine2, foreign, unknown, mine, mine2] });
    expect(r.alarmsByIds).toEqual([{ id: mine2 }, null, null, { id: mine }, { id: mine2 }]);
    expect(alarmQueries()).toHaveLength(1);
    expect(codes(await f.run(t.viewer, BY_IDS, { ids: [mine, 'nope'] }))).toEqual(['BAD_USER_INPUT']);
    const tooMany = Array.from({ length: 1001 }, () => randomUUID());
    expect(codes(await f.run(t.viewer, BY_IDS, { ids: tooMany }))).toEqual(['BAD_USER_INPUT']);
  });
});

describe('alarms subgraph: access', () => {
  let a: Tenant;
  let b: Tenant;
  let alarmA: string;
  beforeAll(async () => {
    a = await tenant();
    b = await tenant();
    alarmA = await insertAlarm(a.orgId, a.devices[0] as string);
  });

  it('lets viewers read but not act, and API keys only within their scopes', async () => {
    expect((await f.ok(a.viewer, ONE, { id: alarmA })).alarm.id).toBe(alarmA);
    expect(codes(await f.run(a.viewer, ACK, { id: alarmA }))).toEqual(['FORBIDDEN']);
    const reader = f.as(a.orgId, 'admin', 'apikey', ['alarms:read']);
    expect((await f.ok(reader, ONE, { id: alarmA })).alarm.id).toBe(alarmA);
    expect(codes(await f.run(reader, ACK, { id: alarmA }))).toEqual(['FORBIDDEN']);
    expect(codes(await f.run(f.as(a.orgId, 'admin', 'apikey', ['devices:read']), ONE, { id: alarmA }))).toEqual(['FORBIDDEN']);
    const writer = f.as(a.orgId, 'admin', 'apikey', ['alarms:write']);
    expect((await f.ok(writer, COMMENT, { id: alarmA, text: 'seen by integration' })).commentAlarm.id).toBe(alarmA);
  });

  it('refuses anonymous callers', async () => {
    expect(codes(await f.run(ANONYMOUS, ONE, { id: alarmA }))).toEqual(['UNAUTHENTICATED']);
    expect(codes(await f.run(ANONYMOUS, LIST, {}))).toEqual(['UNAUTHENTICATED']);
    expect(codes(await f.run(ANONYMOUS, CLEAR, { id: alarmA }))).toEqual(['UNAUTHENTICATED']);
  });

  it("never shows or changes another organization's alarms", async () => {
    const target = await insertAlarm(a.orgId, a.devices[1] as string);
    expect((await f.ok(b.operator, ONE, { id: target })).alarm).toBeNull();
    expect((await f.ok(b.operator, BY_IDS, { ids: [target] })).alarmsByIds).toEqual([null]);
    expect(await listIds(b.operator, {})).not.toContain(target);
    expect(await listIds(b.operator, { deviceId: a.devices[0], siteId: a.root })).toEqual([]);
    expect((await f.ok(b.operator, COUNTS, { siteId: a.root })).alarmCounts.active).toBe(0);
    const entities = await f.ok(b.operator, ENTITIES, {
      r: [
        { __typename: 'Alarm', id: target },
        { __typename: 'Device', id: a.devices[0] },
      ],
    });
    expect(entities._entities).toEqual([null, { id: a.devices[0], activeAlarmCount: 0, recent: [], open: [] }]);
    expect(codes(await f.run(b.operator, ACK, { id: target }))).toEqual(['NOT_FOUND']);
    expect(codes(await f.run(b.operator, CLEAR, { id: target }))).toEqual(['NOT_FOUND']);
    expect(codes(await f.run(b.operator, COMMENT, { id: target, text: 'hi' }))).toEqual(['NOT_FOUND']);
    const raise = await f.run(b.operator, RAISE, { input: { deviceId: a.devices[0], type: 'Intrusion', severity: 'MAJOR' } });
    expect(codes(raise)).toEqual(['NOT_FOUND']);
    expect(raise.errors?.[0]?.message).toBe('device not found');
    const status = (await f.ok(a.viewer, ONE, { id: target })).alarm;
    expect(status).toMatchObject({ status: 'ACTIVE_UNACK', history: [] });
  });

  it("lets row-level security alone hide another organization's alarms", async () => {
    await f.ok(a.operator, COMMENT, { id: alarmA, text: 'history of org A' });
    const own = await insertAlarm(b.orgId, b.devices[0] as string);
    const seen = await withTenant(f.t.db, b.orgId, async (tx) => {
      const alarms = await sql<{ id: string }>`select id from alarms`.execute(tx);
      const events = await sql<{ id: string }>`select id from alarm_events`.execute(tx);
      return { alarms: alarms.rows.map((r) => r.id), events: events.rows };
    });
    expect(seen).toEqual({ alarms: [own], events: [] });
  });
});

describe('alarms subgraph: input checks', () => {
  let t: Tenant;
  let id: string;
  beforeAll(async () => {
    t = await tenant();
    id = await insertAlarm(t.orgId, t.devices[0] as string);
  });

  it('refuses malformed ids, blank types, over-long texts and unknown severities', async () => {
    const deviceId = t.devices[0];
    const bad = async (query: string, vars: Record<string, unknown>) => codes(await f.run(t.operator, query, vars));
    expect(await bad(ONE, { id: 'abc' })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(ACK, { id: 'abc' })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(LIST, { filter: { deviceId: 'abc' } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(LIST, { filter: { siteId: 'abc' } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(COUNTS, { siteId: 'abc' })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(RAISE, { input: { deviceId: 'abc', type: 'X', severity: 'MAJOR' } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(RAISE, { input: { deviceId, type: '   ', severity: 'MAJOR' } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(RAISE, { input: { deviceId, type: 'x'.repeat(201), severity: 'MAJOR' } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(RAISE, { input: { deviceId, type: 'X', severity: 'MAJOR', message: 'm'.repeat(2001) } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(RAISE, { input: { deviceId, type: 'X', severity: 'HUGE' } })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(RAISE, { input: { deviceId: randomUUID(), type: 'X', severity: 'MAJOR' } })).toEqual(['NOT_FOUND']);
    expect(await bad(ACK, { id: randomUUID() })).toEqual(['NOT_FOUND']);
    expect(await bad(ACK, { id, note: 'n'.repeat(2001) })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(COMMENT, { id, text: '  ' })).toEqual(['BAD_USER_INPUT']);
    expect(await bad(COMMENT, { id, text: 't'.repeat(2001) })).toEqual(['BAD_USER_INPUT']);
    expect((await f.ok(t.viewer, ONE, { id })).alarm).toMatchObject({ status: 'ACTIVE_UNACK', history: [] });
  });
});

describe('alarms subgraph: real-time events', () => {
  let t: Tenant;
  let sub: Redis;
  const messages: string[] = [];
  let waiters: (() => void)[] = [];

  beforeAll(async () => {
    t = await tenant();
    sub = new Redis(REDIS_URL);
    sub.on('message', (_channel, m: string) => {
      messages.push(m);
      for (const w of waiters.splice(0)) w();
    });
    await sub.subscribe(eventsChannel(f.ctx.config.REDIS_PREFIX, t.orgId));
  });
  afterAll(async () => {
    await sub?.quit();
  });

  const next = async (): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + 5000;
    while (!messages.length) {
      if (Date.now() > deadline) throw new Error('no event published');
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
    waiters = [];
    return JSON.parse(messages.shift() as string);
  };

  it('publishes acknowledge with its device, site path and severity, and nothing for a repeat', async () => {
    const device = t.devices[1] as string;
    const id = await insertAlarm(t.orgId, device, { severity: 'critical' });
    await f.ok(t.operator, ACK, { id });
    const e = await next();
    expect(e).toMatchObject({
      field: 'alarmChanged',
      orgId: t.orgId,
      filter: { deviceId: device, siteId: t.child, sitePath: [t.root, t.child], severity: 'CRITICAL' },
      data: { kind: 'ACKNOWLEDGED', alarm: { id } },
    });

    await f.ok(t.operator, ACK, { id });
    await f.ok(t.operator, COMMENT, { id, text: 'after the repeat' });
    expect(await next()).toMatchObject({ data: { kind: 'COMMENTED', alarm: { id } } });
    expect(messages).toEqual([]);
  });

  it('commits the change even when the event cannot be published', async () => {
    const broken = Object.create(f.ctx, {
      redis: { get: () => ({ publish: () => Promise.reject(new Error('redis is down')) }) },
    }) as typeof f.ctx;
    const mod = createAlarmsSubgraph(broken);
    const id = await insertAlarm(t.orgId, t.devices[0] as string);
    const r = await executeSubgraph(mod, parse(CLEAR), { id }, undefined, t.operator, false);
    expect(r.errors).toBeUndefined();
    expect((await f.ok(t.viewer, ONE, { id })).alarm.status).toBe('CLEARED_UNACK');
  });

  it('publishes a raise once, not for a further occurrence, and a clear', async () => {
    const deviceId = t.devices[3] as string;
    const input = { deviceId, type: 'Tamper', severity: 'WARNING' };
    const { id } = (await f.ok(t.operator, RAISE, { input })).raiseAlarm;
    expect(await next()).toMatchObject({
      filter: { deviceId, siteId: null, sitePath: [], severity: 'WARNING' },
      data: { kind: 'RAISED', alarm: { id } },
    });
    await f.ok(t.operator, RAISE, { input });
    await f.ok(t.operator, CLEAR, { id });
    expect(await next()).toMatchObject({ data: { kind: 'CLEARED', alarm: { id } } });
    expect(messages).toEqual([]);
  });
});
