// Regenerates schema/db.d.ts (Kysely's database types) from a freshly migrated scratch database, so
// the types always follow the migrations. `npm run db:types` writes the file; `-- --verify` only
// checks it (exit 1 when stale). Uses TEST_PG_URL (default postgres://postgres@127.0.0.1:5432).
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { migrateToLatest } from '../schema/migrate.js';
import { adminUrl, dbUrl } from '../test/support/env.js';

export const ROOT = join(fileURLToPath(new URL('.', import.meta.url)), '..');

/** The one set of kysely-codegen flags; the staleness test uses the same ones. */
export function codegenArgs(url: string): string[] {
  return ['--url', url, '--dialect', 'postgres', '--numeric-parser', 'number', '--out-file', 'schema/db.d.ts'];
}

/** Runs kysely-codegen against `url` from the repository root; returns its exit status and output. */
export function runCodegen(url: string, extra: string[] = []): { status: number; output: string } {
  const bin = join(ROOT, 'node_modules', '.bin', 'kysely-codegen');
  const r = spawnSync(bin, [...codegenArgs(url), ...extra], { cwd: ROOT, encoding: 'utf8' });
  return { status: r.status ?? 1, output: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

async function main(): Promise<number> {
  const name = `rulr_types_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`create database ${name}`);
  try {
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: dbUrl(name), max: 1 }) }) });
    try {
      await migrateToLatest(db);
    } finally {
      await db.destroy();
    }
    const r = runCodegen(dbUrl(name), process.argv.slice(2));
    process.stdout.write(r.output);
    return r.status;
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main();
}
