import { type Kysely, sql } from 'kysely';

/**
 * Append-only rollup deltas: ingest's hot transaction only INSERTS (raw rows by COPY plus one partial
 * aggregate per device, metric and UTC hour of the batch, here), and the compactor
 * (`lib/telemetry/compactor.ts`) folds the deltas into `metrics_hourly` / `metrics_daily` in one
 * transaction a few seconds later. Updating the two rollup rows of every (device, metric, bucket) in
 * every batch made PostgreSQL, not ingest, the bottleneck.
 *
 * Readers stay exact at every moment through the `metrics_hourly_live` / `metrics_daily_live` views:
 * rollups and not-yet-compacted deltas, re-aggregated (the compactor deletes the deltas and upserts
 * the rollups atomically, so a statement sees a delta in exactly one of the two places).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table metrics_rollup_deltas (
      bucket timestamptz not null,
      org_id uuid not null,
      device_id uuid not null,
      metric text not null,
      min double precision not null,
      max double precision not null,
      sum double precision not null,
      count bigint not null,
      last double precision not null,
      last_time timestamptz not null
    );
    create index metrics_rollup_deltas_key on metrics_rollup_deltas (device_id, metric, bucket);
    -- Rows live for seconds: vacuum often so the table and its index stay small.
    alter table metrics_rollup_deltas set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
      autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000);

    create view metrics_hourly_live with (security_invoker = true) as
      select bucket, org_id, device_id, metric, min(min) as min, max(max) as max, sum(sum) as sum,
             sum(count)::bigint as count, (array_agg(last order by last_time desc))[1] as last, max(last_time) as last_time
      from (
        select bucket, org_id, device_id, metric, min, max, sum, count, last, last_time from metrics_hourly
        union all
        select bucket, org_id, device_id, metric, min, max, sum, count, last, last_time from metrics_rollup_deltas
      ) r
      group by bucket, org_id, device_id, metric;

    create view metrics_daily_live with (security_invoker = true) as
      select bucket, org_id, device_id, metric, min(min) as min, max(max) as max, sum(sum) as sum,
             sum(count)::bigint as count, (array_agg(last order by last_time desc))[1] as last, max(last_time) as last_time
      from (
        select bucket, org_id, device_id, metric, min, max, sum, count, last, last_time from metrics_daily
        union all
        select date_trunc('day', bucket, 'UTC'), org_id, device_id, metric, min, max, sum, count, last, last_time
          from metrics_rollup_deltas
      ) r
      group by bucket, org_id, device_id, metric;

    grant select, insert, update, delete on metrics_rollup_deltas to rulr_app;
    grant select on metrics_hourly_live, metrics_daily_live to rulr_app;
    alter table metrics_rollup_deltas enable row level security;
    alter table metrics_rollup_deltas force row level security;
    create policy tenant_isolation on metrics_rollup_deltas using (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid)
      with check (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid);
    create policy system_access on metrics_rollup_deltas to public using (current_user <> 'rulr_app') with check (current_user <> 'rulr_app');
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop view if exists metrics_daily_live;
    drop view if exists metrics_hourly_live;
    drop table if exists metrics_rollup_deltas;
  `.execute(db);
}
