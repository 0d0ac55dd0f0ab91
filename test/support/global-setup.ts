import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrateToLatest } from '../../schema/migrate.js';
import { adminUrl, dbUrl } from './env.js';

let template = '';

/**
 * Migrates one template database per test run; each test file then clones it
 * (`createTestDatabase`) so files run in parallel without sharing rows.
 */
export async function setup(project: TestProject): Promise<void> {
  template = `rulr_tpl_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`create database ${template}`);
  await admin.end();
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: dbUrl(template), max: 1 }) }) });
  await migrateToLatest(db);
  await db.destroy();
  project.provide('templateDb', template);
}

export async function teardown(): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`drop database if exists ${template} with (force)`);
  // Clone databases left behind by crashed runs of this template.
  const { rows } = await admin.query<{ datname: string }>(`select datname from pg_database where datname like $1`, [`${template}_%`]);
  for (const r of rows) await admin.query(`drop database if exists ${r.datname} with (force)`);
  await admin.end();
}

declare module 'vitest' {
  export interface ProvidedContext {
    templateDb: string;
  }
}
