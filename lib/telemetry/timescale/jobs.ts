import { type QueryExecutorProvider, sql } from 'kysely';

/**
 * TimescaleDB's own background jobs of a database (compression, retention, continuous aggregate
 * refresh, job-history retention), run by the maintenance worker instead of TimescaleDB's scheduler.
 * On PostgreSQL 15.20 every scheduled run ends `Failed` (`cannot drop portal "" while it is being set
 * up`) after its work was committed, while `CALL run_job()` from a client succeeds; see
 * docs/timescale.md, "Background jobs". The telemetry job is left to TimescaleDB (and
 * `timescaledb.telemetry_level`).
 */

/** One job as the maintenance worker names, schedules and runs it. */
export interface TimescaleJob {
  id: number;
  /** `<procedure>` or `<procedure>:<hypertable or continuous aggregate>`, e.g. `policy_compression:device_metrics` */
  name: string;
  /** the job's `schedule_interval` */
  intervalMs: number;
  /** still scheduled by TimescaleDB's own scheduler */
  scheduled: boolean;
}

/** The jobs of TimescaleDB's own procedures in this database, telemetry excepted. */
export async function timescaleJobs(db: QueryExecutorProvider): Promise<TimescaleJob[]> {
  const { rows } = await sql<{ id: number; name: string; ms: number; scheduled: boolean }>`
    select job_id as id, proc_name || coalesce(':' || hypertable_name, '') as name,
           extract(epoch from schedule_interval) * 1000 as ms, scheduled
    from timescaledb_information.jobs
    where proc_schema = '_timescaledb_functions' and proc_name <> 'policy_telemetry'
    order by job_id`.execute(db);
  return rows.map((r) => ({ id: r.id, name: r.name, intervalMs: Number(r.ms), scheduled: r.scheduled }));
}

/** Takes the jobs off TimescaleDB's scheduler (`alter_job(…, scheduled => false)`); returns how many were on it. */
export async function unscheduleTimescaleJobs(db: QueryExecutorProvider): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from timescaledb_information.jobs j, lateral alter_job(j.job_id, scheduled => false)
    where j.proc_schema = '_timescaledb_functions' and j.proc_name <> 'policy_telemetry' and j.scheduled`.execute(db);
  return rows[0]?.n ?? 0;
}

/** Runs one job in the foreground (`CALL run_job`); it commits as it goes, so not inside a transaction. */
export async function runTimescaleJob(db: QueryExecutorProvider, id: number): Promise<void> {
  await sql`call run_job(${sql.lit(id)})`.execute(db);
}
