import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { programsVersionKey } from '../lib/contracts/program-state.js';
import type { Tx } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { parseProgram } from '../lib/programs.js';
import { cellOf } from '../lib/programs-assign.js';
import { expand } from '../lib/programs-schedule.js';
import { zonedInstant } from '../lib/time-zones.js';
import { CITY_TIME_ZONE, seedCity } from '../test/support/city.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { type DesiredLevelSink, type LevelItem, ProgramScheduler } from './programs.js';

let t: TestDatabase;
let redis: Redis;
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
const _label = (id: string) => id.replaceAll('-', '_');
/** the fixture city's zone */
const TZ = CITY_TIME_ZONE;
const at = (date: string, hhmm: string) => {
  const [h, m] = hhmm.split(':').map(Number) as [number, number];
  return zonedInstant(date, h * 60 + m, TZ);
};
const STREET = {
  name: 'Street lighting',
  switchPoints: [
    { at: 'sunset', offsetMinutes: -10, level: 100 },
    { at: 'fixed', time: '00:30', level: 50, rampSeconds: 30 },
    { at: 'sunrise', offsetMinutes: 10, level: 0 },
  ],
};

/** Pushes land in the transaction that marks them pushed; kept here per device, in order. */
class PushLog implements DesiredLevelSink {
  readonly name = 'test-log';
  readonly pushes: { orgId: string; item: LevelItem }[] = [];
  async push(tx: Tx, orgId: string, items: readonly LevelItem[]) {
    await sql`select 1`.execute(tx);
    for (const item of items) this.pushes.push({ orgId, item });
  }
}

interface Org {
  orgId: string;
  city: string;
  street: string;
  lamps: string[];
  programId: string;
}

/** An organization: the city (with its zone and location) on `program`, three lamps on a street below it. */
async function org(program = STREET): Promise<Org> {
  const c = await seedCity(t.db, { lamps: 3, located: true, street: true, program });
  return { orgId: c.orgId, city: c.cityId, street: c.siteId, lamps: c.lamps, programId: c.programId as string };
}

const levels = async (o: Org) => {
  const rows = await t.db
    .selectFrom('program_device_levels')
    .select(['device_id', 'level', 'source', 'writes'])
    .where('org_id', '=', o.orgId)
    .execute();
  const by = new Map(rows.map((r) => [r.device_id, r]));
  return o.lamps.map((id) => by.get(id)?.level ?? null);
};
const firings = (o: Org) =>
  t.db.selectFrom('program_firings').select(['source', 'at', 'level', 'devices']).where('org_id', '=', o.orgId).orderBy('id').execute();

describe('program scheduler', () => {
  let now = 0;
  const scheduler = (sink: DesiredLevelSink = new PushLog()) =>
    new ProgramScheduler({ db: t.db, redis, prefix, logger: createLogger('silent'), sink, clock: () => now, replanS: 3600 });

  beforeAll(async () => {
    t = await createTestDatabase();
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
    await t.drop();
  });

  it('switches at sunset -10, 00:30 and sunrise +10 at the right instants, with a controlled clock', async () => {
    const o = await org();
    const log = new PushLog();
    const s = scheduler(log);
    const place = { lat: cellOf(52.37, 0.1), lng: cellOf(4.9, 0.1), timeZone: TZ };
    const expected = expand(
      { calendar: { defaultProgramId: o.programId, rules: [] }, programs: new Map([[o.programId, parseProgram(STREET)]]) },
      place,
      at('2027-06-21', '12:00'),
      at('2027-06-22', '12:00'),
    ).events;
    now = at('2027-06-21', '12:00');
    await s.tick();
    // a new location fires at once with the level in force now: off at noon
    expect(await levels(o)).toEqual([0, 0, 0]);
    now = (expected[0]?.at as number) - 1000;
    await s.tick();
    expect(await levels(o)).toEqual([0, 0, 0]);
    now = (expected[0]?.at as number) + 500;
    await s.tick();
    expect(await levels(o)).toEqual([100, 100, 100]);
    await s.tick();
    expect(await firings(o)).toHaveLength(2);
    now = at('2027-06-22', '00:30') + 1000;
    await s.tick();
    expect(await levels(o)).toEqual([50, 50, 50]);
    now = (expected[2]?.at as number) + 1000;
    await s.tick();
    expect(await levels(o)).toEqual([0, 0, 0]);
    const f = await firings(o);
    expect(f.map((x) => [x.at.getTime(), x.level, x.devices])).toEqual([
      [at('2027-06-21', '12:00'), 0, 3],
      [expected[0]?.at, 100, 3],
      [at('2027-06-22', '00:30'), 50, 3],
      [expected[2]?.at, 0, 3],
    ]);
    expect(log.pushes.filter((p) => p.item.deviceId === o.lamps[0]).map((p) => [p.item.level, p.item.rampSeconds])).toEqual([
      [0, 0],
      [100, 0],
      [50, 30],
      [0, 0],
    ]);
    await s.close();
  });

  it('catches up once with the level in force after a long stop, instead of replaying every missed event', async () => {
    const o = await org();
    const s = scheduler();
    now = at('2027-07-01', '12:00');
    await s.tick();
    now = at('2027-07-04', '01:00'); // three days later, at 50 %
    await s.tick();
    expect(await levels(o)).toEqual([50, 50, 50]);
    expect((await firings(o)).map((f) => f.at.getTime())).toEqual([at('2027-07-01', '12:00'), at('2027-07-04', '00:30')]);
  });

  it('lets an override start, win over the program and the earlier override, and hands back when each ends', async () => {
    const o = await org();
    const s = scheduler();
    now = at('2027-06-21', '23:00');
    await s.tick();
    expect(await levels(o)).toEqual([100, 100, 100]);
    const override = async (target: { deviceId?: string; siteId?: string }, level: number, from: string, to: string) => {
      const r = await t.db
        .insertInto('program_overrides')
        .values({
          org_id: o.orgId,
          site_id: target.siteId ?? null,
          device_id: target.deviceId ?? null,
          level,
          starts_at: new Date(at(...(from.split(' ') as [string, string]))),
          expires_at: new Date(at(...(to.split(' ') as [string, string]))),
          created_by: 'test',
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      return r.id;
    };
    const maintenance = await override({ deviceId: o.lamps[0] }, 20, '2027-06-21 23:10', '2027-06-22 01:00');
    const event = await override({ siteId: o.city }, 80, '2027-06-21 23:20', '2027-06-21 23:50');
    now = at('2027-06-21', '23:11');
    await s.tick();
    expect(await levels(o)).toEqual([20, 100, 100]);
    now = at('2027-06-21', '23:21');
    await s.tick();
    expect(await levels(o)).toEqual([80, 80, 80]); // created last: wins everywhere
    now = at('2027-06-21', '23:51');
    await s.tick();
    expect(await levels(o)).toEqual([20, 100, 100]); // the earlier override still holds lamp 0
    now = at('2027-06-22', '00:31');
    await s.tick();
    expect(await levels(o)).toEqual([20, 50, 50]); // the program does not touch an overridden lamp
    now = at('2027-06-22', '01:01');
    await s.tick();
    expect(await levels(o)).toEqual([50, 50, 50]); // expired: the program resumes
    const f = await firings(o);
    expect(f.filter((x) => x.source !== 'program').map((x) => [x.source, x.level, x.devices])).toEqual([
      ['override-start', 20, 1],
      ['override-start', 80, 3],
      ['override-end', null, 3],
      ['override-end', null, 1],
    ]);
    expect([maintenance, event]).toHaveLength(2);
  });

  it('ends a canceled override at once and the program resumes', async () => {
    const o = await org();
    const s = scheduler();
    now = at('2027-06-22', '01:00');
    await s.tick();
    const r = await t.db
      .insertInto('program_overrides')
      .values({
        org_id: o.orgId,
        site_id: o.city,
        level: 100,
        starts_at: new Date(now),
        expires_at: new Date(now + 6 * 3600_000),
        created_by: 'test',
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    now += 60_000;
    await s.tick();
    expect(await levels(o)).toEqual([100, 100, 100]);
    await t.db
      .updateTable('program_overrides')
      .set({ canceled_at: new Date(now + 1000) })
      .where('id', '=', r.id)
      .execute();
    now += 5000;
    await s.tick();
    expect(await levels(o)).toEqual([50, 50, 50]);
  });

  it('replans when the programs version changes: an edited program applies at once', async () => {
    const o = await org();
    const s = scheduler();
    now = at('2027-06-22', '01:00');
    await s.tick();
    expect(await levels(o)).toEqual([50, 50, 50]);
    await t.db
      .updateTable('programs')
      .set({
        switch_points: JSON.stringify(parseProgram({ name: 'x', switchPoints: [{ at: 'fixed', time: '00:00', level: 30 }] }).switchPoints),
      })
      .where('id', '=', o.programId)
      .execute();
    await redis.incr(programsVersionKey(prefix, o.orgId));
    now += 1000;
    await s.tick();
    expect(await levels(o)).toEqual([30, 30, 30]);
  });

  it('never fires a switch point twice when several schedulers tick at once', async () => {
    const o = await org();
    const many = Array.from({ length: 4 }, () => scheduler());
    const times = [at('2027-06-21', '12:00'), at('2027-06-21', '23:59'), at('2027-06-22', '00:31'), at('2027-06-22', '06:00')];
    for (const time of times) {
      now = time;
      await Promise.all(many.flatMap((s) => [s.tick(), s.tick()]));
    }
    const f = await firings(o);
    expect(f.map((x) => x.level)).toEqual([0, 100, 50, 0]);
    const writes = await t.db.selectFrom('program_device_levels').select('writes').where('org_id', '=', o.orgId).execute();
    expect(writes.map((w) => w.writes)).toEqual([4, 4, 4]);
  });
});
