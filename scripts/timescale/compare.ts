/**
 * Hand-run check that the TimescaleDB path answers like the native one (docs/timescale.md):
 *
 *   npx tsx scripts/timescale/compare.ts <native-url> <timescale-url>
 *
 * Both databases must be migrated (the second with `rulr migrate --timescale`). Writes the same
 * deterministic sample (organization 00000000-0000-4000-8000-00000000c0de only, replaced on each run)
 * into both, brings the rollups up to date the way each mode does (native: the maintenance worker's
 * `recomputeRollups`, equal to what ingest maintains; timescale with continuous aggregates: a refresh),
 * then runs the metrics subgraph's repository queries (series from raw/hourly/daily, energy) against
 * both and prints one line per query. Exit code 1 when any answer differs.
 */
import { sql } from 'kysely';
import { createDb } from '../../lib/db.js';
import type { Redis } from '../../lib/redis.js';
import { DAILY_CAGG_QUERY, HOURLY_CAGG_QUERY } from '../../lib/telemetry/timescale/apply.js';
import { storageInfo } from '../../lib/telemetry/timescale/mode.js';
import { MetricsRepository } from '../../subgraphs/metrics/repository.js';
import { AGGREGATES, planSeries } from '../../subgraphs/metrics/series.js';
import { DAYS, DEVICES, FROM, loadSample, ORG } from './sample.js';

type Answer = { ts: number; v: number | null }[];

function same(a: Answer, b: Answer): { ok: boolean; diff: number } {
  if (a.length !== b.length) return { ok: false, diff: Number.POSITIVE_INFINITY };
  let diff = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as Answer[number];
    const y = b[i] as Answer[number];
    if (x.ts !== y.ts || (x.v === null) !== (y.v === null)) return { ok: false, diff: Number.POSITIVE_INFINITY };
    if (x.v !== null && y.v !== null) diff = Math.max(diff, Math.abs(x.v - y.v) / Math.max(1, Math.abs(x.v)));
  }
  return { ok: diff < 1e-9, diff };
}

async function main(): Promise<void> {
  const [nativeUrl, tsUrl] = process.argv.slice(2);
  if (!nativeUrl || !tsUrl) {
    console.error('usage: tsx scripts/timescale/compare.ts <native-url> <timescale-url>');
    process.exit(2);
  }
  const dbs = [createDb({ url: nativeUrl, poolSize: 2 }), createDb({ url: tsUrl, poolSize: 2 })] as const;
  // Series and energy are database reads only; the Redis client is never touched by them.
  const repos = dbs.map((db) => new MetricsRepository(db, undefined as unknown as Redis, 'rulr:'));
  let failures = 0;
  try {
    const modes = await Promise.all(dbs.map(loadSample));
    console.log(`native:    ${modes[0]}\ntimescale: ${modes[1]}\n`);
    console.log('query                                     points  max rel diff  same');
    const to = new Date(FROM.getTime() + DAYS * 86_400_000);
    const line = (name: string, a: Answer, b: Answer) => {
      const r = same(a, b);
      if (!r.ok) failures++;
      console.log(`${name.padEnd(42)}${String(a.length).padStart(6)}  ${r.diff.toExponential(1).padStart(12)}  ${r.ok ? 'yes' : 'NO'}`);
    };
    for (const device of DEVICES.slice(0, 2)) {
      for (const iv of ['15m', '1h', '6h', '1d', '7d']) {
        const plan = planSeries(FROM, to, iv);
        const all: [Answer, Answer] = [[], []];
        for (const agg of AGGREGATES) {
          const answers = await Promise.all(repos.map((r) => r.series(ORG, device, 'power', plan, agg)));
          answers.forEach((rows, i) => {
            for (const p of rows ?? []) all[i]?.push({ ts: new Date(p.ts).getTime(), v: p.value === null ? null : Number(p.value) });
          });
        }
        line(`series d${device.slice(-1)} power ${iv} (${plan.source}) ×6 aggregates`, ...all);
      }
    }
    for (const device of DEVICES) {
      for (const [iv, ms] of [
        ['1h', 3_600_000],
        ['1d', 86_400_000],
      ] as const) {
        const [a, b] = await Promise.all(repos.map((r) => r.energy(ORG, device, FROM.getTime(), to.getTime(), ms)));
        const norm = (rows: typeof a) => (rows ?? []).map((p) => ({ ts: new Date(p.ts).getTime(), v: Number(p.kwh) }));
        line(`energy d${device.slice(-1)} ${iv}`, norm(a), norm(b));
      }
    }
    const tsInfo = await storageInfo(dbs[1]);
    if (tsInfo.mode === 'timescale' && !tsInfo.continuousAggregates) {
      // Build without continuous aggregates: evaluate their definitions as plain queries against the
      // rollups the native database keeps (same rows, same numbers expected).
      for (const [name, query, table] of [
        ['hourly', HOURLY_CAGG_QUERY, 'metrics_hourly'],
        ['daily', DAILY_CAGG_QUERY(`(${HOURLY_CAGG_QUERY})`), 'metrics_daily'],
      ] as const) {
        const cols = sql.raw('min, max, sum, count::float8 as count, last, extract(epoch from last_time)::float8 as last_time');
        const [a, b] = await Promise.all([
          sql<
            Record<string, number>
          >`select bucket, ${cols} from ${sql.table(table)} where org_id = ${ORG} order by device_id, metric, bucket`.execute(dbs[0]),
          sql<
            Record<string, number>
          >`select bucket, ${cols} from (${sql.raw(query)}) c where org_id = ${ORG} order by device_id, metric, bucket`.execute(dbs[1]),
        ]);
        const flat = (rows: Record<string, unknown>[]) =>
          rows.flatMap((r) =>
            ['min', 'max', 'sum', 'count', 'last', 'last_time'].map((k) => ({ ts: new Date(r.bucket as Date).getTime(), v: Number(r[k]) })),
          );
        line(`${name} cagg definition vs ${table} rows`, flat(a.rows), flat(b.rows));
      }
    }
  } finally {
    await Promise.all(dbs.map((db) => db.destroy()));
  }
  console.log(failures ? `\n${failures} answers differ` : '\nall answers are the same');
  process.exit(failures ? 1 : 0);
}

await main();
