import { type Kysely, sql } from 'kysely';

/**
 * Hourly energy rollup: one row per device and UTC hour summarising its `energy_readings` counter
 * readings of that hour (first and last reading, and `kwh`, the reset-aware increase between its
 * consecutive readings), so a day's energy reads 24 rows per device instead of every reading.
 * Consecutive hours chain exactly: the increase across an hour edge is `increase(last_kwh of the
 * earlier hour, first_kwh of the later one)`, the same rule as between two readings
 * (docs/metrics.md, "Energy from counters").
 *
 * Maintained like `metrics_hourly` (0003): ingest appends one partial per (device, hour) of each
 * batch to `energy_hourly_deltas` in the batch's transaction; the compactor (`lib/telemetry/compactor.ts`)
 * folds them into `energy_hourly`. Readers treat a device-hour that still has deltas pending as raw
 * readings, so a committed reading is visible at once.
 */

const TABLES = ['energy_hourly', 'energy_hourly_deltas'];

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table energy_hourly (
      bucket timestamptz not null,
      org_id uuid not null,
      device_id uuid not null,
      first_time timestamptz not null,
      first_kwh double precision not null,
      last_time timestamptz not null,
      last_kwh double precision not null,
      kwh double precision not null,
      count bigint not null,
      primary key (device_id, bucket)
    );
    create index energy_hourly_bucket_idx on energy_hourly using brin (bucket);
    -- Updated in place by every compaction: room on the page keeps those updates HOT.
    alter table energy_hourly set (fillfactor = 70);

    create table energy_hourly_deltas (
      bucket timestamptz not null,
      org_id uuid not null,
      device_id uuid not null,
      first_time timestamptz not null,
      first_kwh double precision not null,
      last_time timestamptz not null,
      last_kwh double precision not null,
      kwh double precision not null,
      count bigint not null
    );
    create index energy_hourly_deltas_key on energy_hourly_deltas (device_id, bucket);
    -- Rows live for seconds: vacuum often so the table and its index stay small.
    alter table energy_hourly_deltas set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000);
  `.execute(db);
  await sql`grant select, insert, update, delete on ${sql.raw(TABLES.join(', '))} to rulr_app`.execute(db);
  for (const t of TABLES) {
    await sql
      .raw(`alter table ${t} enable row level security; alter table ${t} force row level security;
      create policy tenant_isolation on ${t} using (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid)
        with check (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid);
      create policy system_access on ${t} to public using (current_user <> 'rulr_app') with check (current_user <> 'rulr_app');`)
      .execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop table if exists energy_hourly_deltas;
    drop table if exists energy_hourly;
  `.execute(db);
}
