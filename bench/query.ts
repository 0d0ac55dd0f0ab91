/**
 * `npm run bench:query`: metrics read paths on their own database (`rulr_bench_query`).
 *
 * 1. A 30-day hourly series of one device with 1-minute raw data (6 metrics → 259,200 raw rows),
 *    answered from the hourly rollups (target p50 < 20 ms), against the same series aggregated
 *    from the raw rows.
 * 2. One day's energy of a 1,000-device site (counters every 15 minutes, some resetting), from
 *    the hourly energy rollup `energy_hourly` (target p50 < 100 ms), against the same computed from
 *    every `energy_readings` counter reading (the path before the rollup). The counters are written
 *    by ingest's `BatchWriter` (one batch per reporting round) and folded by the compactor, the
 *    path production data takes, and both answers are checked to be equal.
 *
 * Both are measured through the subgraph (`_entities` executed by `executeSubgraph`, tenant
 * transaction included, no HTTP) and, for the ratio, through the repository. Results go to the
 * query section of bench/RESULTS.md (not with BENCH_WRITE_RESULTS=0).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { loadConfig } from '../lib/config.js';
import { createDb, type Db } from '../lib/db.js';
import type { Identity } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { DocumentCache, executeSubgraph } from '../lib/subgraph.js';
import { compactRollups } from '../lib/telemetry/compactor.js';
import { BatchWriter, type Row } from '../lib/telemetry/writer.js';
import { migrateToLatest } from '../schema/migrate.js';
import { createSubgraph as createMetricsSubgraph } from '../subgraphs/metrics/index.js';
import { MetricsRepository } from '../subgraphs/metrics/repository.js';
import { DAY, planSeries } from '../subgraphs/metrics/series.js';
import { insertDevice, insertOrg, insertSite, type SiteFixture } from '../test/support/telemetry-fixtures.js';
import { recomputeRollups } from '../workers/maintenance.js';

const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const DB_NAME = 'rulr_bench_query';
const ITER = Number(process.env.BENCH_ITER ?? 50);
const SITE_DEVICES = 1000;
const ENERGY_EVERY_MIN = 15;
const END = Date.UTC(2026, 9, 1); // data ends here: 30 days of 1-minute data before it
const START = END - 30 * DAY;

async function recreate(): Promise<void> {
  const admin = new pg.Client({ connectionString: `${PG}/postgres` });
  await admin.connect();
  await admin.query(`drop database if exists ${DB_NAME} with (force)`);
  await admin.query(`create database ${DB_NAME}`);
  await admin.end();
  const m = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: `${PG}/${DB_NAME}`, max: 1 }) }) });
  await migrateToLatest(m);
  await m.destroy();
}

/** Partitions for the data's range, as the maintenance worker would have made them ahead of time. */
async function partitions(db: Db) {
  for (let t = START - 2 * DAY; t < END; t += DAY) {
    const name = `device_metrics_${new Date(t).toISOString().slice(0, 10).replaceAll('-', '')}`;
    await sql`create table ${sql.table(name)} partition of device_metrics for values from (${sql.lit(new Date(t).toISOString())}) to (${sql.lit(new Date(t + DAY).toISOString())})`.execute(
      db,
    );
    await sql`revoke all on ${sql.table(name)} from rulr_app`.execute(db);
  }
  for (const [name, a, b] of [
    ['energy_readings_202608', '2026-08-01', '2026-09-01'],
    ['energy_readings_202609', '2026-09-01', '2026-10-01'],
  ] as const) {
    await sql`create table ${sql.table(name)} partition of energy_readings for values from (${sql.lit(a)}) to (${sql.lit(b)})`.execute(db);
    await sql`revoke all on ${sql.table(name)} from rulr_app`.execute(db);
  }
}

/** Writes counter rows the way ingest does (COPY + energy partials per batch), then compacts them all. */
async function ingestCounters(url: string, rows: Row[]): Promise<void> {
  const byTime = new Map<number, Row[]>();
  for (const r of rows) byTime.set(r.ts, [...(byTime.get(r.ts) ?? []), r]);
  const w = new BatchWriter(url);
  try {
    for (const batch of byTime.values()) await w.write(batch, []);
  } finally {
    await w.close();
  }
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (;;) {
      const r = await compactRollups(c);
      if (r && r.deltas === 0 && r.energyDeltas === 0) break;
    }
  } finally {
    await c.end();
  }
}

async function load(db: Db, url: string) {
  await partitions(db);
  const org = await insertOrg(db, 'bench');
  const city = await insertSite(db, org, 'city');
  const districts: SiteFixture[] = [];
  for (let i = 0; i < 10; i++) districts.push(await insertSite(db, org, `district ${i}`, city));
  const device = await insertDevice(db, org, 'SERIES-1', city.id);
  // 1-minute data, 6 metrics, 30 days, in daily chunks
  for (let t = START; t < END; t += DAY) {
    await sql`insert into device_metrics (time, org_id, device_id, metric, value)
      select ts, ${org}::uuid, ${device}::uuid, m, case m
          when 'power' then 60 + 40 * sin(extract(epoch from ts) / 3600.0) + random() * 5
          when 'voltage' then 230 + random() * 4 - 2
          when 'current' then 0.3 + random() * 0.1
          when 'energy' then extract(epoch from ts - ${new Date(START)}::timestamptz) / 3600.0 * 0.06
          when 'dimLevel' then 50 + 50 * (extract(hour from ts)::int % 2)
          else random() end
      from generate_series(${new Date(t)}::timestamptz, ${new Date(t + DAY - 60_000)}::timestamptz, interval '1 minute') ts,
           unnest(array['power', 'voltage', 'current', 'energy', 'dimLevel', 'rssi']) m`.execute(db);
  }
  // 1,000 devices over the districts; counters every 15 minutes for the last 2 days; 1% reset at noon
  await sql`insert into devices (org_id, serial, name, site_id)
    select ${org}::uuid, 'SL-' || g, 'light ' || g, (array[${sql.join(districts.map((d) => sql`${d.id}::uuid`))}])[1 + g % 10]
    from generate_series(1, ${SITE_DEVICES}) g`.execute(db);
  const dayStart = new Date(END - DAY);
  const from = new Date(END - 2 * DAY);
  const counters = sql`
    select ts as time, d.org_id, d.id as device_id,
      case when d.serial like '%00' and ts >= ${new Date(END - DAY / 2)}::timestamptz
        then extract(epoch from ts - ${new Date(END - DAY / 2)}::timestamptz) / 3600.0 * 0.09
        else 1000 + (substr(d.serial, 4)::int % 1000) + extract(epoch from ts - ${from}::timestamptz) / 3600.0 * 0.09 end as kwh
    from devices d, generate_series(${from}::timestamptz, ${new Date(END - 60_000)}::timestamptz, ${`${ENERGY_EVERY_MIN} minutes`}::interval) ts
    where d.org_id = ${org} and d.serial like 'SL-%'`;
  const { rows } = await sql<{ time: Date; org_id: string; device_id: string; kwh: number }>`${counters}`.execute(db);
  await ingestCounters(
    url,
    rows.map((r) => ({
      ts: r.time.getTime(),
      orgId: r.org_id,
      deviceId: r.device_id,
      metric: 'energy',
      value: r.kwh,
      text: null,
      counter: true,
    })),
  );
  await recomputeRollups(db, { from: new Date(START), to: new Date(END) });
  await sql`vacuum analyze`.execute(db);
  return { org, city, device, dayStart };
}

/** A markdown table padded the way the formatter (Biome) writes it, so `npm run lint` stays clean. */
function mdTable(rows: string[][]): string[] {
  const widths = (rows[0] as string[]).map((_, c) => Math.max(3, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) => `| ${widths.map((w, c) => (r[c] ?? '').padEnd(w)).join(' | ')} |`;
  return [line(rows[0] as string[]), line(widths.map((w) => '-'.repeat(w))), ...rows.slice(1).map(line)];
}

function stats(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] as number;
  return { p50: q(0.5), p95: q(0.95), min: s[0] as number };
}

async function measure(fn: () => Promise<unknown>, iter = ITER) {
  for (let i = 0; i < 5; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < iter; i++) {
    const t = performance.now();
    await fn();
    ms.push(performance.now() - t);
  }
  return stats(ms);
}

async function main() {
  const t0 = Date.now();
  const loadBefore = os.loadavg()[0] as number;
  await recreate();
  const url = `${PG}/${DB_NAME}`;
  const db = createDb({ url, poolSize: 4 });
  const f = await load(db, url);
  const loadS = (Date.now() - t0) / 1000;
  const counts = await sql<{ raw: number; energy: number; hourly: number; energyHourly: number }>`select
    (select count(*) from device_metrics)::int as raw, (select count(*) from energy_readings)::int as energy,
    (select count(*) from metrics_hourly)::int as hourly, (select count(*) from energy_hourly)::int as "energyHourly"`.execute(db);

  const cfg = loadConfig({ ...process.env, DATABASE_URL: url, LOG_LEVEL: 'silent', REDIS_PREFIX: 'benchq:' });
  const ctx = new RoleContext(cfg, createLogger('silent'));
  const mod = createMetricsSubgraph(ctx);
  const docs = new DocumentCache(mod.schema);
  const viewer: Identity = { kind: 'user', subject: 'bench', orgId: f.org, role: 'viewer', scopes: [] };
  const run = async (query: string, variables: Record<string, unknown>) => {
    const { doc, errors } = docs.get(query);
    if (!doc) throw new Error(String(errors));
    const r = await executeSubgraph(mod, doc, variables, undefined, viewer, true);
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r;
  };
  const seriesQ = `query($reps: [_Any!]!, $from: DateTime!, $to: DateTime!) { _entities(representations: $reps) {
    ... on Device { series(metric: "power", from: $from, to: $to, interval: "1h", aggregate: AVG) { ts value } } } }`;
  const energyQ = `query($reps: [_Any!]!, $from: DateTime!, $to: DateTime!) { _entities(representations: $reps) {
    ... on Site { energyPerDay(from: $from, to: $to) { ts kwh } } } }`;
  const seriesVars = {
    reps: [{ __typename: 'Device', id: f.device }],
    from: new Date(START).toISOString(),
    to: new Date(END).toISOString(),
  };
  const energyVars = { reps: [{ __typename: 'Site', id: f.city.id }], from: f.dayStart.toISOString(), to: new Date(END).toISOString() };

  const check = await run(seriesQ, seriesVars);
  const points = (check.data as { _entities: { series: unknown[] }[] })._entities[0]?.series.length ?? 0;
  const eCheck = await run(energyQ, energyVars);
  const kwh = (eCheck.data as { _entities: { energyPerDay: { kwh: number }[] }[] })._entities[0]?.energyPerDay[0]?.kwh ?? 0;

  const repo = new MetricsRepository(db, ctx.redis, 'benchq:');
  const plan = planSeries(new Date(START), new Date(END), '1h');
  const energyRollup = () => repo.siteEnergy(f.org, f.city.path, f.dayStart.getTime(), END);
  const energyReadings = () => repo.siteEnergyFromReadings(f.org, f.city.path, f.dayStart.getTime(), END);
  const [a, b] = [await energyRollup(), await energyReadings()];
  if (a.length !== 1 || b.length !== 1 || Math.abs(Number(a[0]?.kwh) - Number(b[0]?.kwh)) > 1e-9 * Math.abs(Number(b[0]?.kwh)))
    throw new Error(`energy from the rollup ${JSON.stringify(a)} differs from energy from the readings ${JSON.stringify(b)}`);
  if (Math.abs(kwh - Number(b[0]?.kwh)) > 1e-9 * kwh) throw new Error(`subgraph energy ${kwh} differs from ${JSON.stringify(b)}`);

  const results = {
    seriesGraphql: await measure(() => run(seriesQ, seriesVars)),
    seriesRollup: await measure(() => repo.series(f.org, f.device, 'power', plan, 'AVG')),
    seriesRaw: await measure(() => repo.seriesFromRaw(f.org, f.device, 'power', plan, 'AVG'), Math.max(10, ITER / 5)),
    energyGraphql: await measure(() => run(energyQ, energyVars)),
    energyRepo: await measure(energyRollup),
    energyReadings: await measure(energyReadings, Math.max(10, ITER / 5)),
  };
  await ctx.close();
  await db.destroy();

  const loadAfter = os.loadavg()[0] as number;
  const fmt = (x: { p50: number; p95: number }) => [`${x.p50.toFixed(1)} ms`, `${x.p95.toFixed(1)} ms`];
  const c = counts.rows[0];
  const pgVersion = (await (async () => {
    const cl = new pg.Client({ connectionString: `${PG}/postgres` });
    await cl.connect();
    const v = (await cl.query('show server_version')).rows[0]?.server_version as string;
    await cl.end();
    return v;
  })()) as string;
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}, PostgreSQL ${pgVersion} (default settings, same host)`;
  const section = [
    '<!-- bench:query:start -->',
    '## Query (`npm run bench:query`)',
    '',
    `Run ${new Date().toISOString().slice(0, 16)}Z on ${machine}. Command: \`npm run bench:query\` (\`BENCH_ITER=${ITER}\`; 5 warm-up runs each).`,
    `Data (own database \`${DB_NAME}\`, loaded in ${loadS.toFixed(0)} s): ${c?.raw.toLocaleString('en')} raw rows (one device: 30 days × 1-minute × 6 metrics; plus the site's energy metric), ${c?.hourly.toLocaleString('en')} hourly rollup rows, ${c?.energy.toLocaleString('en')} energy counter readings (${SITE_DEVICES.toLocaleString('en')} devices, every ${ENERGY_EVERY_MIN} min, 1% of counters reset mid-day; written by ingest's \`BatchWriter\`, one batch per reporting round, and folded by the compactor into ${c?.energyHourly.toLocaleString('en')} \`energy_hourly\` rows).`,
    'Timings: "subgraph" = the GraphQL `_entities` operation executed by the metrics subgraph (validation cached, tenant transaction, no HTTP); "repository" = the SQL alone.',
    '',
    ...mdTable([
      ['query', 'path', 'p50', 'p95', 'target'],
      [`30-day hourly series (${points} points), 1 device`, 'subgraph, hourly rollups', ...fmt(results.seriesGraphql), 'p50 < 20 ms'],
      ['', 'repository, hourly rollups', ...fmt(results.seriesRollup), ''],
      ['', 'repository, aggregated from raw rows', ...fmt(results.seriesRaw), ''],
      [
        `one day's energy (${kwh.toFixed(1)} kWh), 1,000-device site`,
        'subgraph, `energy_hourly` rollup',
        ...fmt(results.energyGraphql),
        'p50 < 100 ms',
      ],
      ['', 'repository, `energy_hourly` rollup', ...fmt(results.energyRepo), ''],
      ['', 'repository, every `energy_readings` reading', ...fmt(results.energyReadings), ''],
    ]),
    '',
    `Ratio raw / rollup (series, p50): ${(results.seriesRaw.p50 / results.seriesRollup.p50).toFixed(1)}×. Ratio readings / rollup (energy, p50): ${(results.energyReadings.p50 / results.energyRepo.p50).toFixed(1)}×.`,
    `Machine load (1-min load average) ${loadBefore.toFixed(1)} before and ${loadAfter.toFixed(1)} after the run: the host was shared with other work, so absolute times are pessimistic.`,
    '',
    'Energy is exact under counter resets (Prometheus `increase()` semantics). Read from every counter reading its cost grows',
    'with readings (devices × readings per day): devices reporting every minute would make one site-day ~15× costlier than the',
    'readings row above. The hourly energy rollup (`energy_hourly`: per device and hour the first/last counter reading and the',
    'reset-aware increase between its readings, maintained by ingest and the compactor like `metrics_hourly`, migration 0004)',
    'reads 24 rows per device and day whatever the reporting rate, plus raw readings only for the partial hours of an unaligned',
    'range, hours whose partials are not compacted yet, and the reading before the range. Both answers are checked equal.',
    '<!-- bench:query:end -->',
  ].join('\n');
  console.log(section);
  if (process.env.BENCH_WRITE_RESULTS === '0') return;
  const path = new URL('./RESULTS.md', import.meta.url);
  let md = '';
  try {
    md = readFileSync(path, 'utf8');
  } catch {
    md = '# Benchmark results\n';
  }
  const re = /<!-- bench:query:start -->[\s\S]*<!-- bench:query:end -->/;
  md = re.test(md) ? md.replace(re, section) : `${md.trimEnd()}\n\n${section}\n`;
  writeFileSync(path, md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
