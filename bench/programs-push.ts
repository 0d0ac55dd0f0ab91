// bench:programs:push — the push alone, for iterating on it: N lamps on one program at one site, in
// sync at level 0 and with yesterday's `setState` command each (SUCCEEDED, as a day of operation
// leaves them); the sunset firing records their levels, then `pushPending` hands them to the desired
// state through the real `desiredStateSink` (one `setState` command per lamp, marked for dispatch).
// No broker, no dispatcher: what it measures is the push's SQL. The whole path (dispatch, replies)
// is bench:programs (bench/programs.ts).
//
// `BENCH_PROGRAM_LAMPS` (default 20000), `BENCH_PUSH_BATCH` (default: the scheduler's),
// `BENCH_PUSH_EXPLAIN=1` prints EXPLAIN (ANALYZE, BUFFERS) of each statement of one batch (rolled back).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { SET_STATE_COMMAND } from '../lib/contracts/commands.js';
import type { DB } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { createRedis } from '../lib/redis.js';
import { solarDay } from '../lib/solar.js';
import { type DesiredLevelSink, desiredStateSink, ProgramScheduler, recordOnlySink } from '../workers/programs.js';
import { benchDatabase } from './database.js';
import { assignStreetLighting, BENCH_CITY, BENCH_SITE, seedBenchCity } from './programs-ids.js';

const LAMPS = Number(process.env.BENCH_PROGRAM_LAMPS ?? 20_000);
const PUSH_BATCH = process.env.BENCH_PUSH_BATCH ? Number(process.env.BENCH_PUSH_BATCH) : undefined;
const PUSH_CONCURRENCY = process.env.BENCH_PUSH_CONCURRENCY ? Number(process.env.BENCH_PUSH_CONCURRENCY) : undefined;
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const TZ = BENCH_CITY.timeZone;
const CITY = BENCH_CITY;
const DATE = '2027-01-15';
const TAG = 'b0b0b0b0';

async function main() {
  const load = os.loadavg()[0] ?? 0;
  const database = await benchDatabase('rulr_bench_programs_push');
  const db = database.db;
  const orgId = await seedBenchCity(db, TAG, LAMPS);
  // online and in sync at level 0, with yesterday's command done
  await sql`
    insert into device_states (device_id, org_id, desired, reported, version, desired_at, reported_at)
    select id, org_id, '{"level": 0}', '{"level": 0}', 2, now() - interval '1 day', now() from devices`.execute(db);
  await sql`
    insert into commands (org_id, device_id, name, params, status, attempts, timeout_s, created_by, created_at, updated_at, expires_at,
                          lease_until, sent_at, delivered_at, completed_at, history)
    select org_id, id, ${SET_STATE_COMMAND}, '{"desired": {"level": 0}, "version": 2}', 'SUCCEEDED', 1, 30, 'system:programs',
           now() - interval '1 day', now() - interval '1 day', now(), now() - interval '1 day', now() - interval '1 day',
           now() - interval '1 day', now() - interval '1 day',
           '[{"status": "QUEUED"}, {"status": "SENT"}, {"status": "DELIVERED"}, {"status": "SUCCEEDED"}]'
    from devices`.execute(db);
  await sql`analyze`.execute(db);
  await assignStreetLighting(db, orgId, BENCH_SITE);

  const redis = createRedis(REDIS_URL);
  const prefix = `rulr-bench-programs-push-${process.pid}:`;
  const real = desiredStateSink({ timeoutS: 30, expiryS: 86_400 });
  let sink: DesiredLevelSink = recordOnlySink;
  const sunset = solarDay(CITY.lat, CITY.lng, DATE, TZ).sunset as number;
  let now = sunset - 60_000;
  const scheduler = new ProgramScheduler({
    db,
    redis,
    prefix,
    logger: createLogger('warn'),
    sink: { name: 'bench', push: (tx, o, items, actor) => sink.push(tx, o, items, actor) },
    clock: () => now,
    ...(PUSH_BATCH ? { pushBatch: PUSH_BATCH } : {}),
    ...(PUSH_CONCURRENCY ? { pushConcurrency: PUSH_CONCURRENCY } : {}),
  });
  await scheduler.tick(); // plan, catch-up at level 0 (recorded only)
  // the sunset firing, its push refused (the levels stay unpushed), then the push timed alone
  now = sunset + 1;
  sink = {
    name: 'not yet',
    push: async () => {
      throw new Error('not yet');
    },
  };
  const f0 = performance.now();
  await scheduler.tick().catch(() => undefined);
  const fireS = (performance.now() - f0) / 1000;
  sink = real;
  if (process.env.BENCH_PUSH_EXPLAIN === '1') await explainOne(database.url, orgId);

  const pg0 = await backendCpuS(db, database.name);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const pushed = await scheduler.pushPending();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const pgCpuS = (await backendCpuS(db, database.name)) - pg0;
  const check = (
    await sql<{ queued: number; pending: number; pushed: number }>`
    select (select count(*)::int from commands where status = 'QUEUED') as queued,
           (select count(*)::int from device_states where pending_dispatch) as pending,
           (select count(pushed_at)::int from program_device_levels where level = 100) as pushed`.execute(db)
  ).rows[0];
  console.log(
    JSON.stringify({
      lamps: LAMPS,
      pushBatch: PUSH_BATCH ?? 'default',
      pushConcurrency: PUSH_CONCURRENCY ?? 'default',
      fireS: Math.round(fireS * 100) / 100,
      pushS: Math.round(seconds * 100) / 100,
      levelsPerS: Math.round(LAMPS / seconds),
      cpuS: { postgres: Math.round(pgCpuS * 100) / 100, node: Math.round(((cpu.user + cpu.system) / 1e6) * 100) / 100 },
      pushed,
      check,
      load1Before: Math.round(load * 10) / 10,
      load1After: Math.round((os.loadavg()[0] ?? 0) * 10) / 10,
    }),
  );
  await scheduler.close();
  redis.disconnect();
  await database.drop();
  if (check?.queued !== LAMPS || check.pushed !== LAMPS)
    throw new Error(`expected ${LAMPS} queued and pushed, got ${JSON.stringify(check)}`);
}

/** CPU seconds (user + system, /proc) of the PostgreSQL backends connected to `database`: the push's cost, whatever the machine's load. */
async function backendCpuS(db: import('../lib/db.js').Db, database: string): Promise<number> {
  const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = ${database}`.execute(db);
  let s = 0;
  for (const { pid } of rows) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      s += (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      // gone
    }
  }
  return s;
}

/**
 * EXPLAIN (ANALYZE, BUFFERS) of every statement of one batch's push (`setDesiredLevels` and the
 * outbox's own), through auto_explain on a connection of its own, sent back as notices; rolled back.
 */
async function explainOne(url: string, orgId: string) {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  pool.on('connect', (c) => c.on('notice', (n) => console.log(`--- ${n.message}`)));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  await sql`load 'auto_explain'`.execute(db);
  await sql`select set_config('auto_explain.log_min_duration', '0', false), set_config('auto_explain.log_analyze', 'on', false),
    set_config('auto_explain.log_buffers', 'on', false), set_config('auto_explain.log_triggers', 'on', false), set_config('auto_explain.log_timing', 'on', false),
    set_config('auto_explain.log_level', 'notice', false)`.execute(db);
  const scheduler = new ProgramScheduler({
    db,
    redis: undefined as never,
    prefix: '',
    logger: createLogger('warn'),
    sink: desiredStateSink({ timeoutS: 30, expiryS: 86_400 }),
  });
  await db
    .transaction()
    .execute(async (tx) => {
      const { rows } = await sql<{ device_id: string }>`
        select device_id from program_device_levels where pushed_at is null order by set_at, device_id limit ${PUSH_BATCH ?? 5000}`.execute(
        tx,
      );
      await scheduler.pushOne(
        tx,
        orgId,
        rows.map((r) => r.device_id),
      );
      throw new Error('rollback');
    })
    .catch((e) => {
      if ((e as Error).message !== 'rollback') throw e;
    });
  await db.destroy();
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
