import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../lib/logger.js';
import { RuleEvaluator } from '../workers/rule-eval.js';
import { seedCity } from './support/city.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// Durable rule timers and cron schedules with two real workers processes (workers/testing/run-rule-timers.ts):
// whichever process claims a due timer or occurrence, it fires once, and a process SIGKILLed while it
// holds a claim leaves it to the other.

const _label = (id: string) => id.replaceAll('-', '_');
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
let t: TestDatabase;
let redis: Redis;
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function worker(env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/testing/run-rule-timers.ts'], {
    env: { ...process.env, DATABASE_URL: t.url, REDIS_URL, REDIS_PREFIX: prefix, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => lines.push(`stderr ${d}`));
  const waitFor = async (re: RegExp, ms = 30_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const hit = lines.find((l) => re.test(l));
      if (hit) return hit;
      await sleep(50);
    }
    throw new Error(`no line matching ${re} in: ${lines.slice(-5).join(' | ')}`);
  };
  const ticks = () => lines.filter((l) => l.startsWith('tick')).length;
  const moreTicks = async (n: number) => {
    const target = ticks() + n;
    const end = Date.now() + 30_000;
    while (ticks() < target && Date.now() < end) await sleep(50);
  };
  return { child, lines, waitFor, moreTicks };
}

async function org(devices: number) {
  const c = await seedCity(t.db, { lamps: devices });
  return { orgId: c.orgId, d: c.lamps };
}

/** A duration rule whose timers, one per device, come due within a second with no further reading. */
async function dueTimers(devices: number) {
  const o = await org(devices);
  await t.db
    .insertInto('rules')
    .values({
      org_id: o.orgId,
      name: 'Dark',
      metric: 'power',
      operator: 'lt',
      threshold: 5,
      for_seconds: 1,
      severity: 'major',
      alarm_type: 'Dark',
      created_by: 'test',
    })
    .execute();
  const ev = new RuleEvaluator({ db: t.db, redis, redisUrl: REDIS_URL, prefix, logger: createLogger('silent') });
  await ev.evaluate({ orgId: o.orgId, readings: o.d.map((deviceId) => ({ deviceId, metric: 'power', ts: Date.now(), value: 1 })) });
  await ev.close();
  await sleep(1100);
  return o;
}

async function schedule(orgId: string) {
  const s = await t.db
    .insertInto('schedules')
    .values({
      org_id: orgId,
      name: 'report',
      // once a year: the test never crosses into a second (legitimate) occurrence
      cron: '0 0 1 1 *',
      time_zone: 'UTC',
      action: JSON.stringify({ kind: 'alarm_report', siteId: null }),
      next_at: sql<Date>`date_trunc('minute', now())`,
      created_by: 'test',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return s.id;
}

describe('rule timers and schedules with two workers processes', () => {
  beforeAll(async () => {
    t = await createTestDatabase();
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await t.drop();
  });

  it('fire each timer and each occurrence once when one process is SIGKILLed holding the claim and the other takes over', async () => {
    const o = await dueTimers(30);
    const scheduleId = await schedule(o.orgId);
    const a = worker({ HOLD_MS: '600000' });
    await a.waitFor(/^claimed (timers|schedule)/);
    const b = worker();
    await b.moreTicks(10);
    // B cannot fire what A holds: at most one of the two (timers or schedule) went ahead in B
    const held = a.lines.find((l) => l.startsWith('claimed')) as string;
    if (held.startsWith('claimed timers'))
      expect(await t.db.selectFrom('alarms').select('id').where('org_id', '=', o.orgId).execute()).toHaveLength(0);
    else expect(await t.db.selectFrom('schedule_runs').select('id').where('schedule_id', '=', scheduleId).execute()).toHaveLength(0);
    a.child.kill('SIGKILL');
    for (let i = 0; i < 200; i++) {
      const alarms = await t.db.selectFrom('alarms').select('id').where('org_id', '=', o.orgId).execute();
      const runs = await t.db.selectFrom('schedule_runs').select('id').where('schedule_id', '=', scheduleId).execute();
      if (alarms.length === 30 && runs.length >= 1) break;
      await sleep(100);
    }
    await b.moreTicks(5);
    const alarms = await t.db.selectFrom('alarms').select(['device_id']).where('org_id', '=', o.orgId).execute();
    expect(new Set(alarms.map((x) => x.device_id)).size).toBe(30);
    expect(alarms).toHaveLength(30);
    const fired = await t.db
      .selectFrom('rule_timer_firings')
      .select(['device_id', 'outcome', 'worker'])
      .where('org_id', '=', o.orgId)
      .execute();
    expect(fired).toHaveLength(30);
    expect(new Set(fired.map((f) => f.outcome))).toEqual(new Set(['raised']));
    const events = await t.db.selectFrom('alarm_events').select('kind').where('org_id', '=', o.orgId).execute();
    expect(events).toHaveLength(30);
    const runs = await t.db.selectFrom('schedule_runs').select(['status', 'occurrence']).where('schedule_id', '=', scheduleId).execute();
    expect(runs).toHaveLength(1);
    expect(runs[0]?.status).toBe('succeeded');
    b.child.kill('SIGKILL');
  }, 90_000);

  it('fire each timer once when two processes race for the same due timers', async () => {
    const o = await dueTimers(100);
    const scheduleId = await schedule(o.orgId);
    const a = worker();
    const b = worker();
    await Promise.all([a.moreTicks(10), b.moreTicks(10)]);
    const fired = await t.db.selectFrom('rule_timer_firings').select(['device_id', 'worker']).where('org_id', '=', o.orgId).execute();
    expect(fired).toHaveLength(100);
    expect(new Set(fired.map((f) => f.device_id)).size).toBe(100);
    expect(await t.db.selectFrom('alarms').select('id').where('org_id', '=', o.orgId).execute()).toHaveLength(100);
    expect(await t.db.selectFrom('schedule_runs').select('id').where('schedule_id', '=', scheduleId).execute()).toHaveLength(1);
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
  }, 90_000);
});
