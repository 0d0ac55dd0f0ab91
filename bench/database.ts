import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { createDb } from '../lib/db.js';
import { migrateToLatest } from '../schema/migrate.js';
import type { TestDatabase } from '../test/support/db.js';
import { adminUrl, dbUrl } from '../test/support/env.js';

/**
 * A bench's own database `name`, dropped and migrated afresh (benches run outside vitest, so
 * they cannot clone the test run's template), in the shape `startPlatform({ database })` takes.
 */
export async function benchDatabase(name: string): Promise<TestDatabase> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = dbUrl(name);
  const m = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  await migrateToLatest(m);
  await m.destroy();
  const db = createDb({ url, poolSize: 4 });
  return {
    name,
    url,
    directUrl: url,
    db,
    queries: [],
    async drop() {
      await db.destroy();
      const a = new pg.Client({ connectionString: adminUrl() });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}
