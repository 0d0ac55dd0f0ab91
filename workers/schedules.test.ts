import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import { createLogger } from '../lib/logger.js';
import { seedOrg } from '../test/support/city.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { ScheduleRunner } from './schedules.js';

let t: TestDatabase;
let redis: Redis;
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
const runner = () => new ScheduleRunner({ db: t.db, redis, prefix, logger: createLogger('silent') });

const org = () => seedOrg(t.db);

async function schedule(orgId: string, action: unknown, nextAt: string, cron = '*/5 * * * *') {
  const s = await t.db
    .insertInto('schedules')
    .values({
      org_id: orgId,
      name: `s-${randomBytes(3).toString('hex')}`,
      cron,
      time_zone: 'Europe/Amsterdam',
      action: JSON.stringify(action),
      next_at: sql<Date>`${sql.raw(nextAt)}`,
      created_by: 't',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return s.id;
}
const runs = (id: string) =>
  t.db.selectFrom('schedule_runs').select(['status', 'result', 'error', 'occurrence']).where('schedule_id', '=', id).execute();
const next = async (id: string) =>
  (await t.db.selectFrom('schedules').select('next_at').where('id', '=', id).executeTakeFirstOrThrow()).next_at;

describe('the schedule runner', () => {
  beforeAll(async () => {
    t = await createTestDatabase();
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await t.drop();
  });

  it('disables and enables a rule at its occurrences, audits it as the schedule and tells evaluators', async () => {
    const orgId = await org();
    const rule = await t.db
      .insertInto('rules')
      .values({ org_id: orgId, name: 'r', metric: 'v', operator: 'gt', threshold: 1, severity: 'major', alarm_type: 'T', created_by: 't' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const id = await schedule(orgId, { kind: 'disable_rule', ruleId: rule.id }, "date_trunc('minute', now())");
    expect(await runner().tick()).toBe(1);
    expect((await t.db.selectFrom('rules').select('enabled').where('id', '=', rule.id).executeTakeFirstOrThrow()).enabled).toBe(false);
    expect(await runs(id)).toMatchObject([{ status: 'succeeded', result: { ruleId: rule.id, enabled: false, changed: true } }]);
    const audit = await t.db.selectFrom('audit_logs').select(['actor', 'action']).where('entity_id', '=', rule.id).execute();
    expect(audit).toEqual([{ actor: `schedule:${id}`, action: 'rule.update' }]);
    expect(Number(await redis.get(rulesVersionKey(prefix, orgId)))).toBe(1);
    // the next occurrence is the next five-minute mark after the one that ran
    const n = (await next(id)) as Date;
    expect(n.getTime() % 300_000).toBe(0);
    expect(n.getTime()).toBeGreaterThan(Date.now() - 1000);
    expect(await runner().tick()).toBe(0);
  });

  it('records an alarm report of the organization', async () => {
    const orgId = await org();
    const dev = await t.db
      .insertInto('devices')
      .values({ org_id: orgId, serial: 'S', name: 'd' })
      .returning('id')
      .executeTakeFirstOrThrow();
    await t.db.insertInto('alarms').values({ org_id: orgId, device_id: dev.id, type: 'A', severity: 'critical', raised_by: 't' }).execute();
    const id = await schedule(orgId, { kind: 'alarm_report', siteId: null }, 'now()');
    await runner().tick();
    expect((await runs(id))[0]).toMatchObject({
      status: 'succeeded',
      result: { active: 1, unacknowledged: 1, bySeverity: { critical: 1 } },
    });
  });

  it('skips an occurrence missed while no workers ran, once, and moves on to the next one after now', async () => {
    const orgId = await org();
    const id = await schedule(orgId, { kind: 'alarm_report', siteId: null }, "date_trunc('minute', now()) - interval '2 hours'");
    expect(await runner().tick()).toBe(1);
    expect(await runs(id)).toMatchObject([{ status: 'skipped', error: 'missed: no workers process ran at the time' }]);
    expect(((await next(id)) as Date).getTime()).toBeGreaterThan(Date.now());
  });

  it('records a corrupt action as failed and keeps the schedule going', async () => {
    const orgId = await org();
    const id = await schedule(orgId, { kind: 'reboot_everything' }, 'now()');
    await runner().tick();
    expect((await runs(id))[0]).toMatchObject({ status: 'failed', error: expect.stringContaining('invalid schedule action') });
    expect(((await next(id)) as Date).getTime()).toBeGreaterThan(Date.now());
  });
});
