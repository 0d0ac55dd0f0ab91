import { Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import type { DB } from '../schema/db.js';

export type { DB };
export type Db = Kysely<DB>;
export type Tx = Transaction<DB>;

// Return int8 and numeric as JS numbers (counts, sums); ids are uuids so nothing overflows in practice.
pg.types.setTypeParser(20, (v) => Number(v));
pg.types.setTypeParser(1700, (v) => Number(v));

export interface DbOptions {
  url: string;
  poolSize?: number;
  /** Counts queries (tests use it to prove batching). */
  onQuery?: (sql: string) => void;
}

export function createPool(url: string, max = 10): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, idleTimeoutMillis: 30_000, application_name: 'rulr' });
  pool.on('error', () => {
    /* a broken idle client is dropped by the pool; queries surface their own errors */
  });
  return pool;
}

export function createDb(opts: DbOptions): Db {
  const pool = createPool(opts.url, opts.poolSize ?? 10);
  return new Kysely<DB>({
    dialect: new PostgresDialect({ pool }),
    ...(opts.onQuery
      ? {
          log: (e) => {
            if (e.level === 'query') opts.onQuery?.(e.query.sql);
          },
        }
      : {}),
  });
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (v: unknown): v is string => typeof v === 'string' && UUID.test(v);

/**
 * Runs `fn` in a transaction scoped to one organization: the role drops to `rulr_app` (subject to
 * row-level security) and `rulr.org_id` is set for this transaction only, so the database refuses
 * other tenants' rows even if a query forgets its own filter. Safe behind PgBouncer (transaction mode).
 */
export async function withTenant<T>(db: Db, orgId: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (!isUuid(orgId)) throw new Error('withTenant: orgId must be a uuid');
  return db.transaction().execute(async (tx) => {
    await sql`select set_config('role', 'rulr_app', true), set_config('rulr.org_id', ${orgId}, true)`.execute(tx);
    return fn(tx);
  });
}

export async function pingDb(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}
