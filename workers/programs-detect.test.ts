import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeLatestValue, latestKey } from '../lib/contracts/device-state.js';
import { eventsChannel, parseEvents } from '../lib/contracts/events.js';
import { createLogger } from '../lib/logger.js';
import { parseProgram } from '../lib/programs.js';
import { zonedInstant } from '../lib/time-zones.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { ProgramScheduler, recordOnlySink } from './programs.js';
import { ProgramDetectors } from './programs-detect.js';

let t: TestDatabase;
let redis: Redis;
let sub: Redis;
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
const label = (id: string) => id.replaceAll('-', '_');
const at = (date: string, hhmm: string) => {
  const [h, m] = hhmm.split(':').map(Number) as [number, number];
  return zonedInstant(date, h * 60 + m, 'Europe/Amsterdam');
};

describe('expected-state detectors', () => {
  let now = 0;
  let orgId: string;
  const lamps: string[] = [];
  const events: { kind: string; deviceId: string }[] = [];
  let scheduler: ProgramScheduler;
  let detectors: ProgramDetectors;

  const report = (deviceId: string, v: { lampState?: boolean; power?: number; dimLevel?: number }) => {
    const fields: string[] = [];
    for (const [metric, value] of Object.entries(v)) {
      fields.push(
        metric,
        encodeLatestValue(
          typeof value === 'boolean' ? { ts: now, value: value ? 1 : 0, text: String(value) } : { ts: now, value, text: null },
        ),
      );
    }
    return redis.hset(latestKey(prefix, deviceId), ...fields);
  };
  const openAlarms = async () =>
    (
      await t.db
        .selectFrom('alarms')
        .select(['device_id', 'type', 'severity', 'raised_by', 'message'])
        .where('org_id', '=', orgId)
        .where('cleared_at', 'is', null)
        .orderBy('type')
        .execute()
    ).map((a) => [lamps.indexOf(a.device_id), a.type, a.severity, a.raised_by]);

  beforeAll(async () => {
    t = await createTestDatabase();
    redis = new Redis(REDIS_URL);
    const o = await t.db
      .insertInto('organizations')
      .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
      .returning('id')
      .executeTakeFirstOrThrow();
    orgId = o.id;
    const site = randomUUID();
    await sql`insert into sites (id, org_id, name, path, time_zone, location)
      values (${site}, ${orgId}, 'City', ${label(site)}::ltree, 'Europe/Amsterdam', 'SRID=4326;POINT(4.9 52.37)'::geography)`.execute(t.db);
    for (let i = 0; i < 3; i++) {
      const r = await t.db
        .insertInto('devices')
        .values({ org_id: orgId, serial: `SL-${i}`, name: `L${i}`, site_id: site })
        .returning('id')
        .executeTakeFirstOrThrow();
      lamps.push(r.id);
    }
    const program = parseProgram({
      name: 'p',
      switchPoints: [
        { at: 'sunset', offsetMinutes: -10, level: 100 },
        { at: 'fixed', time: '00:30', level: 50 },
        { at: 'sunrise', offsetMinutes: 10, level: 0 },
      ],
    });
    const p = await t.db
      .insertInto('programs')
      .values({ org_id: orgId, name: 'p', switch_points: JSON.stringify(program.switchPoints), created_by: 'test' })
      .returning('id')
      .executeTakeFirstOrThrow();
    await t.db.insertInto('program_assignments').values({ org_id: orgId, program_id: p.id, site_id: site, created_by: 'test' }).execute();
    const logger = createLogger('silent');
    scheduler = new ProgramScheduler({ db: t.db, redis, prefix, logger, sink: recordOnlySink, clock: () => now });
    detectors = new ProgramDetectors({ db: t.db, redis, prefix, logger, clock: () => now, graceMs: 600_000, dimTolerance: 5, onPowerW: 5 });
    sub = redis.duplicate();
    sub.on('message', (_c, raw: string) => {
      for (const e of parseEvents(raw).events) {
        const d = e.data as { kind: string };
        events.push({ kind: d.kind, deviceId: (e.filter as { deviceId: string }).deviceId });
      }
    });
    await sub.subscribe(eventsChannel(prefix, orgId));
  });
  afterAll(async () => {
    await sub?.quit();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
    await t.drop();
  });

  it('raises a dark lamp (no power while programmed on) and a dim mismatch, through the alarm life cycle', async () => {
    now = at('2027-01-15', '23:00');
    await scheduler.tick(); // on, 100 %
    now += 15 * 60_000;
    await report(lamps[0] as string, { lampState: false, power: 0.4, dimLevel: 0 });
    await report(lamps[1] as string, { lampState: true, power: 90, dimLevel: 100 });
    await report(lamps[2] as string, { lampState: true, power: 1.1, dimLevel: 100 }); // says on, draws nothing
    expect(await detectors.run()).toMatchObject({ devices: 3, raised: 2 });
    expect(await openAlarms()).toEqual([
      [0, 'Dark lamp', 'major', 'program:detector'],
      [2, 'Dark lamp', 'major', 'program:detector'],
    ]);
    now = at('2027-01-16', '00:31');
    await scheduler.tick(); // 50 %
    now += 15 * 60_000;
    await report(lamps[1] as string, { lampState: true, power: 90, dimLevel: 100 });
    expect((await detectors.run()).raised).toBe(1);
    expect((await openAlarms()).map((a) => [a[0], a[1]])).toEqual([
      [0, 'Dark lamp'],
      [2, 'Dark lamp'],
      [1, 'Dim mismatch'],
    ]);
    const history = await t.db.selectFrom('alarm_events').select('kind').where('org_id', '=', orgId).execute();
    expect(history.map((h) => h.kind)).toEqual(['raised', 'raised', 'raised']);
  });

  it('clears them once the lamps comply, and raises a day burner for a lamp lit at noon', async () => {
    now = at('2027-01-16', '12:00');
    await scheduler.tick(); // off since sunrise +10
    now += 15 * 60_000;
    await report(lamps[0] as string, { lampState: false, power: 0.4, dimLevel: 0 });
    await report(lamps[1] as string, { lampState: false, power: 0.4, dimLevel: 0 });
    await report(lamps[2] as string, { lampState: true, power: 95, dimLevel: 100 });
    const r = await detectors.run();
    expect(r).toMatchObject({ raised: 1, cleared: 3 });
    expect(await openAlarms()).toEqual([[2, 'Day burner', 'minor', 'program:detector']]);
    await new Promise((res) => setTimeout(res, 100));
    expect(events.filter((e) => e.kind === 'RAISED')).toHaveLength(4);
    expect(events.filter((e) => e.kind === 'CLEARED')).toHaveLength(3);
    // a second run with nothing new changes nothing
    expect(await detectors.run()).toMatchObject({ raised: 0, cleared: 0 });
  });
});
