import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrateToLatest } from '../../schema/migrate.js';
import { adminUrl, dbUrl } from './env.js';

let template = '';

/**
 * The `pgbouncer` project's pass is only worth something through PgBouncer in transaction mode:
 * its admin console (`SHOW CONFIG`) must say so, or the run stops here.
 */
async function checkPooler(base: string): Promise<void> {
  const c = new pg.Client({ connectionString: `${base}/pgbouncer` });
  const hint = 'run scripts/setup-services.sh, or set TEST_PG_POOLER_URL= (empty) to leave the PgBouncer pass out';
  try {
    await c.connect();
    const { rows } = await c.query<{ key: string; value: string }>('show config');
    const mode = rows.find((r) => r.key === 'pool_mode')?.value;
    if (mode !== 'transaction') throw new Error(`pool_mode is ${mode ?? 'unknown'}, not transaction`);
  } catch (e) {
    throw new Error(`TEST_PG_POOLER_URL=${base} is not a PgBouncer in transaction mode (${(e as Error).message}); ${hint}`);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * Migrates one template database per test run (directly, never through PgBouncer); each test file
 * then clones it (`createTestDatabase`) so files run in parallel without sharing rows.
 */
export async function setup(project: TestProject): Promise<void> {
  const pooler = project.config.env?.TEST_PG_POOLER_URL;
  if (pooler) await checkPooler(pooler);
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
  if (!template) return; // setup stopped before creating it
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
