import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setDesiredLevels } from '../lib/commands.js';
import { SET_STATE_COMMAND } from '../lib/contracts/commands.js';
import { withTenant } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { zonedInstant } from '../lib/time-zones.js';
import { CITY_TIME_ZONE, SUNSET_TO_SUNRISE, seedCity } from '../test/support/city.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { type DesiredLevelSink, desiredStateSink, ProgramScheduler, type ProgramSchedulerOptions } from './programs.js';

let t: TestDatabase;
let redis: Redis;
const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
/** the fixture city's zone */
const TZ = CITY_TIME_ZONE;
/** 23:00 on 21 June in Amsterdam: after sunset, the program says 100 */
const EVENING = zonedInstant('2027-06-21', 23 * 60, TZ);
const real = desiredStateSink({ timeoutS: 30, expiryS: 86_400 });

/** An organization with `n` lamps at one site on "on at sunset, off at sunrise". */
async function org(n: number): Promise<{ orgId: string; lamps: string[] }> {
  const c = await seedCity(t.db, { lamps: n, located: true, program: SUNSET_TO_SUNRISE });
  return { orgId: c.orgId, lamps: [...c.lamps].sort() };
}

/** Lamps that report `level` and want it already (in sync). */
const reporting = (lamps: readonly string[], orgId: string, level: number) =>
  sql`insert into device_states (device_id, org_id, desired, reported, version)
      select id, ${orgId}::uuid, jsonb_build_object('level', ${level}::int), jsonb_build_object('level', ${level}::int), 1
      from unnest(${lamps}::uuid[]) as id`.execute(t.db);

const commands = (orgId: string) =>
  t.db
    .selectFrom('commands')
    .select(['device_id', 'name', 'status', 'params', 'error', 'created_by'])
    .where('org_id', '=', orgId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();

const scheduler = (o: Partial<ProgramSchedulerOptions> = {}) =>
  new ProgramScheduler({ db: t.db, redis, prefix, logger: createLogger('silent'), sink: real, clock: () => EVENING, replanS: 3600, ...o });

describe('the programs push to the desired state', () => {
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

  it('queues one setState per lamp whose reported level differs, marks it for dispatch, and supersedes only what was not sent', async () => {
    const { orgId, lamps } = await org(5);
    const [off, on, fresh, stale, inFlight] = lamps as [string, string, string, string, string];
    await reporting([off, stale, inFlight], orgId, 0);
    await reporting([on], orgId, 100);
    const expires = new Date(EVENING + 3600_000);
    await t.db
      .insertInto('commands')
      .values([
        { org_id: orgId, device_id: stale, name: SET_STATE_COMMAND, timeout_s: 30, created_by: 'before', expires_at: expires },
        {
          org_id: orgId,
          device_id: inFlight,
          name: SET_STATE_COMMAND,
          status: 'SENT',
          lease_until: expires,
          sent_at: new Date(),
          timeout_s: 30,
          created_by: 'before',
          expires_at: expires,
        },
      ])
      .execute();
    const s = scheduler();
    const r = await s.tick();
    expect(r.pushed).toBe(5);
    const all = await commands(orgId);
    const of = (id: string) => all.filter((c) => c.device_id === id).map((c) => [c.created_by, c.status, c.params, c.error]);
    const queued = (version: number) => ['system:programs', 'QUEUED', { desired: { level: 100 }, version, rampSeconds: 0 }, null];
    expect(of(off)).toEqual([queued(2)]);
    expect(of(on)).toEqual([]); // already at 100
    expect(of(fresh)).toEqual([queued(1)]); // never reported: its desired state is created
    expect(of(stale)).toEqual([['before', 'CANCELED', {}, 'superseded by a newer desired state'], queued(2)]);
    expect(of(inFlight)).toEqual([['before', 'SENT', {}, null], queued(2)]); // handed to the broker: not superseded
    const states = await t.db
      .selectFrom('device_states')
      .select(['device_id', 'desired', 'pending_dispatch'])
      .where('org_id', '=', orgId)
      .execute();
    expect(Object.fromEntries(states.map((x) => [x.device_id, [x.desired, x.pending_dispatch]]))).toEqual({
      [off]: [{ level: 100 }, true],
      [on]: [{ level: 100 }, false],
      [fresh]: [{ level: 100 }, true],
      [stale]: [{ level: 100 }, true],
      [inFlight]: [{ level: 100 }, true],
    });
    // ticking again at the same instant pushes nothing more
    expect((await s.tick()).pushed).toBe(0);
    expect(await commands(orgId)).toHaveLength(all.length);
    await s.close();
  });

  it('pushes every level exactly once in small batches, with several schedulers and pushers at once', async () => {
    const { orgId, lamps } = await org(25);
    await reporting(lamps, orgId, 0);
    const many = Array.from({ length: 3 }, () => scheduler({ pushBatch: 4, pushConcurrency: 2 }));
    await many[0]?.tick(); // one plan and firing; the pushes race below
    await sql`update program_device_levels set pushed_at = null where org_id = ${orgId}`.execute(t.db);
    await sql`delete from commands where org_id = ${orgId}`.execute(t.db);
    await sql`update device_states set desired = '{"level": 0}', version = 1, pending_dispatch = false where org_id = ${orgId}`.execute(
      t.db,
    );
    const pushed = await Promise.all(many.flatMap((s) => [s.pushPending(), s.pushPending()]));
    expect(pushed.reduce((a, b) => a + b, 0)).toBe(25);
    const all = await commands(orgId);
    expect(all.map((c) => c.device_id).sort()).toEqual(lamps);
    expect(new Set(all.map((c) => `${c.status} ${JSON.stringify(c.params)}`))).toEqual(
      new Set(['QUEUED {"desired":{"level":100},"version":2,"rampSeconds":0}']),
    );
    const unpushed = await sql<{ n: number }>`
      select count(*)::int as n from program_device_levels where org_id = ${orgId} and pushed_at is null`.execute(t.db);
    expect(unpushed.rows[0]?.n).toBe(0);
    await Promise.all(many.map((s) => s.close()));
  });

  it('rolls a failed push back: its levels stay unpushed and queue nothing until the next push sends each once', async () => {
    const { orgId, lamps } = await org(10);
    await reporting(lamps, orgId, 0);
    let fail = true;
    const flaky: DesiredLevelSink = {
      name: 'flaky',
      push: async (tx, o, items, actor) => {
        await real.push(tx, o, items, actor);
        if (fail) throw new Error('connection lost');
      },
    };
    const s = scheduler({ sink: flaky, pushBatch: 5 });
    await expect(s.tick()).rejects.toThrow('connection lost');
    expect(await commands(orgId)).toEqual([]);
    const unpushed = () =>
      sql<{ n: number }>`select count(*)::int as n from program_device_levels where org_id = ${orgId} and pushed_at is null`.execute(t.db);
    expect((await unpushed()).rows[0]?.n).toBe(10);
    fail = false;
    expect((await s.tick()).pushed).toBe(10);
    expect((await commands(orgId)).map((c) => c.device_id).sort()).toEqual(lamps);
    expect((await unpushed()).rows[0]?.n).toBe(0);
    await s.close();
  });

  it('ignores lamps of another organization', async () => {
    const a = await org(1);
    const b = await org(1);
    const foreign = b.lamps[0] as string;
    const queued = await withTenant(t.db, a.orgId, (tx) =>
      setDesiredLevels(
        tx,
        a.orgId,
        [
          { deviceId: a.lamps[0] as string, level: 40, rampSeconds: 0 },
          { deviceId: foreign, level: 40, rampSeconds: 0 },
        ],
        'test',
        { timeoutS: 30, expiryS: 3600 },
      ),
    );
    expect(queued).toBe(1);
    expect(await t.db.selectFrom('device_states').select('device_id').where('device_id', '=', foreign).execute()).toEqual([]);
    expect(await commands(b.orgId)).toEqual([]);
    expect((await commands(a.orgId)).map((c) => c.params)).toEqual([{ desired: { level: 40 }, version: 1, rampSeconds: 0 }]);
  });
});
