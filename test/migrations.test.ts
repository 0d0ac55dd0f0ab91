import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createPool } from '../lib/db.js';
import { migrateDown, migrateToLatest } from '../schema/migrate.js';
import { migrations } from '../schema/migrations/index.js';
import { adminUrl, dbUrl } from './support/env.js';

const created: string[] = [];

async function freshDb(): Promise<string> {
  const name = `rulr_mig_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  created.push(name);
  return name;
}
// createPool listens for pool errors: a client still closing when afterEach drops the database
// (with force) must not surface as an unhandled error.
const open = (name: string) => new Kysely<unknown>({ dialect: new PostgresDialect({ pool: createPool(dbUrl(name), 2) }) });
const tables = async (db: Kysely<unknown>) =>
  (
    await sql<{
      t: string;
    }>`select tablename as t from pg_tables where schemaname = 'public' and tablename not like 'rulr_migrations%' and tablename <> 'spatial_ref_sys' order by 1`.execute(
      db,
    )
  ).rows.map((r) => r.t);

describe('migrations', () => {
  afterEach(async () => {
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    for (const name of created.splice(0)) await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  });

  it('go up, all the way down and up again on a fresh database', async () => {
    const db = open(await freshDb());
    try {
      const up = await migrateToLatest(db);
      expect(up.results?.map((r) => r.migrationName)).toEqual(Object.keys(migrations));
      const all = await tables(db);
      expect(all).toEqual(expect.arrayContaining(['organizations', 'devices', 'sites', 'device_profiles', 'api_keys', 'audit_logs']));
      await migrateDown(db, true);
      expect(await tables(db)).toEqual([]);
      await migrateToLatest(db);
      expect(await tables(db)).toEqual(all);
    } finally {
      await db.destroy();
    }
  });

  it('applies each migration once when two replicas migrate one fresh database at the same time', async () => {
    const name = await freshDb();
    const a = open(name);
    const b = open(name);
    try {
      const [ra, rb] = await Promise.all([migrateToLatest(a), migrateToLatest(b)]);
      const applied = [...(ra.results ?? []), ...(rb.results ?? [])].filter((r) => r.status === 'Success').map((r) => r.migrationName);
      expect(applied.sort()).toEqual(Object.keys(migrations).sort());
      const rows = await sql<{ name: string }>`select name from rulr_migrations order by name`.execute(a);
      expect(rows.rows.map((r) => r.name)).toEqual(Object.keys(migrations).sort());
    } finally {
      await a.destroy();
      await b.destroy();
    }
  });
  it('applies a migration numbered below one the database already ran (a release that adds 0010 after 0040)', async () => {
    const db = open(await freshDb());
    try {
      const names = Object.keys(migrations);
      const late = names.find((n) => n.startsWith('0008'));
      if (!late) throw new Error('migration 0008 not in the list');
      const without = Object.fromEntries(Object.entries(migrations).filter(([n]) => n !== late));
      await migrateToLatest(db, without);
      const applied = await sql<{ name: string }>`select name from rulr_migrations order by name`.execute(db);
      expect(applied.rows.map((r) => r.name)).not.toContain(late);
      const up = await migrateToLatest(db);
      expect(up.results?.map((r) => [r.migrationName, r.status])).toEqual([[late, 'Success']]);
      const after = await sql<{ name: string }>`select name from rulr_migrations order by name`.execute(db);
      expect(after.rows.map((r) => r.name)).toEqual(names);
    } finally {
      await db.destroy();
    }
  });
});
