import { type Kysely, sql } from 'kysely';

/**
 * The schema's default privileges (0001) gave `rulr_app` write access to every table in `public`,
 * including the ones that are not tenant data: Kysely's migration records and lock, and PostGIS's
 * `spatial_ref_sys`. A tenant session could have rewritten migration history or SRID definitions.
 * `rulr_app` keeps reading `spatial_ref_sys` (PostGIS functions look SRIDs up as the caller) and
 * loses everything else on these three.
 */
const SYSTEM_TABLES = ['rulr_migrations', 'rulr_migrations_lock', 'spatial_ref_sys'];

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const t of SYSTEM_TABLES) {
    await sql`revoke all on ${sql.table(t)} from rulr_app`.execute(db);
  }
  await sql`grant select on spatial_ref_sys to rulr_app`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of SYSTEM_TABLES) {
    await sql`grant select, insert, update, delete on ${sql.table(t)} to rulr_app`.execute(db);
  }
}
