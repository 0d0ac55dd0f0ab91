import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { createDb, type Db } from '../../lib/db.js';
import { adminUrl, appDbUrl, dbUrl } from './env.js';

export interface TestDatabase {
  name: string;
  /** what the application is given: through PgBouncer in the `pgbouncer` project ({@link appDbUrl}) */
  url: string;
  /** straight to PostgreSQL, whatever the project */
  directUrl: string;
  db: Db;
  /** number of SQL statements run through `db` since the last reset */
  queries: string[];
  drop(): Promise<void>;
}

/** A fresh, migrated database of this test file's own, cloned from the run's template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const template = inject('templateDb');
  const name = `${template}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  // CREATE DATABASE … TEMPLATE fails while another session is connected to the template; retry briefly.
  for (let i = 0; ; i++) {
    try {
      await admin.query(`create database ${name} template ${template}`);
      break;
    } catch (e) {
      if (i > 20) throw e;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  await admin.end();
  const queries: string[] = [];
  const db = createDb({ url: appDbUrl(name), poolSize: 5, onQuery: (q) => queries.push(q) });
  return {
    name,
    url: appDbUrl(name),
    directUrl: dbUrl(name),
    db,
    queries,
    async drop() {
      await db.destroy();
      const a = new pg.Client({ connectionString: adminUrl() });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}
