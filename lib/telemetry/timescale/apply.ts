import { Kysely, PostgresDialect, type QueryExecutorProvider, sql } from 'kysely';
import { createPool } from '../../db.js';
import { ConflictError } from '../../errors.js';
import { unscheduleTimescaleJobs } from './jobs.js';
import { REFRESH_QUEUE, recordStorageMode, storageInfo, TIMESCALE_SCHEMA } from './mode.js';

/**
 * The TimescaleDB storage path (docs/timescale.md). Runs after the normal migrations, only where the
 * `timescaledb` extension is installed AND preloaded; plain PostgreSQL never reaches this code.
 */

export interface TimescaleOptions {
  /** Raw `device_metrics`/`energy_readings` retention in days. @default 365 */
  rawDays?: number;
  /** Continuous aggregate retention in days. @default 1825 */
  rollupDays?: number;
  /** Chunks older than this are compressed. @default 7 */
  compressAfterDays?: number;
}

export interface TimescaleAvailability {
  available: boolean;
  /** why not, when not */
  reason?: string;
}

/** Whether `create extension timescaledb` can work here (installed and in `shared_preload_libraries`). */
export async function timescaleAvailability(db: QueryExecutorProvider): Promise<TimescaleAvailability> {
  const { rows } = await sql<{ installed: boolean; preload: string }>`
    select exists (select 1 from pg_available_extensions where name = 'timescaledb') as installed,
           current_setting('shared_preload_libraries') as preload`.execute(db);
  const r = rows[0];
  if (!r?.installed) return { available: false, reason: 'the timescaledb extension is not installed on this server' };
  if (!r.preload.split(',').some((l) => l.trim().replace(/^"|"$/g, '') === 'timescaledb'))
    return { available: false, reason: 'timescaledb is installed but not in shared_preload_libraries' };
  return { available: true };
}

const RAW_TABLES = {
  device_metrics: {
    chunk: '1 day',
    columns: `time timestamptz not null, org_id uuid not null, device_id uuid not null, metric text not null,
              value double precision, text text`,
    indexes: ['create unique index device_metrics_device_metric_time_key on device_metrics (device_id, metric, time)'],
    segmentBy: 'device_id, metric',
  },
  energy_readings: {
    chunk: '7 days',
    columns: 'time timestamptz not null, org_id uuid not null, device_id uuid not null, counter_kwh double precision not null',
    indexes: ['create unique index energy_readings_device_time_key on energy_readings (device_id, time)'],
    segmentBy: 'device_id',
  },
} as const;

/**
 * Definition of `metrics_hourly_cagg`: the rollup contract (numeric readings only, `last` by time).
 * Exported so `compare.ts` can check it as a plain query on builds without continuous aggregates.
 */
export const HOURLY_CAGG_QUERY = `
  select time_bucket(interval '1 hour', time) as bucket, org_id, device_id, metric,
         min(value) as min, max(value) as max, sum(value) as sum, count(value) as count,
         last(value, time) as last, max(time) as last_time
  from device_metrics
  where value is not null and text is null
  group by 1, 2, 3, 4`;

/** Definition of `metrics_daily_cagg`, hierarchical on the hourly one (`hourly`: its name or a subquery). */
export const DAILY_CAGG_QUERY = (hourly: string) => `
  select time_bucket(interval '1 day', bucket) as bucket, org_id, device_id, metric,
         min(min) as min, max(max) as max, sum(sum) as sum, sum(count)::bigint as count,
         last(last, last_time) as last, max(last_time) as last_time
  from ${hourly} h
  group by 1, 2, 3, 4`;

/** The same filter as the tenant policies, for the views in front of hypertables and continuous aggregates. */
const TENANT_FILTER = `current_user <> 'rulr_app' or org_id = nullif(current_setting('rulr.org_id', true), '')::uuid`;

async function isEmpty(db: QueryExecutorProvider, table: string): Promise<boolean> {
  const { rows } = await sql<{ any: boolean }>`select exists (select 1 from ${sql.table(table)}) as any`.execute(db);
  return !rows[0]?.any;
}

/**
 * Makes the partition helpers of 0001/0002 return early for a parent that is no longer a partitioned
 * table, so the maintenance worker's `ensure-partitions` keeps working on hypertables.
 */
async function guardPartitionFunction(db: QueryExecutorProvider, name: string, early: string): Promise<void> {
  const { rows } = await sql<{ def: string }>`
    select pg_get_functiondef(p.oid) as def from pg_proc p
    where p.proname = ${name} and p.pronamespace = 'public'::regnamespace`.execute(db);
  const def = rows[0]?.def;
  if (!def || def.includes('rulr: hypertable guard')) return;
  const guarded = def.replace(
    /\bbegin\b/i,
    `begin
      -- rulr: hypertable guard
      if not exists (select 1 from pg_partitioned_table where partrelid = to_regclass(parent)) then ${early} end if;`,
  );
  if (guarded === def) throw new Error(`cannot guard ${name}: no begin in its body`);
  await sql.raw(guarded).execute(db);
}

/**
 * Drops a fresh (empty) native partitioned table and recreates it as a hypertable, without row
 * security (compression and continuous aggregates refuse it, and so does `COPY` for a role subject to
 * it): {@link isolateTenants} puts it out of `rulr_app`'s reach behind a tenant-filtered view.
 */
async function toHypertable(
  db: QueryExecutorProvider,
  table: string,
  def: { columns: string; indexes: readonly string[]; chunk: string },
  time: string,
): Promise<void> {
  await sql.raw(`drop table ${table} cascade; create table ${table} (${def.columns});`).execute(db);
  for (const ix of def.indexes) await sql.raw(ix).execute(db);
  await sql`select create_hypertable(${table}::regclass, ${time}::name, chunk_time_interval => ${def.chunk}::interval, create_default_indexes => false)`.execute(
    db,
  );
}

/**
 * Moves every hypertable and continuous aggregate still in `public` into {@link TIMESCALE_SCHEMA}
 * and takes every privilege of `rulr_app` (and PUBLIC) on them away, which TimescaleDB carries to
 * their chunks, compressed hypertables and chunks, and materialized hypertables (it copies the ACL to
 * each one it creates and propagates GRANT/REVOKE to the existing ones). A `security_barrier` view
 * with the tenant filter and `with check option` takes each hypertable's name in `public`, so
 * tenant reads and writes (and the subgraphs' SQL) stay as they are; system roles COPY into the
 * hypertables themselves (`rawTables`). Also the layout upgrade of a database converted before
 * (hypertables in `public`, row security on some of them). Leaves `rulr_app` only `select` on
 * `rulr_storage_mode`. Returns what it moved.
 */
async function isolateTenants(db: QueryExecutorProvider): Promise<string[]> {
  await sql.raw(`create schema if not exists ${TIMESCALE_SCHEMA}; revoke all on schema ${TIMESCALE_SCHEMA} from public`).execute(db);
  // the schema's default privileges gave rulr_app every right on the mode row; it only reads it
  await sql`revoke insert, update, delete, truncate, references, trigger on rulr_storage_mode from rulr_app`.execute(db);
  const { rows: tables } = await sql<{ name: string; columns: string; rls: boolean }>`
    select h.hypertable_name as name, c.relrowsecurity as rls,
           (select string_agg(quote_ident(a.attname), ', ' order by a.attnum) from pg_attribute a
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns
    from timescaledb_information.hypertables h
    join pg_class c on c.oid = format('public.%I', h.hypertable_name)::regclass
    where h.hypertable_schema = 'public' order by 1`.execute(db);
  for (const { name, columns, rls } of tables) {
    // row security only on hypertables of the earlier layout (Apache build, audit_logs): the view replaces it
    const noRls = `drop policy if exists tenant_isolation on ${TIMESCALE_SCHEMA}.${name};
      drop policy if exists system_access on ${TIMESCALE_SCHEMA}.${name};
      alter table ${TIMESCALE_SCHEMA}.${name} no force row level security, disable row level security;`;
    await sql
      .raw(`alter table public.${name} set schema ${TIMESCALE_SCHEMA};
            revoke all on ${TIMESCALE_SCHEMA}.${name} from rulr_app, public;
            ${rls ? noRls : ''}
            create view public.${name} with (security_barrier) as
              select ${columns} from ${TIMESCALE_SCHEMA}.${name} where ${TENANT_FILTER}
              with cascaded check option;
            grant select, insert, update, delete on public.${name} to rulr_app;`)
      .execute(db);
  }
  const { rows: caggs } = await sql<{ name: string }>`
    select view_name as name from timescaledb_information.continuous_aggregates where view_schema = 'public' order by 1`.execute(db);
  for (const { name } of caggs)
    await sql
      .raw(`alter materialized view public.${name} set schema ${TIMESCALE_SCHEMA};
            revoke all on ${TIMESCALE_SCHEMA}.${name} from rulr_app, public;`)
      .execute(db);
  const moved = [...tables, ...caggs].map((t) => t.name);
  return moved.length ? [`timescale: ${moved.join(', ')} moved to ${TIMESCALE_SCHEMA}, behind tenant-filtered views for rulr_app`] : [];
}

/**
 * Creates the queue of late readings' time ranges (`rollup_refresh_queue`): ingest adds the range of
 * each batch's readings older than the refresh policies' window, the compactor refreshes the
 * continuous aggregates over it (`refreshQueuedBuckets`). Only with continuous aggregates.
 */
async function refreshQueue(db: QueryExecutorProvider, caggs: boolean): Promise<string[]> {
  if (!caggs) return [];
  const { rows } = await sql<{ t: string | null }>`select to_regclass(${REFRESH_QUEUE})::text as t`.execute(db);
  if (rows[0]?.t) return [];
  await sql
    .raw(`create table ${REFRESH_QUEUE} (
            id bigint generated always as identity primary key,
            from_time timestamptz not null,
            to_time timestamptz not null,
            queued_at timestamptz not null default now())`)
    .execute(db);
  return [`timescale: late readings queue their buckets for a refresh in ${REFRESH_QUEUE}`];
}

/** Leaves TimescaleDB's jobs to the maintenance worker (`lib/telemetry/timescale/jobs.ts`). */
async function takeOverJobs(db: QueryExecutorProvider): Promise<string[]> {
  const n = await unscheduleTimescaleJobs(db);
  return n ? [`timescale: ${n} TimescaleDB jobs taken off its scheduler, run by the maintenance worker`] : [];
}

/**
 * Converts a fresh database to the TimescaleDB layout: hypertables for `device_metrics` (1-day
 * chunks), `energy_readings` (7-day chunks) and `audit_logs` (30-day chunks, when still empty);
 * with the Timescale-licensed build also compression after 7 days, retention policies and the
 * continuous aggregates `metrics_hourly_cagg`/`metrics_daily_cagg` behind the `metrics_hourly`/
 * `metrics_daily` names the metrics subgraph reads. All of them in {@link TIMESCALE_SCHEMA}, out
 * of `rulr_app`'s reach, behind tenant-filtered views (`isolateTenants`). Records the result in
 * `rulr_storage_mode`. Idempotent: on a database already in timescale mode it only brings the layout
 * up to date. Refuses (ConflictError) when the extension is missing or telemetry rows exist
 * (converting live data is a manual operation).
 */
export async function applyTimescale<DB>(db: Kysely<DB>, o: TimescaleOptions = {}): Promise<string[]> {
  const rawDays = o.rawDays ?? 365;
  const rollupDays = o.rollupDays ?? 1825;
  const compressAfter = o.compressAfterDays ?? 7;
  const avail = await timescaleAvailability(db);
  if (!avail.available) throw new ConflictError(`TimescaleDB storage is not possible here: ${avail.reason}`);
  const current = await storageInfo(db);
  if (current.mode === 'timescale') {
    const upgraded = await db
      .transaction()
      .execute(async (tx) => [
        ...(await isolateTenants(tx)),
        ...(await refreshQueue(tx, current.continuousAggregates)),
        ...(current.policies ? await takeOverJobs(tx) : []),
      ]);
    return ['timescale: already applied', ...upgraded];
  }
  const { rows: deltas } = await sql<{ t: string | null }>`select to_regclass('public.metrics_rollup_deltas')::text as t`.execute(db);
  const telemetry = ['device_metrics', 'energy_readings', 'metrics_hourly', 'metrics_daily'];
  if (deltas[0]?.t) telemetry.push('metrics_rollup_deltas');
  // 0004's energy rollup stays a plain table (maintained by ingest and the compactor in both modes)
  const { rows: energy } = await sql<{ t: string | null }>`select to_regclass('public.energy_hourly')::text as t`.execute(db);
  if (energy[0]?.t) telemetry.push('energy_hourly', 'energy_hourly_deltas');
  for (const t of telemetry) {
    if (!(await isEmpty(db, t)))
      throw new ConflictError(`TimescaleDB storage needs a fresh database: ${t} has rows (convert it by hand, see docs/timescale.md)`);
  }
  const out: string[] = [];
  await sql`create extension if not exists timescaledb`.execute(db);
  const { rows: lic } = await sql<{ license: string | null }>`select current_setting('timescaledb.license', true) as license`.execute(db);
  const license = lic[0]?.license ?? 'apache';
  const tsl = license === 'timescale';
  out.push(`timescale: extension ready (license ${license})`);

  await db.transaction().execute(async (tx) => {
    for (const [table, def] of Object.entries(RAW_TABLES)) {
      await toHypertable(tx, table, def, 'time');
      out.push(`timescale: ${table} is a hypertable (${def.chunk} chunks)`);
    }
    if (await isEmpty(tx, 'audit_logs')) {
      await toHypertable(
        tx,
        'audit_logs',
        {
          chunk: '30 days',
          columns: `at timestamptz not null default now(), org_id uuid not null, actor text not null, action text not null,
                    entity_type text not null, entity_id text, before jsonb, after jsonb`,
          indexes: ['create index audit_logs_org_at_idx on audit_logs (org_id, at desc)'],
        },
        'at',
      );
      out.push('timescale: audit_logs is a hypertable (30 days chunks)');
    } else out.push('timescale: audit_logs has rows, left partitioned');
    await guardPartitionFunction(tx, 'rulr_ensure_partitions', 'return 0;');
    await guardPartitionFunction(tx, 'rulr_ensure_monthly_partitions', 'return;');
    await recordStorageMode(tx, { license, continuousAggregates: false, policies: false });
  });
  if (!tsl) {
    out.push('timescale: Apache-only build: no compression, policies or continuous aggregates; rollup tables stay');
    out.push(...(await db.transaction().execute(isolateTenants)));
    return out;
  }

  for (const [table, def] of Object.entries(RAW_TABLES)) {
    await sql
      .raw(`alter table ${table} set (timescaledb.compress, timescaledb.compress_segmentby = '${def.segmentBy}',
            timescaledb.compress_orderby = 'time desc')`)
      .execute(db);
    await sql`select add_compression_policy(${table}::regclass, ${`${compressAfter} days`}::interval)`.execute(db);
    await sql`select add_retention_policy(${table}::regclass, ${`${rawDays} days`}::interval)`.execute(db);
  }
  out.push(`timescale: compression after ${compressAfter} d, raw retention ${rawDays} d`);

  const { rows: live } = await sql<{ h: string | null; d: string | null }>`
    select to_regclass('public.metrics_hourly_live')::text as h, to_regclass('public.metrics_daily_live')::text as d`.execute(db);
  // cascade: 0003's `*_live` views read the rollup tables; they are recreated over the aggregates below
  await sql`drop table metrics_daily cascade; drop table metrics_hourly cascade`.execute(db);
  await sql`
    create materialized view metrics_hourly_cagg
    with (timescaledb.continuous, timescaledb.materialized_only = false) as ${sql.raw(HOURLY_CAGG_QUERY)}
    with no data`.execute(db);
  await sql`
    create materialized view metrics_daily_cagg
    with (timescaledb.continuous, timescaledb.materialized_only = false) as ${sql.raw(DAILY_CAGG_QUERY('metrics_hourly_cagg'))}
    with no data`.execute(db);
  const views: [string, string][] = [
    ['metrics_hourly', 'metrics_hourly_cagg'],
    ['metrics_daily', 'metrics_daily_cagg'],
  ];
  if (live[0]?.h) views.push(['metrics_hourly_live', 'metrics_hourly_cagg']);
  if (live[0]?.d) views.push(['metrics_daily_live', 'metrics_daily_cagg']);
  for (const [name, cagg] of views) {
    await sql
      .raw(`create view ${name} with (security_barrier) as
            select bucket, org_id, device_id, metric, min, max, sum, count, last, last_time from ${cagg}
            where ${TENANT_FILTER};
            grant select on ${name} to rulr_app;`)
      .execute(db);
  }
  await sql`select add_continuous_aggregate_policy('metrics_hourly_cagg', start_offset => ${`${compressAfter} days`}::interval,
            end_offset => interval '1 hour', schedule_interval => interval '30 minutes')`.execute(db);
  await sql`select add_continuous_aggregate_policy('metrics_daily_cagg', start_offset => ${`${compressAfter + 3} days`}::interval,
            end_offset => interval '1 day', schedule_interval => interval '1 hour')`.execute(db);
  for (const cagg of ['metrics_hourly_cagg', 'metrics_daily_cagg'])
    await sql`select add_retention_policy(${cagg}::regclass, ${`${rollupDays} days`}::interval)`.execute(db);
  out.push(`timescale: continuous aggregates metrics_hourly_cagg/metrics_daily_cagg (retention ${rollupDays} d)`);
  await db.transaction().execute(async (tx) => {
    out.push(...(await isolateTenants(tx)), ...(await refreshQueue(tx, true)), ...(await takeOverJobs(tx)));
    // Only now: until here ingest and the workers keep the native rollup behaviour.
    await sql`update rulr_storage_mode set continuous_aggregates = true, policies = true`.execute(tx);
  });
  return out;
}

/**
 * `rulr migrate` hook. `explicit` (`--timescale`): apply or fail loudly. Otherwise apply only where
 * the extension is available and the telemetry tables are still empty; anything else stays native.
 */
export async function migrateTimescale(url: string, o: TimescaleOptions & { explicit?: boolean } = {}): Promise<string[]> {
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: createPool(url, 2) }) });
  try {
    if (!o.explicit) {
      const avail = await timescaleAvailability(db);
      if (!avail.available) return [];
      if ((await storageInfo(db)).mode === 'timescale') return await applyTimescale(db, o);
      for (const t of ['device_metrics', 'energy_readings'])
        if (!(await isEmpty(db, t))) return [`timescale: available but ${t} has rows; storage stays native (see docs/timescale.md)`];
    }
    return await applyTimescale(db, o);
  } finally {
    await db.destroy();
  }
}
