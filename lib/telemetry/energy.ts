/**
 * The energy rollup's SQL shared by ingest, the compactor, maintenance and fixtures (the tables are
 * created by migration 0004_energy_hourly; see it for what the rollup holds).
 */

/**
 * SQL computing energy partials (one row per device and UTC hour, columns of `energy_hourly` in
 * order) from `source`, a relation with `time, org_id, device_id, counter_kwh`. The one definition
 * used by ingest's duplicate-skipping path, the compactor's recompute of overlapping partials, and
 * fixtures; `lib/telemetry/writer.ts` computes the same in JavaScript for its fast path.
 */
export function energyPartialsSql(source: string): string {
  // date_bin on UTC hours = date_trunc('hour', time, 'UTC'), cheaper; grouping by device first
  // lets the window's sort serve the aggregate (no second sort).
  return `select date_bin('1 hour', time, timestamptz '2000-01-01 00:00:00+00') as bucket, org_id, device_id,
           min(time) as first_time, (array_agg(counter_kwh order by time))[1] as first_kwh,
           max(time) as last_time, (array_agg(counter_kwh order by time desc))[1] as last_kwh,
           coalesce(sum(case when prev is null then 0 when counter_kwh >= prev then counter_kwh - prev else counter_kwh end), 0)
             as kwh,
           count(*) as count
      from (select time, org_id, device_id, counter_kwh,
                   lag(counter_kwh) over (partition by device_id, date_bin('1 hour', time, timestamptz '2000-01-01 00:00:00+00') order by time) as prev
              from ${source} energy_partial_rows) energy_partial_src
     group by device_id, 1, org_id`;
}
