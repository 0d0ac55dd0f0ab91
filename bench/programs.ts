// bench:programs — 100,000 lamps on one program at one site: the time from the sunset switch point
// to every lamp's level recorded (the firing: one claimed cluster, one transaction), and to every
// level handed to the devices' desired state (the push, in batches of PROGRAMS push size). The
// scheduler runs as shipped, on one process, with its clock set to just after sunset, so nothing
// waits for the real sun. Memory: the process's peak RSS. Smoke run: BENCH_PROGRAM_LAMPS=2000.
//
// The commands issue's desired state (SENT / SUCCEEDED with simulated devices) is reached through
// the scheduler's DesiredLevelSink; until that path is wired (docs/programs.md) this measures the
// record-only sink, and the SENT / SUCCEEDED columns say so.
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { createDb } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { parseProgram } from '../lib/programs.js';
import { siteLabel } from '../lib/sites.js';
import { solarDay } from '../lib/solar.js';
import { migrateToLatest } from '../schema/migrate.js';
import { ProgramScheduler, recordOnlySink } from '../workers/programs.js';

const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DB_NAME = 'rulr_bench_programs';
const LAMPS = Number(process.env.BENCH_PROGRAM_LAMPS ?? 100_000);
const PUSH_BATCH = Number(process.env.BENCH_PUSH_BATCH ?? 1000);
const TZ = 'Europe/Amsterdam';
const CITY = { lat: 52.3702, lng: 4.8952 };
const DATE = '2027-01-15';

async function recreate(): Promise<string> {
  const admin = new pg.Client({ connectionString: `${PG}/postgres` });
  await admin.connect();
  await admin.query(`drop database if exists ${DB_NAME} with (force)`);
  await admin.query(`create database ${DB_NAME}`);
  await admin.end();
  const url = `${PG}/${DB_NAME}`;
  const m = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  await migrateToLatest(m);
  await m.destroy();
  return url;
}

let peakRss = 0;
const sample = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 50);

async function main() {
  const url = await recreate();
  const db = createDb({ url, poolSize: 4 });
  const redis = new Redis(REDIS_URL);
  const prefix = `rulr-bench-programs-${process.pid}:`;
  const org = await db.insertInto('organizations').values({ slug: 'bench', name: 'Bench' }).returning('id').executeTakeFirstOrThrow();
  const site = '00000000-0000-4000-8000-0000000000c1';
  await sql`insert into sites (id, org_id, name, path, time_zone, location)
    values (${site}, ${org.id}, 'City', ${siteLabel(site)}::ltree, ${TZ}, st_setsrid(st_makepoint(${CITY.lng}, ${CITY.lat}), 4326)::geography)`.execute(
    db,
  );
  // lamps spread over about 5 km, all in one location cell
  await sql`
    insert into devices (org_id, serial, name, site_id, location)
    select ${org.id}, 'SL-' || lpad(i::text, 6, '0'), 'Lamp ' || i, ${site},
           st_setsrid(st_makepoint(${CITY.lng} + ((i % 300) - 150) * 0.0001, ${CITY.lat} + ((i / 300 % 300) - 150) * 0.0001), 4326)::geography
    from generate_series(1, ${LAMPS}) i`.execute(db);
  await sql`analyze devices`.execute(db);
  const program = parseProgram({
    name: 'Street lighting',
    switchPoints: [
      { at: 'sunset', level: 100 },
      { at: 'sunrise', level: 0 },
    ],
  });
  const p = await db
    .insertInto('programs')
    .values({ org_id: org.id, name: program.name, switch_points: JSON.stringify(program.switchPoints), created_by: 'bench' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db.insertInto('program_assignments').values({ org_id: org.id, program_id: p.id, site_id: site, created_by: 'bench' }).execute();

  const sunset = solarDay(CITY.lat, CITY.lng, DATE, TZ).sunset as number;
  let now = sunset - 3600_000;
  const s = new ProgramScheduler({
    db,
    redis,
    prefix,
    logger: createLogger('warn'),
    sink: recordOnlySink,
    clock: () => now,
    pushBatch: PUSH_BATCH,
  });
  // before sunset: plan, the catch-up (all off), pushed
  const t0 = performance.now();
  await s.tick();
  const setup = performance.now() - t0;

  now = sunset + 1;
  const start = performance.now();
  const fired = await s.tick();
  const total = performance.now() - start;
  const { rows } = await sql<{ n: number; pushed: number; on: number }>`
    select count(*)::int as n, count(pushed_at)::int as pushed, count(*) filter (where level = 100)::int as on
    from program_device_levels where org_id = ${org.id}`.execute(db);
  const check = rows[0] as { n: number; pushed: number; on: number };
  const firing = await sql<{ fired_at: Date; at: Date }>`
    select fired_at, at from program_firings where org_id = ${org.id} and level = 100`.execute(db);
  if (check.on !== LAMPS || check.pushed !== LAMPS || fired.levels !== LAMPS) {
    throw new Error(`expected ${LAMPS} lamps on and pushed, got ${JSON.stringify({ check, fired })}`);
  }
  clearInterval(sample);
  const result = {
    lamps: LAMPS,
    setupMs: Math.round(setup),
    sunsetToPushedMs: Math.round(total),
    firings: firing.rows.length,
    pushBatch: PUSH_BATCH,
    peakRssMb: Math.round(peakRss / 1048576),
    sink: recordOnlySink.name,
    cpus: os.cpus().length,
  };
  console.log(JSON.stringify(result));
  if (process.env.BENCH_WRITE_RESULTS === '1') writeResults(result);
  await s.close();
  await redis.quit();
  await db.destroy();
}

function writeResults(r: Record<string, unknown>) {
  const file = new URL('./RESULTS.md', import.meta.url);
  const text = readFileSync(file, 'utf8');
  const section = [
    '<!-- bench:programs:start -->',
    '## Lighting programs (`npm run bench:programs`)',
    '',
    `Command: \`BENCH_WRITE_RESULTS=1 npm run bench:programs\` (env: \`BENCH_PROGRAM_LAMPS\`, \`BENCH_PUSH_BATCH\`). ${r.cpus} cores.`,
    `Setup: own database \`${DB_NAME}\`, ${r.lamps} lamps at one site (Europe/Amsterdam) on one program (on at sunset, off at sunrise), one workers process (the scheduler as shipped, clock set to sunset + 1 ms).`,
    '',
    '| lamps | sunset → all levels recorded and pushed | SENT | SUCCEEDED | peak RSS |',
    '| --- | --- | --- | --- | --- |',
    `| ${r.lamps} | ${r.sunsetToPushedMs} ms | not wired (sink: ${r.sink}) | not wired | ${r.peakRssMb} MB |`,
    '<!-- bench:programs:end -->',
  ].join('\n');
  const re = /<!-- bench:programs:start -->[\s\S]*<!-- bench:programs:end -->/;
  writeFileSync(file, re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
