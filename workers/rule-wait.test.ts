import { randomBytes, randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { channelSecretKey } from '../lib/contracts/channel-secret.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { NOTIFY_QUEUE, parseNotificationRequest } from '../lib/contracts/notifications.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { createLogger } from '../lib/logger.js';
import { LogMailSender } from '../lib/mail.js';
import { registry } from '../lib/metrics.js';
import { seedCity } from '../test/support/city.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { Notifier } from './notifier.js';
import { RuleEvaluator } from './rule-eval.js';
import { RuleTimers } from './rule-wait.js';

let t: TestDatabase;
let redis: Redis;
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
const _label = (id: string) => id.replaceAll('-', '_');
const logger = createLogger('silent');
const evaluator = () => new RuleEvaluator({ db: t.db, redis, redisUrl: REDIS_URL, prefix, logger });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An organization with `devices` lamps on one site. */
async function org(devices = 2) {
  const c = await seedCity(t.db, { lamps: devices });
  return { orgId: c.orgId, site: c.siteId, d: c.lamps };
}

async function rule(orgId: string, r: Record<string, unknown>) {
  const row = await t.db
    .insertInto('rules')
    .values({
      org_id: orgId,
      name: `r-${randomBytes(3).toString('hex')}`,
      metric: 'power',
      severity: 'major',
      alarm_type: 'Dark lamp',
      created_by: 'test',
      ...r,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

const job = (orgId: string, readings: { deviceId: string; metric: string; ts: number; value: number }[]) => ({ orgId, readings });
const alarms = (orgId: string) =>
  t.db
    .selectFrom('alarms')
    .select(['device_id', 'type', 'cleared_at', 'message', 'occurrences'])
    .where('org_id', '=', orgId)
    .orderBy('raised_at')
    .execute();
const firings = (orgId: string) =>
  t.db.selectFrom('rule_timer_firings').select(['device_id', 'action', 'outcome']).where('org_id', '=', orgId).execute();

describe('rules that wait', () => {
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

  it('raise a duration alarm from the durable timer with no further message, even after the evaluating process is gone', async () => {
    const o = await org();
    await rule(o.orgId, { kind: 'expression', expression: 'power < 5 and lampState == 1', for_seconds: 1 });
    const sub = new Redis(REDIS_URL);
    const seen: string[] = [];
    await sub.subscribe(eventsChannel(prefix, o.orgId));
    sub.on('message', (_c, m: string) => seen.push(JSON.parse(m).data.kind));
    const now = Date.now();
    // lampState and power arrive in different jobs: the state keeps each metric's latest
    await evaluator().evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'lampState', ts: now, value: 1 }]));
    const first = evaluator();
    await first.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'power', ts: now + 1, value: 2 }]));
    await first.close();
    expect(await alarms(o.orgId)).toEqual([]);
    const state = await t.db.selectFrom('rule_device_state').select(['due_at', 'due_action']).where('org_id', '=', o.orgId).execute();
    expect(state).toEqual([{ due_at: new Date(now + 1 + 1000), due_action: 'raise' }]);

    // a fresh process (its timer loop) finds the stored timer and fires it when it comes due
    const timers = new RuleTimers({ wait: evaluator().wait, logger, tickMs: 100 }).start();
    for (let i = 0; i < 60 && !(await alarms(o.orgId)).length; i++) await sleep(100);
    await timers.close();
    const raised = await alarms(o.orgId);
    expect(raised).toMatchObject([
      { device_id: o.d[0], type: 'Dark lamp', cleared_at: null, message: 'power < 5 and lampState == 1 for 1 s' },
    ]);
    expect(await firings(o.orgId)).toEqual([{ device_id: o.d[0], action: 'raise', outcome: 'raised' }]);
    for (let i = 0; i < 20 && !seen.length; i++) await sleep(50);
    expect(seen).toEqual(['RAISED']);

    // the condition breaks: the alarm clears
    await evaluator().evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'power', ts: now + 5000, value: 80 }]));
    expect((await alarms(o.orgId))[0]?.cleared_at).not.toBeNull();
    sub.disconnect();
  });

  it('cancel a duration timer when the condition breaks before it comes due', async () => {
    const o = await org();
    await rule(o.orgId, { operator: 'lt', threshold: 5, for_seconds: 1 });
    const ev = evaluator();
    const now = Date.now();
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'power', ts: now, value: 1 }]));
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'power', ts: now + 500, value: 100 }]));
    await sleep(1200);
    const timers = new RuleTimers({ wait: ev.wait, logger });
    expect(await timers.tick()).toBe(0);
    expect(await alarms(o.orgId)).toEqual([]);
  });

  it('raise a no-data alarm for a silent device, and clear it with the next reading', async () => {
    const o = await org(2);
    const id = await rule(o.orgId, { kind: 'no_data', operator: null, threshold: null, no_data_seconds: 60, alarm_type: 'Silent' });
    // the rule was written 59.5 s ago (a controlled clock would do the same): its silence timers come due in half a second
    await sql`update rules set updated_at = now() - interval '59.5 seconds' where id = ${id}`.execute(t.db);
    await sql`update devices set created_at = now() - interval '1 day' where org_id = ${o.orgId}`.execute(t.db);
    const ev = evaluator();
    const timers = new RuleTimers({ wait: ev.wait, logger, seedMs: 0 });
    await timers.tick();
    // device 1 reports now: its timer restarts from arrival
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[1] as string, metric: 'power', ts: Date.now(), value: 40 }]));
    await sleep(700);
    await timers.tick();
    const a = await alarms(o.orgId);
    expect(a.map((x) => [x.device_id, x.type, x.message, x.cleared_at])).toEqual([[o.d[0], 'Silent', 'no power reading for 1 min', null]]);
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'power', ts: Date.now(), value: 40 }]));
    expect((await alarms(o.orgId))[0]?.cleared_at).not.toBeNull();
    const due = await t.db.selectFrom('rule_device_state').select(['device_id', 'due_at']).where('rule_id', '=', id).execute();
    for (const d of due) expect(d.due_at?.getTime()).toBeGreaterThan(Date.now() + 50_000);
  });

  it('seed NO_DATA timers of new rules on the short pass, and of everything on the full pass', async () => {
    const o = await org(2);
    const old = await rule(o.orgId, { kind: 'no_data', operator: null, threshold: null, no_data_seconds: 600, alarm_type: 'Quiet A' });
    await sql`update rules set updated_at = now() - interval '1 hour' where id = ${old}`.execute(t.db);
    await sql`update devices set created_at = now() - interval '1 day' where org_id = ${o.orgId}`.execute(t.db);
    const ev = evaluator();
    const states = async (ruleId: string) =>
      (await t.db.selectFrom('rule_device_state').select('device_id').where('rule_id', '=', ruleId).execute()).length;
    const timers = new RuleTimers({ wait: ev.wait, logger, seedMs: 0, fullSeedMs: 3_600_000 });
    await timers.tick(); // the first pass is a full one
    expect(await states(old)).toBe(2);
    // a state lost for an old rule (as for a device moved into its scope) waits for the full pass; a new rule does not
    await sql`delete from rule_device_state where rule_id = ${old} and device_id = ${o.d[0]}`.execute(t.db);
    const fresh = await rule(o.orgId, { kind: 'no_data', operator: null, threshold: null, no_data_seconds: 600, alarm_type: 'Quiet B' });
    await timers.tick();
    expect([await states(old), await states(fresh)]).toEqual([1, 2]);
    await new RuleTimers({ wait: ev.wait, logger, seedMs: 0 }).tick();
    expect(await states(old)).toBe(2);
  });

  it('raise a repeating alarm on the third breach in the window, and clear it once a window passes without one', async () => {
    const o = await org();
    await rule(o.orgId, { metric: 'voltage', operator: 'gt', threshold: 253, repeat_count: 3, window_seconds: 1, alarm_type: 'Surges' });
    const ev = evaluator();
    const now = Date.now();
    const r = (dt: number, v: number) => ({ deviceId: o.d[0] as string, metric: 'voltage', ts: now + dt, value: v });
    await ev.evaluate(job(o.orgId, [r(0, 260), r(100, 200), r(200, 261)]));
    expect(await alarms(o.orgId)).toEqual([]);
    await ev.evaluate(job(o.orgId, [r(300, 262)]));
    expect(await alarms(o.orgId)).toMatchObject([{ type: 'Surges', message: 'voltage > 253: 3 times in 1 s', cleared_at: null }]);
    await ev.evaluate(job(o.orgId, [r(400, 263)]));
    expect((await alarms(o.orgId))[0]?.occurrences).toBe(2);
    await sleep(1600);
    await new RuleTimers({ wait: ev.wait, logger }).tick();
    expect((await alarms(o.orgId))[0]?.cleared_at).not.toBeNull();
    expect(await firings(o.orgId)).toEqual([{ device_id: o.d[0], action: 'clear', outcome: 'cleared' }]);
  });

  it('let the most severe of the rules sharing an alarm type decide, whatever their ids', async () => {
    const o = await org();
    const shared = { metric: 'voltage', operator: 'gt', threshold: 253, repeat_count: 2, window_seconds: 60, alarm_type: 'Surges' };
    // the minor rule has the smaller id: the order rows are locked in must not pick it
    await rule(o.orgId, { ...shared, id: `00000000${randomUUID().slice(8)}`, severity: 'minor' });
    await rule(o.orgId, { ...shared, id: `ffffffff${randomUUID().slice(8)}`, severity: 'critical' });
    const now = Date.now();
    const r = (dt: number) => ({ deviceId: o.d[0] as string, metric: 'voltage', ts: now + dt, value: 260 + dt / 100 });
    await evaluator().evaluate(job(o.orgId, [r(0), r(100)]));
    const raised = await t.db.selectFrom('alarms').select(['type', 'severity']).where('org_id', '=', o.orgId).execute();
    expect(raised).toEqual([{ type: 'Surges', severity: 'critical' }]);
  });

  it('resume from PostgreSQL after a restart: the states a process kept in memory were written back', async () => {
    const o = await org();
    await rule(o.orgId, { metric: 'voltage', operator: 'gt', threshold: 253, repeat_count: 3, window_seconds: 60, alarm_type: 'Surges' });
    await rule(o.orgId, { operator: 'lt', threshold: 5, for_seconds: 600, alarm_type: 'Dark lamp' });
    const now = Date.now();
    const d = o.d[0] as string;
    const before = evaluator();
    // two breaches and the start of a duration, held in the first process's memory between jobs
    await before.evaluate(job(o.orgId, [{ deviceId: d, metric: 'voltage', ts: now, value: 260 }]));
    await before.evaluate(
      job(o.orgId, [
        { deviceId: d, metric: 'voltage', ts: now + 1000, value: 261 },
        { deviceId: d, metric: 'power', ts: now + 1000, value: 1 },
      ]),
    );
    await before.close();
    // a new process knows nothing in memory: the third breach raises, and the duration counts from its stored start
    const after = evaluator();
    await after.evaluate(job(o.orgId, [{ deviceId: d, metric: 'voltage', ts: now + 2000, value: 262 }]));
    expect(await alarms(o.orgId)).toMatchObject([{ type: 'Surges', cleared_at: null }]);
    await after.evaluate(job(o.orgId, [{ deviceId: d, metric: 'power', ts: now + 601_000, value: 2 }]));
    expect((await alarms(o.orgId)).map((a) => a.type)).toEqual(['Surges', 'Dark lamp']);
    await after.close();
  });

  it('never step from a stale memory copy when another process changed the state since (version check)', async () => {
    const o = await org();
    await rule(o.orgId, { metric: 'voltage', operator: 'gt', threshold: 253, repeat_count: 3, window_seconds: 60, alarm_type: 'Surges' });
    const now = Date.now();
    const d = o.d[0] as string;
    const a = evaluator();
    const b = evaluator();
    const surge = (dt: number) => job(o.orgId, [{ deviceId: d, metric: 'voltage', ts: now + dt, value: 260 + dt / 1000 }]);
    await a.evaluate(surge(0)); // a holds the state with one hit
    await b.evaluate(surge(1000)); // b reads it from PostgreSQL and adds the second: a's copy is stale now
    expect(await alarms(o.orgId)).toEqual([]);
    await a.evaluate(surge(2000)); // a finds its copy outdated, reads the row again: three hits, raise
    expect(await alarms(o.orgId)).toMatchObject([{ type: 'Surges', cleared_at: null, occurrences: 1 }]);
    const [row] = await t.db.selectFrom('rule_device_state').select(['state', 'version']).where('org_id', '=', o.orgId).execute();
    expect((row?.state as { hits: number[] } | undefined)?.hits).toEqual([now, now + 1000, now + 2000]);
    // any write moves the version (the trigger of migration 0052), the timer sweep's included
    await b.evaluate(surge(3000));
    await sql`update rule_device_state set due_at = now() - interval '1 second', due_action = 'clear' where org_id = ${o.orgId}`.execute(
      t.db,
    );
    const [moved] = await t.db.selectFrom('rule_device_state').select('version').where('org_id', '=', o.orgId).execute();
    expect(Number(moved?.version)).toBeGreaterThan(Number(row?.version));
    await a.close();
    await b.close();
  });

  it('raise a rate-of-change alarm from two readings', async () => {
    const o = await org();
    await rule(o.orgId, { kind: 'expression', expression: 'rate(temperature) > 10', metric: 'temperature', alarm_type: 'Heating fast' });
    const ev = evaluator();
    const now = Date.now();
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'temperature', ts: now, value: 20 }]));
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'temperature', ts: now + 30_000, value: 26 }]));
    expect(await alarms(o.orgId)).toMatchObject([{ type: 'Heating fast', cleared_at: null }]);
  });

  it('queue one notify request per alarm change of a rule with a notify action, from a reading and from a timer, from the committed alarm events (nothing runs after commit)', async () => {
    const o = await org();
    const notify = JSON.stringify({ rules: true, roles: ['operator'], userIds: [], templateKey: null, onClear: true });
    const dark = await rule(o.orgId, { operator: 'lt', threshold: 5, for_seconds: 1, notify });
    const over = await rule(o.orgId, { metric: 'voltage', operator: 'gt', threshold: 253, alarm_type: 'Over', notify });
    const ev = evaluator();
    const now = Date.now();
    await ev.evaluate(
      job(o.orgId, [
        { deviceId: o.d[0] as string, metric: 'voltage', ts: now, value: 260 },
        { deviceId: o.d[1] as string, metric: 'power', ts: now, value: 1 },
      ]),
    );
    await sleep(1100);
    await new RuleTimers({ wait: ev.wait, logger }).tick();
    // a retried evaluation of the same readings adds nothing
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'voltage', ts: now, value: 260 }]));
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[1] as string, metric: 'power', ts: now + 2000, value: 90 }]));
    await ev.close();
    const q = new Queue(NOTIFY_QUEUE, { connection: redis, prefix: queuePrefix(prefix) });
    const mine = async () =>
      (await q.getJobs(['waiting', 'delayed', 'prioritized']))
        .map((j) => parseNotificationRequest(j.data))
        .filter((j) => j.orgId === o.orgId && j.source.kind === 'rule');
    // the evaluator enqueued nothing itself: a process killed after its commit loses no request
    expect(await mine()).toEqual([]);
    // the notifier's alarm feed (started later, as after a crash) turns the committed events into requests, twice = once
    for (let pass = 0; pass < 2; pass++) {
      const feed = new Notifier({
        db: t.db,
        redisUrl: REDIS_URL,
        prefix,
        logger,
        mail: new LogMailSender(logger),
        channelSecretKey: channelSecretKey('test-secret-0123456789abcdef'),
        feedGapMs: 0,
      });
      while ((await feed.readFeed()) > 0) {}
      await feed.close();
      await sql`update notification_feed set last_id = 0 where name = 'alarm_events'`.execute(t.db);
    }
    expect((await mine()).map((j) => [j.source.id, j.variables.change, j.variables.deviceId, j.siteId]).sort()).toEqual(
      [
        [dark, 'cleared', o.d[1], o.site],
        [dark, 'raised', o.d[1], o.site],
        [over, 'raised', o.d[0], o.site],
      ].sort(),
    );
    await q.close();
  });

  it('refuse a stored notify action that does not read (counted), and still queue the alarm’s own notification', async () => {
    const o = await org();
    // a value the API would refuse (an unknown role), written past it
    await rule(o.orgId, {
      metric: 'voltage',
      operator: 'gt',
      threshold: 253,
      alarm_type: 'Broken notify',
      notify: JSON.stringify({ roles: ['root'] }),
    });
    const invalid = async () => (await registry.getSingleMetric('rulr_rule_notify_invalid_total')?.get())?.values[0]?.value ?? 0;
    const before = await invalid();
    const ev = evaluator();
    await ev.evaluate(job(o.orgId, [{ deviceId: o.d[0] as string, metric: 'voltage', ts: Date.now(), value: 260 }]));
    await ev.close();
    await sql`update notification_feed set last_id = 0 where name = 'alarm_events'`.execute(t.db);
    const feed = new Notifier({
      db: t.db,
      redisUrl: REDIS_URL,
      prefix,
      logger,
      mail: new LogMailSender(logger),
      channelSecretKey: channelSecretKey('test-secret-0123456789abcdef'),
      feedGapMs: 0,
    });
    while ((await feed.readFeed()) > 0) {}
    await feed.close();
    const q = new Queue(NOTIFY_QUEUE, { connection: redis, prefix: queuePrefix(prefix) });
    const mine = (await q.getJobs(['waiting', 'delayed', 'prioritized']))
      .map((j) => parseNotificationRequest(j.data))
      .filter((j) => j.orgId === o.orgId);
    await q.close();
    expect(mine.map((j) => [j.source.kind, j.event])).toEqual([['alarm', 'alarm.raised']]);
    expect(await invalid()).toBe(before + 1);
  });

  it('keep another organization’s timers and states apart', async () => {
    const a = await org();
    const b = await org();
    await rule(a.orgId, { operator: 'lt', threshold: 5, for_seconds: 1 });
    // b's device in a's job is not a's: nothing is stored for it
    await evaluator().evaluate(job(a.orgId, [{ deviceId: b.d[0] as string, metric: 'power', ts: Date.now(), value: 1 }]));
    expect(
      await t.db
        .selectFrom('rule_device_state')
        .select('device_id')
        .where('device_id', '=', b.d[0] as string)
        .execute(),
    ).toEqual([]);
  });
});
