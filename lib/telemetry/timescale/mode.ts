import { type QueryExecutorProvider, sql } from 'kysely';
import type pg from 'pg';

/**
 * How telemetry is stored: `native` = declarative partitions + rollup tables written by ingest
 * (plain PostgreSQL, the tested path); `timescale` = hypertables (see `lib/telemetry/timescale/apply.ts`).
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

const EXISTS_SQL = "select to_regclass('public.rulr_storage_mode')::text as t";
const INFO_SQL = 'select mode, continuous_aggregates as caggs, policies from rulr_storage_mode limit 1';
type InfoRow = { mode: StorageMode; caggs: boolean; policies: boolean };
const toInfo = (r: InfoRow | undefined): StorageInfo =>
  r ? { mode: r.mode, continuousAggregates: r.caggs, policies: r.policies } : NATIVE;

/**
 * The storage mode recorded by the timescale path in `rulr_storage_mode` (one row). A database
 * without that table (every plain PostgreSQL one) is `native`. Read it once at role start.
 */
export async function storageInfo(db: QueryExecutorProvider): Promise<StorageInfo> {
  const { rows: exists } = await sql.raw<{ t: string | null }>(EXISTS_SQL).execute(db);
  if (!exists[0]?.t) return NATIVE;
  return toInfo((await sql.raw<InfoRow>(INFO_SQL).execute(db)).rows[0]);
}

/**
 * {@link storageInfo} on a plain `pg` connection (ingest's batch writers and the rollup compactor
 * hold their own clients and read it once per connection).
 */
export async function storageInfoOf(client: pg.ClientBase): Promise<StorageInfo> {
  const exists = await client.query<{ t: string | null }>(EXISTS_SQL);
  if (!exists.rows[0]?.t) return NATIVE;
  return toInfo((await client.query<InfoRow>(INFO_SQL)).rows[0]);
}

/**
 * Whether this database keeps `metrics_hourly`/`metrics_daily` as tables fed by rollup deltas
 * (`metrics_rollup_deltas`): false once they are views over continuous aggregates. The hourly energy
 * rollup (`energy_hourly`) is a plain table fed by its deltas in every mode.
 */
export const metricRollupTables = (info: StorageInfo): boolean => !info.continuousAggregates;

/**
 * Schema of the hypertables and continuous aggregates in timescale mode. `rulr_app` has no privilege
 * in it or on anything in it, so none on their chunks either (TimescaleDB copies a hypertable's ACL to
 * every chunk it creates); tenants reach the rows through the tenant-filtered views of the same names
 * in `public` (docs/timescale.md, "Tenant isolation").
 */
export const TIMESCALE_SCHEMA = 'rulr_timescale';

/** Where the raw telemetry is written: the hypertables in timescale mode, the partitioned tables otherwise. */
export interface RawTables {
  deviceMetrics: string;
  energyReadings: string;
}

const RAW_TABLES_SQL = `select coalesce(to_regclass('${TIMESCALE_SCHEMA}.device_metrics')::text, 'device_metrics') as "deviceMetrics",
  coalesce(to_regclass('${TIMESCALE_SCHEMA}.energy_readings')::text, 'energy_readings') as "energyReadings"`;

/**
 * The tables system roles write raw telemetry into (`COPY` cannot target the tenant views). Read it
 * by name, not from the storage mode: a mode recorded by hand (tests) keeps the native tables.
 */
export async function rawTables(db: QueryExecutorProvider): Promise<RawTables> {
  return (await sql.raw<RawTables>(RAW_TABLES_SQL).execute(db)).rows[0] as RawTables;
}

/** {@link rawTables} on a plain `pg` connection (ingest's batch writers). */
export async function rawTablesOf(client: pg.ClientBase): Promise<RawTables> {
  return (await client.query<RawTables>(RAW_TABLES_SQL)).rows[0] as RawTables;
}

/** Time ranges of late readings whose continuous aggregate buckets the compactor refreshes (timescale mode). */
export const REFRESH_QUEUE = `${TIMESCALE_SCHEMA}.rollup_refresh_queue`;

const HOUR_MS = 3_600_000;
const LATE_SQL = `
  select extract(epoch from (config->>'start_offset')::interval) * 1000 as "startMs" from timescaledb_information.jobs
   where proc_name = 'policy_refresh_continuous_aggregate' and hypertable_name = 'metrics_hourly_cagg' limit 1`;

/**
 * Age in ms beyond which a reading is late for the continuous aggregates: older than the hourly refresh
 * policy's window (`start_offset`) less a day (a reading near the window's start may age out of it
 * before the next policy run), at least an hour. Ingest queues the time range of such readings in
 * {@link REFRESH_QUEUE}. Null where there is no queue (no continuous aggregates).
 */
export async function lateReadingAgeOf(client: pg.ClientBase): Promise<number | null> {
  const exists = await client.query<{ t: string | null }>(`select to_regclass('${REFRESH_QUEUE}')::text as t`);
  if (!exists.rows[0]?.t) return null;
  const r = (await client.query<{ startMs: number | null }>(LATE_SQL)).rows[0];
  // no policy, or one without a window start: only the real-time part (under an hour old) is safe
  if (r?.startMs == null) return HOUR_MS;
  return Math.max(HOUR_MS, Number(r.startMs) - 24 * HOUR_MS);
}

/** `'timescale'` once `lib/telemetry/timescale/apply.ts` converted the database, else `'native'`. */
export async function storageMode(db: QueryExecutorProvider): Promise<StorageMode> {
  return (await storageInfo(db)).mode;
}

/**
 * Creates `rulr_storage_mode` and records timescale mode in it (the timescale path does this; tests use
 * it to simulate a converted database on plain PostgreSQL).
 */
export async function recordStorageMode(
  db: QueryExecutorProvider,
  o: { license: string; continuousAggregates: boolean; policies: boolean },
): Promise<void> {
  await sql`
    create table rulr_storage_mode (
      singleton boolean primary key default true check (singleton),
      mode text not null check (mode in ('native', 'timescale')),
      continuous_aggregates boolean not null,
      policies boolean not null,
      license text not null,
      applied_at timestamptz not null default now()
    )`.execute(db);
  await sql`insert into rulr_storage_mode (mode, continuous_aggregates, policies, license)
            values ('timescale', ${o.continuousAggregates}, ${o.policies}, ${o.license})`.execute(db);
  await sql`grant select on rulr_storage_mode to rulr_app`.execute(db);
}
