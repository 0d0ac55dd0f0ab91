import { type QueryExecutorProvider, sql } from 'kysely';

/**
 * How telemetry is stored: `native` = declarative partitions + rollup tables written by ingest
 * (plain PostgreSQL, the tested path); `timescale` = hypertables (see `schema/timescale/apply.ts`).
 */
export type StorageMode = 'native' | 'timescale';

/** What the timescale path could switch on (the Apache-only build has hypertables but no TSL features). */
export interface StorageInfo {
  mode: StorageMode;
  /** `metrics_hourly`/`metrics_daily` are views over continuous aggregates: ingest must not write rollups. */
  continuousAggregates: boolean;
  /** compression and retention run as TimescaleDB background jobs: the maintenance worker skips them. */
  policies: boolean;
}

const NATIVE: StorageInfo = { mode: 'native', continuousAggregates: false, policies: false };

/**
 * The storage mode recorded by the timescale path in `rulr_storage_mode` (one row). A database
 * without that table (every plain PostgreSQL one) is `native`. Read it once at role start.
 */
export async function storageInfo(db: QueryExecutorProvider): Promise<StorageInfo> {
  const { rows: exists } = await sql<{ t: string | null }>`select to_regclass('public.rulr_storage_mode')::text as t`.execute(db);
  if (!exists[0]?.t) return NATIVE;
  const { rows } = await sql<{ mode: StorageMode; caggs: boolean; policies: boolean }>`
    select mode, continuous_aggregates as caggs, policies from rulr_storage_mode limit 1`.execute(db);
  const r = rows[0];
  return r ? { mode: r.mode, continuousAggregates: r.caggs, policies: r.policies } : NATIVE;
}

/** `'timescale'` once `schema/timescale/apply.ts` converted the database, else `'native'`. */
export async function storageMode(db: QueryExecutorProvider): Promise<StorageMode> {
  return (await storageInfo(db)).mode;
}
