import { type Kysely, type Migration, type MigrationResultSet, Migrator, NO_MIGRATIONS } from 'kysely';
import { migrations } from './migrations/index.js';

/**
 * Migration numbers are reserved per feature area (docs/decisions.md), so a release can bring a
 * migration numbered below one a database already ran (0010 after 0040): it is applied then, in
 * name order among the pending ones, instead of Kysely refusing the whole run.
 */
function migrator(db: Kysely<unknown>, list: Record<string, Migration>): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => list },
    migrationTableName: 'rulr_migrations',
    migrationLockTableName: 'rulr_migrations_lock',
    allowUnorderedMigrations: true,
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
export async function migrateToLatest(db: Kysely<unknown>, list: Record<string, Migration> = migrations): Promise<MigrationResultSet> {
  return check(await migrator(db, list).migrateToLatest());
}

export async function migrateDown(db: Kysely<unknown>, all = false): Promise<MigrationResultSet> {
  const m = migrator(db, migrations);
  return check(all ? await m.migrateTo(NO_MIGRATIONS) : await m.migrateDown());
}
