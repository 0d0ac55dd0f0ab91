import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { zonedInstant } from '../lib/time-zones.js';
import { SUNSET_TO_SUNRISE, seedCity } from './support/city.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

const _label = (id: string) => id.replaceAll('-', '_');
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
let t: TestDatabase;
const children: ChildProcess[] = [];

/** A scheduler process; resolves its output lines as they come. */
function worker(env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/testing/run-programs.ts'], {
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
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no line matching ${re} in: ${lines.slice(-5).join(' | ')}`);
  };
  return { child, lines, waitFor };
}

async function org(lamps: number) {
  return (await seedCity(t.db, { lamps, located: true, program: SUNSET_TO_SUNRISE })).orgId;
}

describe('program switch points with two workers processes', () => {
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await t.drop();
  });

  it('fire once per device when one process is SIGKILLed holding the claim and the other takes over', async () => {
    const orgId = await org(50);
    const now = String(zonedInstant('2027-06-21', 23 * 60, 'Europe/Amsterdam'));
    const a = worker({ PROGRAMS_FIXED_NOW: now, PROGRAMS_HOLD_MS: '600000' });
    await a.waitFor(/^claimed program /);
    const b = worker({ PROGRAMS_FIXED_NOW: now });
    await new Promise((r) => setTimeout(r, 3000));
    // B cannot fire what A holds
    expect((await t.db.selectFrom('program_firings').select('id').where('org_id', '=', orgId).execute()).length).toBe(0);
    a.child.kill('SIGKILL');
    await b.waitFor(/^claimed program /);
    for (let i = 0; i < 100; i++) {
      const n = await t.db.selectFrom('program_device_levels').select('device_id').where('org_id', '=', orgId).execute();
      if (n.length === 50) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // several more ticks of B at the same instant change nothing
    const ticks = b.lines.filter((l) => l.startsWith('tick')).length;
    await b.waitFor(/^tick .*/, 5000);
    while (b.lines.filter((l) => l.startsWith('tick')).length < ticks + 5) await new Promise((r) => setTimeout(r, 50));
    const firings = await t.db.selectFrom('program_firings').select(['source', 'level', 'devices']).where('org_id', '=', orgId).execute();
    expect(firings).toEqual([{ source: 'program', level: 100, devices: 50 }]);
    const writes = await t.db.selectFrom('program_device_levels').select(['writes', 'level']).where('org_id', '=', orgId).execute();
    expect(writes).toHaveLength(50);
    expect(new Set(writes.map((w) => `${w.writes}:${w.level}`))).toEqual(new Set(['1:100']));
    b.child.kill('SIGKILL');
  }, 60_000);

  it('queue one command per lamp when one process is SIGKILLed mid-push and the other pushes every level', async () => {
    const orgId = await org(30);
    await sql`insert into device_states (device_id, org_id, desired, reported, version)
      select id, org_id, '{"level": 0}', '{"level": 0}', 1 from devices where org_id = ${orgId}`.execute(t.db);
    const now = String(zonedInstant('2027-06-21', 23 * 60, 'Europe/Amsterdam')); // after sunset: 100
    const push = { PROGRAMS_FIXED_NOW: now, PROGRAMS_SINK: 'desired-state', PROGRAMS_PUSH_BATCH: '10' };
    const a = worker({ ...push, PROGRAMS_PUSH_HOLD_MS: '600000' });
    await a.waitFor(/^pushing 10$/);
    const queued = () => t.db.selectFrom('commands').select(['device_id', 'status', 'params']).where('org_id', '=', orgId).execute();
    // A's first batch is written but not committed
    expect(await queued()).toEqual([]);
    a.child.kill('SIGKILL');
    const b = worker(push);
    for (let i = 0; i < 200; i++) {
      const { rows } = await sql<{ n: number }>`
        select count(*)::int as n from program_device_levels where org_id = ${orgId} and pushed_at is not null`.execute(t.db);
      if (rows[0]?.n === 30) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // several more ticks of B change nothing
    const ticks = b.lines.filter((l) => l.startsWith('tick')).length;
    while (b.lines.filter((l) => l.startsWith('tick')).length < ticks + 5) await new Promise((r) => setTimeout(r, 50));
    const commands = await queued();
    expect(commands).toHaveLength(30);
    expect(new Set(commands.map((c) => c.device_id)).size).toBe(30);
    expect(new Set(commands.map((c) => `${c.status} ${JSON.stringify(c.params)}`))).toEqual(
      new Set(['QUEUED {"desired":{"level":100},"version":2,"rampSeconds":0}']),
    );
    const states = await t.db.selectFrom('device_states').select(['version', 'pending_dispatch']).where('org_id', '=', orgId).execute();
    expect(new Set(states.map((s) => `${s.version} ${s.pending_dispatch}`))).toEqual(new Set(['2 true']));
    b.child.kill('SIGKILL');
  }, 60_000);

  it('fire once when two processes race for the same switch point', async () => {
    const orgId = await org(20);
    const now = String(zonedInstant('2027-06-22', 12 * 60, 'Europe/Amsterdam'));
    const a = worker({ PROGRAMS_FIXED_NOW: now });
    const b = worker({ PROGRAMS_FIXED_NOW: now });
    for (const w of [a, b]) {
      await w.waitFor(/^tick /);
      while (w.lines.filter((l) => l.startsWith('tick')).length < 10) await new Promise((r) => setTimeout(r, 50));
    }
    const firings = await t.db.selectFrom('program_firings').select(['level', 'devices']).where('org_id', '=', orgId).execute();
    expect(firings).toEqual([{ level: 0, devices: 20 }]);
    const writes = await t.db.selectFrom('program_device_levels').select('writes').where('org_id', '=', orgId).execute();
    expect(writes.map((w) => w.writes)).toEqual(Array(20).fill(1));
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
  }, 60_000);
});
