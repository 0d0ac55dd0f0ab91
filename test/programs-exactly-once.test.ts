import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseProgram } from '../lib/programs.js';
import { zonedInstant } from '../lib/time-zones.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

const label = (id: string) => id.replaceAll('-', '_');
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
  const o = await t.db
    .insertInto('organizations')
    .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const site = randomUUID();
  await sql`insert into sites (id, org_id, name, path, time_zone, location)
    values (${site}, ${o.id}, 'City', ${label(site)}::ltree, 'Europe/Amsterdam', 'SRID=4326;POINT(4.9 52.37)'::geography)`.execute(t.db);
  await t.db
    .insertInto('devices')
    .values(Array.from({ length: lamps }, (_, i) => ({ org_id: o.id, serial: `SL-${i}`, name: `Lamp ${i}`, site_id: site })))
    .execute();
  const program = parseProgram({
    name: 'p',
    switchPoints: [
      { at: 'sunset', level: 100 },
      { at: 'sunrise', level: 0 },
    ],
  });
  const p = await t.db
    .insertInto('programs')
    .values({ org_id: o.id, name: 'p', switch_points: JSON.stringify(program.switchPoints), created_by: 'test' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await t.db.insertInto('program_assignments').values({ org_id: o.id, program_id: p.id, site_id: site, created_by: 'test' }).execute();
  return o.id;
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
