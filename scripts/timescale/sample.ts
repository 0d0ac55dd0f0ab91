import { sql } from 'kysely';
import type { Db } from '../../lib/db.js';
import { energyPartialsSql } from '../../lib/telemetry/energy.js';
import { storageInfo } from '../../lib/telemetry/timescale/mode.js';
import { recomputeRollups } from '../../workers/maintenance.js';

/** Deterministic telemetry for comparing storage modes (`compare.ts`, `test/timescale-mode.test.ts`). */
export const ORG = '00000000-0000-4000-8000-00000000c0de';
export const DEVICES = [1, 2, 3].map((i) => `00000000-0000-4000-8000-0000000000d${i}`);
export const FROM = new Date('2026-10-05T00:00:00Z');
export const DAYS = 3;

/**
 * Replaces organization ORG's telemetry with the sample and brings the rollups up to date the way
 * the database's storage mode does; returns a description of that mode.
 */
export async function loadSample(db: Db): Promise<string> {
  const info = await storageInfo(db);
  const to = new Date(FROM.getTime() + DAYS * 86_400_000);
  await sql`delete from device_metrics where org_id = ${ORG}`.execute(db);
  await sql`delete from energy_readings where org_id = ${ORG}`.execute(db);
  await sql`delete from energy_hourly where org_id = ${ORG}`.execute(db);
  await sql`delete from energy_hourly_deltas where org_id = ${ORG}`.execute(db);
  // one reading a minute per device: power (number), lampState (boolean), firmware (string, hourly)
  await sql`
    insert into device_metrics (time, org_id, device_id, metric, value, text)
    select t, ${ORG}::uuid, d.id, m.metric,
           case m.metric when 'power' then ((n * 37 + d.k * 11) % 1000) / 10.0 + d.k
                         when 'lampState' then (n / 90 + d.k) % 2 end,
           case m.metric when 'lampState' then (((n / 90 + d.k) % 2) = 1)::text when 'firmware' then 'v' || (n / 1440) end
    from generate_series(0, ${DAYS * 1440 - 1}) n
    cross join lateral (select ${FROM}::timestamptz + n * interval '1 minute' as t) ts
    cross join unnest(${DEVICES}::uuid[]) with ordinality d(id, k)
    cross join (values ('power'), ('lampState'), ('firmware')) m(metric)
    where m.metric <> 'firmware' or n % 60 = 0`.execute(db);
  // cumulative counter; device 1 restarts at zero on day 2 at 12:00 (meter replaced); with their
  // hourly energy partials, as ingest writes them (both modes keep `energy_hourly` the same way)
  await sql`
    with ins as (
      insert into energy_readings (time, org_id, device_id, counter_kwh)
      select ${FROM}::timestamptz + n * interval '5 minutes', ${ORG}::uuid, d.id,
             case when d.k = 1 and n >= 432 then (n - 432) * 0.011 else 100 * d.k + n * (0.01 + d.k / 1000.0) end
      from generate_series(0, ${(DAYS * 1440) / 5 - 1}) n
      cross join unnest(${DEVICES}::uuid[]) with ordinality d(id, k)
      returning time, org_id, device_id, counter_kwh
    )
    insert into energy_hourly_deltas (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
    ${sql.raw(energyPartialsSql('ins'))}`.execute(db);
  // rollup tables rebuilt, or continuous aggregates refreshed; energy_hourly rebuilt in both modes
  await recomputeRollups(db, { from: FROM, to }, info);
  return `${info.mode}${info.continuousAggregates ? ' + continuous aggregates' : ' + rollup tables'}`;
}
