import type pg from 'pg';
import { REFRESH_QUEUE, TIMESCALE_SCHEMA } from './mode.js';

/**
 * Late readings in TimescaleDB mode. The refresh policies only look back a few days (hourly: 7 days
 * to 1 hour ago), so buckets of older readings were never refreshed: `series()` missed them while
 * `seriesFromRaw()` had them. Ingest queues the time range of each batch's late readings in
 * {@link REFRESH_QUEUE} (same transaction as the rows); {@link refreshQueuedBuckets}, run by the
 * compactor, refreshes the continuous aggregates over those ranges, hourly then daily.
 */

/** `pg_try_advisory_lock` key: one refresh of queued ranges at a time across processes. */
export const LATE_REFRESH_LOCK = 7_252_011_432;

/**
 * Queue entries one run takes.
 * @default 1000
 */
export const LATE_REFRESH_BATCH = 1000;

const DAY = 86_400_000;

export interface LateRefreshResult {
  /** queue entries taken (and deleted) */
  entries: number;
  /** whole UTC days refreshed, merged: [from, to) */
  ranges: [Date, Date][];
}

/**
 * Merges [from, to) ranges widened to whole UTC days, dropping the days before `keepFrom` (where the
 * raw chunks may be gone: refreshing there would delete the rollups the retention keeps).
 */
export function dayRanges(entries: { from: number; to: number }[], keepFrom: number | null): [number, number][] {
  const floor = (t: number) => Math.floor(t / DAY) * DAY;
  const ceil = (t: number) => Math.ceil(t / DAY) * DAY;
  const start = keepFrom === null ? Number.NEGATIVE_INFINITY : ceil(keepFrom);
  const days = entries
    .map((e): [number, number] => [Math.max(floor(e.from), start), ceil(e.to)])
    .filter(([a, b]) => a < b)
    .sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const [a, b] of days) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/**
 * Refreshes `metrics_hourly_cagg` then `metrics_daily_cagg` over the queued ranges and deletes the
 * entries it took. `client` must not be inside a transaction (a refresh refuses to run in one).
 * Returns null when another process holds the lock. Ranges older than the raw retention are not
 * refreshed (docs/timescale.md, "Late readings").
 */
export async function refreshQueuedBuckets(client: pg.ClientBase, now = Date.now()): Promise<LateRefreshResult | null> {
  const { rows } = await client.query<{ id: string; from: Date; to: Date }>(
    `select id, from_time as "from", to_time as "to" from ${REFRESH_QUEUE} order by id limit ${LATE_REFRESH_BATCH}`,
  );
  if (!rows.length) return { entries: 0, ranges: [] };
  const lock = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [LATE_REFRESH_LOCK]);
  if (!lock.rows[0]?.ok) return null;
  try {
    const { rows: keep } = await client.query<{ ms: number | null }>(
      `select extract(epoch from (config->>'drop_after')::interval) * 1000 as ms from timescaledb_information.jobs
        where proc_name = 'policy_retention' and hypertable_schema = $1 and hypertable_name = 'device_metrics'`,
      [TIMESCALE_SCHEMA],
    );
    const keepMs = keep[0]?.ms;
    const ranges = dayRanges(
      rows.map((r) => ({ from: r.from.getTime(), to: r.to.getTime() })),
      keepMs == null ? null : now - Number(keepMs),
    );
    for (const [from, to] of ranges) {
      for (const cagg of ['metrics_hourly_cagg', 'metrics_daily_cagg'])
        await client.query(
          `call refresh_continuous_aggregate('${TIMESCALE_SCHEMA}.${cagg}', '${new Date(from).toISOString()}'::timestamptz, '${new Date(to).toISOString()}'::timestamptz)`,
        );
    }
    await client.query(`delete from ${REFRESH_QUEUE} where id = any($1::bigint[])`, [rows.map((r) => r.id)]);
    return { entries: rows.length, ranges: ranges.map(([a, b]) => [new Date(a), new Date(b)]) };
  } finally {
    await client.query('select pg_advisory_unlock($1)', [LATE_REFRESH_LOCK]);
  }
}
