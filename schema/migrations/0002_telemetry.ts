import { type Kysely, sql } from 'kysely';

/** Telemetry tables (the contract in docs shared by ingest and the metrics subgraph). */
export const TELEMETRY_TABLES = ['device_metrics', 'energy_readings', 'metrics_hourly', 'metrics_daily', 'dead_letters'];

export async function up(db: Kysely<unknown>): Promise<void> {
  // Partitions ahead of time: `unit` is 'day' or 'month'; creates [today-1 unit .. today+ahead units].
  // Partitions are not readable by `rulr_app` directly: tenants read through the parent, where RLS applies.
  await sql`
    create or replace function rulr_ensure_partitions(parent text, unit text, ahead int) returns int
    language plpgsql as $$
    declare
      step interval := case unit when 'day' then interval '1 day' when 'month' then interval '1 month' end;
      start timestamptz := date_trunc(unit, now() at time zone 'UTC') at time zone 'UTC' - step;
      part text;
      made int := 0;
      i int;
    begin
      if step is null then raise exception 'rulr_ensure_partitions: unit must be day or month'; end if;
      for i in 0..ahead + 1 loop
        part := format('%s_%s', parent, to_char(start at time zone 'UTC', case unit when 'day' then 'YYYYMMDD' else 'YYYYMM' end));
        if to_regclass(part) is null then
          begin
            execute format('create table %I partition of %I for values from (%L) to (%L)', part, parent, start, start + step);
            execute format('revoke all on %I from rulr_app', part);
            made := made + 1;
          exception when duplicate_table then null;
            -- rows for this range already sit in the default partition: leave them there
            when check_violation then raise notice 'rulr_ensure_partitions: % overlaps rows in the default partition', part;
          end;
        end if;
        start := start + step;
      end loop;
      return made;
    end $$;
  `.execute(db);

  await sql`
    create table device_metrics (
      time timestamptz not null,
      org_id uuid not null,
      device_id uuid not null,
      metric text not null,
      value double precision,
      text text
    ) partition by range (time);
    create unique index device_metrics_device_metric_time_key on device_metrics (device_id, metric, time);
    create table device_metrics_default partition of device_metrics default;

    create table energy_readings (
      time timestamptz not null,
      org_id uuid not null,
      device_id uuid not null,
      counter_kwh double precision not null
    ) partition by range (time);
    create unique index energy_readings_device_time_key on energy_readings (device_id, time);
    create table energy_readings_default partition of energy_readings default;

    create table metrics_hourly (
      bucket timestamptz not null,
      org_id uuid not null,
      device_id uuid not null,
      metric text not null,
      min double precision not null,
      max double precision not null,
      sum double precision not null,
      count bigint not null,
      last double precision not null,
      last_time timestamptz not null,
      primary key (device_id, metric, bucket)
    );
    create index metrics_hourly_bucket_idx on metrics_hourly using brin (bucket);
    create table metrics_daily (like metrics_hourly including all);
    -- Rollup rows are updated in place by every batch: room on the page keeps those updates HOT.
    alter table metrics_hourly set (fillfactor = 70);
    alter table metrics_daily set (fillfactor = 70);

    create table dead_letters (
      id bigint generated always as identity primary key,
      received_at timestamptz not null default now(),
      org_id uuid,
      device_id uuid,
      topic text not null,
      reason text not null,
      detail text,
      payload text
    );
    create index dead_letters_org_received_idx on dead_letters (org_id, received_at desc);
    create index dead_letters_received_idx on dead_letters (received_at);

    select rulr_ensure_partitions('device_metrics', 'day', 7);
    select rulr_ensure_partitions('energy_readings', 'month', 2);
  `.execute(db);

  await sql`grant select, insert, update, delete on ${sql.raw(TELEMETRY_TABLES.join(', '))} to rulr_app`.execute(db);
  await sql`revoke all on device_metrics_default, energy_readings_default from rulr_app`.execute(db);
  for (const t of TELEMETRY_TABLES) {
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
    drop table if exists dead_letters;
    drop table if exists metrics_daily;
    drop table if exists metrics_hourly;
    drop table if exists energy_readings cascade;
    drop table if exists device_metrics cascade;
    drop function if exists rulr_ensure_partitions(text, text, int);
  `.execute(db);
}
