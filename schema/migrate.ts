import { type Kysely, type MigrationResultSet, Migrator, NO_MIGRATIONS } from 'kysely';
import { migrations } from './migrations/index.js';

function migrator(db: Kysely<unknown>): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: 'rulr_migrations',
    migrationLockTableName: 'rulr_migrations_lock',
  });
}

function check(r: MigrationResultSet): MigrationResultSet {
  if (r.error) throw r.error instanceof Error ? r.error : new Error(String(r.error));
  return r;
}

/**
 * Brings the database to the newest migration. Kysely's migrator holds an advisory lock for the
 * whole run, so replicas that start together apply each migration exactly once.
 */
export async function migrateToLatest(db: Kysely<unknown>): Promise<MigrationResultSet> {
  return check(await migrator(db).migrateToLatest());
}

export async function migrateDown(db: Kysely<unknown>, all = false): Promise<MigrationResultSet> {
  return check(all ? await migrator(db).migrateTo(NO_MIGRATIONS) : await migrator(db).migrateDown());
}
