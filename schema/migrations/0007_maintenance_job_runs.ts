import { type Kysely, sql } from 'kysely';

/**
 * The last run of each periodic maintenance job (`workers/maintenance.ts`): partition upkeep,
 * retention and, in TimescaleDB mode, each TimescaleDB policy job the worker runs. Kept in the
 * database so every worker replica exports the same `rulr_maintenance_job_*` gauges and a restart
 * loses nothing. No tenant data: `rulr_app` gets nothing on it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table maintenance_job_runs (
      name text primary key,
      interval_s double precision not null check (interval_s > 0),
      registered_at timestamptz not null default now(),
      last_started_at timestamptz,
      last_succeeded_at timestamptz,
      last_failed_at timestamptz,
      last_duration_s double precision,
      last_error text
    );
    revoke all on maintenance_job_runs from rulr_app`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table if exists maintenance_job_runs`.execute(db);
}
