import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsChannel } from '../lib/contracts/events.js';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import { createLogger } from '../lib/logger.js';
import { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import { RuleEvaluator } from '../workers/rule-eval.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';
import { REDIS_URL } from './support/env.js';

// Alarms, finished (issue 14 item 9): a site's counts and alarms include every site below it,
// assignAlarm, and UPDATED changes for count and severity changes.

let f: SubgraphFixture<ReturnType<typeof createAlarmsSubgraph>>;
const label = (id: string) => id.replaceAll('-', '_');

beforeAll(async () => {
  f = await subgraphFixture(createAlarmsSubgraph);
});
afterAll(async () => {
  await f?.close();
});

/** A district with two streets, a device in each street and one in the district itself. */
async function city() {
  const orgId = await f.org();
  const [district, s1, s2] = [randomUUID(), randomUUID(), randomUUID()];
  await sql`insert into sites (id, org_id, parent_id, name, path) values
    (${district}, ${orgId}, null, 'District', ${label(district)}::ltree),
    (${s1}, ${orgId}, ${district}, 'Street 1', ${`${label(district)}.${label(s1)}`}::ltree),
    (${s2}, ${orgId}, ${district}, 'Street 2', ${`${label(district)}.${label(s2)}`}::ltree)`.execute(f.t.db);
  const devices = [district, s1, s2].map(() => randomUUID());
  for (const [i, site] of [district, s1, s2].entries()) {
    await sql`insert into devices (id, org_id, serial, name, site_id) values (${devices[i]}, ${orgId}, ${`SN-${randomUUID()}`}, 'd', ${site})`.execute(
      f.t.db,
    );
  }
  return { orgId, district, s1, s2, devices: devices as [string, string, string] };
}
const alarm = async (orgId: string, deviceId: string, severity = 'major') => {
  const { rows } = await sql<{ id: string }>`insert into alarms (org_id, device_id, type, severity, raised_by)
    values (${orgId}, ${deviceId}, ${`T-${randomUUID()}`}, ${severity}, 'system:test') returning id`.execute(f.t.db);
  return (rows[0] as { id: string }).id;
};

const SITES = `query($r: [_Any!]!) { _entities(representations: $r) { ... on Site { id alarmCounts { active critical major } alarms { id } } } }`;
const ASSIGN = `mutation($id: ID!, $to: ID, $note: String) { assignAlarm(id: $id, assigneeId: $to, note: $note) { id assignedTo assignedAt history { kind note } } }`;

describe('site ancestors', () => {
  it('count and list a street’s alarms on its district, not on its sibling street', async () => {
    const c = await city();
    const a1 = await alarm(c.orgId, c.devices[1], 'critical');
    const a2 = await alarm(c.orgId, c.devices[2]);
    const a0 = await alarm(c.orgId, c.devices[0]);
    const r = await f.ok<{ _entities: { id: string; alarmCounts: Record<string, number>; alarms: { id: string }[] }[] }>(
      f.as(c.orgId, 'viewer'),
      SITES,
      {
        r: [c.district, c.s1, c.s2].map((id) => ({ __typename: 'Site', id })),
      },
    );
    const [d, s1, s2] = r._entities;
    expect(d?.alarmCounts).toEqual({ active: 3, critical: 1, major: 2 });
    expect(new Set(d?.alarms.map((a) => a.id))).toEqual(new Set([a0, a1, a2]));
    expect(s1?.alarmCounts).toEqual({ active: 1, critical: 1, major: 0 });
    expect(s2?.alarms.map((a) => a.id)).toEqual([a2]);
  });

  it('show another organization nothing of a site', async () => {
    const c = await city();
    await alarm(c.orgId, c.devices[1]);
    const other = f.as(await f.org(), 'admin');
    const r = await f.ok<{ _entities: { alarmCounts: { active: number }; alarms: unknown[] }[] }>(other, SITES, {
      r: [{ __typename: 'Site', id: c.district }],
    });
    expect(r._entities[0]).toMatchObject({ alarmCounts: { active: 0 }, alarms: [] });
  });
});

describe('assignAlarm', () => {
  it('assigns to a member with history, audit and an ASSIGNED event; repeating changes nothing; null unassigns', async () => {
    const c = await city();
    const id = await alarm(c.orgId, c.devices[1]);
    const member = await f.user(c.orgId, 'operator');
    const sub = new Redis(REDIS_URL);
    const kinds: string[] = [];
    await sub.subscribe(eventsChannel(f.ctx.config.REDIS_PREFIX, c.orgId));
    sub.on('message', (_c, m: string) => kinds.push(JSON.parse(m).data.kind));
    const op = f.as(c.orgId, 'operator');
    const a = await f.ok<{ assignAlarm: { assignedTo: string; assignedAt: string; history: { kind: string; note: string }[] } }>(
      op,
      ASSIGN,
      {
        id,
        to: member.id,
        note: 'please check the feeder',
      },
    );
    expect(a.assignAlarm).toMatchObject({
      assignedTo: `user:${member.id}`,
      history: [{ kind: 'ASSIGNED', note: 'please check the feeder' }],
    });
    await f.ok(op, ASSIGN, { id, to: member.id });
    const b = await f.ok<{ assignAlarm: { assignedTo: string | null; history: unknown[] } }>(op, ASSIGN, { id, to: null });
    expect(b.assignAlarm.assignedTo).toBeNull();
    expect(b.assignAlarm.history).toHaveLength(2);
    const audits = await f.t.db.selectFrom('audit_logs').select('action').where('entity_id', '=', id).execute();
    expect(audits.map((x) => x.action)).toEqual(['alarm.assign', 'alarm.assign']);
    for (let i = 0; i < 40 && kinds.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    expect(kinds).toEqual(['ASSIGNED', 'ASSIGNED']);
    sub.disconnect();
  });

  it('refuses a non-member assignee, a viewer, and another organization’s alarm', async () => {
    const c = await city();
    const id = await alarm(c.orgId, c.devices[1]);
    const otherOrg = await f.org();
    const stranger = await f.user(otherOrg, 'admin');
    const op = f.as(c.orgId, 'operator');
    const r = await f.run(op, ASSIGN, { id, to: stranger.id });
    expect(codes(r)).toEqual(['BAD_USER_INPUT']);
    expect(r.errors?.[0]?.extensions?.field).toBe('assigneeId');
    expect(codes(await f.run(f.as(c.orgId, 'viewer'), ASSIGN, { id, to: null }))).toEqual(['FORBIDDEN']);
    expect(codes(await f.run(f.as(otherOrg, 'admin'), ASSIGN, { id, to: stranger.id }))).toEqual(['NOT_FOUND']);
  });
});

describe('UPDATED changes', () => {
  it('publish UPDATED when a rule sees its breach again, and record a severity change in the history', async () => {
    const c = await city();
    const prefix = f.ctx.config.REDIS_PREFIX;
    const redis = new Redis(REDIS_URL);
    const ev = new RuleEvaluator({ db: f.t.db, redis, redisUrl: REDIS_URL, prefix, logger: createLogger('silent') });
    const rule = await f.t.db
      .insertInto('rules')
      .values({
        org_id: c.orgId,
        name: `r-${randomBytes(3).toString('hex')}`,
        metric: 'v',
        operator: 'gt',
        threshold: 250,
        severity: 'minor',
        alarm_type: 'Over',
        created_by: 't',
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const sub = new Redis(REDIS_URL);
    const kinds: string[] = [];
    await sub.subscribe(eventsChannel(prefix, c.orgId));
    sub.on('message', (_c, m: string) => kinds.push(JSON.parse(m).data.kind));
    const now = Date.now();
    const reading = (dt: number, value: number) => ({
      orgId: c.orgId,
      readings: [{ deviceId: c.devices[1], metric: 'v', ts: now + dt, value }],
    });
    await ev.evaluate(reading(0, 260));
    await ev.evaluate(reading(1, 261));
    await f.t.db.updateTable('rules').set({ severity: 'critical' }).where('id', '=', rule.id).execute();
    await redis.incr(rulesVersionKey(prefix, c.orgId));
    await ev.evaluate(reading(2, 262));
    for (let i = 0; i < 40 && kinds.length < 3; i++) await new Promise((r) => setTimeout(r, 50));
    expect(kinds).toEqual(['RAISED', 'UPDATED', 'UPDATED']);
    const a = await f.t.db
      .selectFrom('alarms')
      .select(['id', 'severity', 'occurrences'])
      .where('org_id', '=', c.orgId)
      .executeTakeFirstOrThrow();
    expect(a).toMatchObject({ severity: 'critical', occurrences: 3 });
    const history = await f.t.db.selectFrom('alarm_events').select(['kind', 'note']).where('alarm_id', '=', a.id).orderBy('id').execute();
    expect(history.map((h) => h.kind)).toEqual(['raised', 'updated']);
    sub.disconnect();
    redis.disconnect();
    await ev.close();
  });
});
