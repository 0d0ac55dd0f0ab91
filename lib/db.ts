import { type CompiledQuery, Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
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

/** The pool (and query hook) behind each Db made by `createDb`, for {@link tenantRead}. */
const pools = new WeakMap<Db, { pool: pg.Pool; onQuery?: ((sql: string) => void) | undefined }>();

export function createDb(opts: DbOptions): Db {
  const pool = createPool(opts.url, opts.poolSize ?? 10);
  const db = new Kysely<DB>({
    dialect: new PostgresDialect({ pool }),
    ...(opts.onQuery
      ? {
          log: (e) => {
            if (e.level === 'query') opts.onQuery?.(e.query.sql);
          },
        }
      : {}),
  });
  pools.set(db, { pool, onQuery: opts.onQuery });
  return db;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (v: unknown): v is string => typeof v === 'string' && UUID.test(v);

/** A PostgreSQL unique violation (SQLSTATE 23505), for mapping to CONFLICT. */
export const isUniqueViolation = (e: unknown) => (e as { code?: string } | null)?.code === '23505';

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

/**
 * One long-lived connection of its own (ingest's batch writers, the rollup compactor): opened on first
 * use and prepared by `setup`; a connection that errors is dropped, and the next `get()` opens another.
 */
export class DedicatedClient {
  private client?: pg.Client;

  constructor(private readonly o: { url: string; applicationName: string; setup?: (c: pg.Client) => Promise<void> }) {}

  async get(): Promise<pg.Client> {
    if (this.client) return this.client;
    const c = new pg.Client({ connectionString: this.o.url, application_name: this.o.applicationName, connectionTimeoutMillis: 5000 });
    c.on('error', () => {
      if (this.client === c) this.client = undefined;
    });
    try {
      await c.connect();
      await this.o.setup?.(c);
    } catch (e) {
      await c.end().catch(() => undefined);
      throw e;
    }
    this.client = c;
    return c;
  }

  /** Drops the connection (after a failure its transaction state is unknown). */
  async reset(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}

export async function pingDb(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}

/**
 * One SQL literal for a bound parameter: the same text node-postgres would send for `$n` (its own
 * `prepareValue`), quoted with its own `escapeLiteral`, so the literal is untyped exactly like the
 * parameter was and the server resolves its type from the context in the same way.
 */
function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  const text = (pg as unknown as { utils: { prepareValue(v: unknown): unknown } }).utils.prepareValue(value);
  if (text === null) return 'NULL';
  if (typeof text !== 'string') throw new Error('tenantRead: binary parameters cannot be inlined');
  return pg.escapeLiteral(text);
}

/** What may start a quoted string, a comment or a placeholder (`inlineParameters`). */
const SPECIAL = /['"$-]/g;

/**
 * Replaces `$n` placeholders with literals, skipping quoted strings, quoted identifiers and
 * comments (a `$` followed by a digit cannot start a dollar-quoted string).
 */
export function inlineParameters(text: string, params: readonly unknown[]): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < text.length && !(text[j] === c && text[j + 1] !== c)) j += text[j] === c ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === '-' && text[i + 1] === '-') {
      const j = text.indexOf('\n', i);
      out += j < 0 ? text.slice(i) : text.slice(i, j);
      i = j < 0 ? text.length : j;
    } else if (c === '$' && /[0-9]/.test(text[i + 1] ?? '')) {
      let j = i + 1;
      while (j < text.length && /[0-9]/.test(text[j] as string)) j++;
      const n = Number(text.slice(i + 1, j));
      if (n < 1 || n > params.length) throw new Error(`tenantRead: no value for $${n}`);
      out += literal(params[n - 1]);
      i = j;
    } else {
      // an ordinary run, up to the next character that may start one of the cases above
      SPECIAL.lastIndex = i + 1;
      const j = SPECIAL.exec(text)?.index ?? text.length;
      out += text.slice(i, j);
      i = j;
    }
  }
  return out;
}

/** The value of the decimal digits of `t` from `from` to `to`, or -1 if one is not a digit. */
function digits(t: string, from: number, to: number): number {
  let v = 0;
  for (let i = from; i < to; i++) {
    const d = t.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

const parseDefault = (oid: number, format?: string) => pg.types.getTypeParser(oid, (format ?? 'text') as 'text');

/**
 * timestamptz as a UTC session writes it (`2026-11-27 10:48:23.154652+00`) decoded without the three
 * regular expressions of pg's own parser (postgres-date) and to the same Date (same arithmetic);
 * any other form (offsets, BC, infinity, years before 1000) goes to pg's parser.
 */
export function parseTimestamptz(t: string): Date {
  const n = t.length;
  if (
    n >= 22 &&
    t.charCodeAt(n - 3) === 43 &&
    t.charCodeAt(n - 2) === 48 &&
    t.charCodeAt(n - 1) === 48 &&
    t.charCodeAt(4) === 45 &&
    t.charCodeAt(7) === 45 &&
    t.charCodeAt(10) === 32 &&
    t.charCodeAt(13) === 58 &&
    t.charCodeAt(16) === 58 &&
    (n === 22 || (n >= 24 && t.charCodeAt(19) === 46 && digits(t, 20, n - 3) >= 0))
  ) {
    const y = digits(t, 0, 4);
    const mo = digits(t, 5, 7);
    const d = digits(t, 8, 10);
    const h = digits(t, 11, 13);
    const mi = digits(t, 14, 16);
    const s = digits(t, 17, 19);
    if (y >= 1000 && mo >= 0 && d >= 0 && h >= 0 && mi >= 0 && s >= 0) {
      return new Date(Date.UTC(y, mo - 1, d, h, mi, s, n === 22 ? 0 : 1000 * Number.parseFloat(t.slice(19, n - 3))));
    }
  }
  return parseDefault(1184)(t) as Date;
}

/** The type parsers of {@link tenantRead}: pg's own, with a faster timestamptz. */
const readTypes = {
  getTypeParser: (oid: number, format?: string) => (oid === 1184 && format !== 'binary' ? parseTimestamptz : parseDefault(oid, format)),
};

/**
 * Read-only statements in one tenant transaction, sent in ONE round trip: `begin read only`, the
 * tenant settings of {@link withTenant}, the statements (parameters inlined as literals), `commit`,
 * as one simple-protocol query. A request's hot reads (a page of devices with its sites and profiles,
 * a DataLoader batch) thus cost one network round trip instead of four or more; row-level security
 * applies exactly as in `withTenant`. Returns each statement's rows, in order.
 */
export async function tenantRead(
  db: Db,
  orgId: string,
  queries: readonly Pick<CompiledQuery, 'sql' | 'parameters'>[],
): Promise<Record<string, unknown>[][]> {
  if (!isUuid(orgId)) throw new Error('tenantRead: orgId must be a uuid');
  const entry = pools.get(db);
  if (!entry) throw new Error('tenantRead: the Db was not made by createDb (no pool to send one round trip on)');
  const statements = [
    'begin read only',
    `select set_config('role', 'rulr_app', true), set_config('rulr.org_id', '${orgId}', true)`,
    ...queries.map((q) => inlineParameters(q.sql, q.parameters)),
    'commit',
  ];
  if (entry.onQuery) for (const s of statements) entry.onQuery(s);
  const client = await entry.pool.connect();
  let broken: Error | undefined;
  try {
    const res = (await client.query({ text: statements.join(';\n'), types: readTypes })) as unknown as pg.QueryResult[] | pg.QueryResult;
    const results = Array.isArray(res) ? res : [res];
    return queries.map((_, i) => (results[i + 2]?.rows ?? []) as Record<string, unknown>[]);
  } catch (e) {
    // The failed statement aborted the transaction (and skipped the rest of the string).
    await client.query('rollback').catch((err: Error) => {
      broken = err;
    });
    throw e;
  } finally {
    client.release(broken);
  }
}

/** The rows of one read-only statement, through {@link tenantRead} (one round trip). */
export async function tenantReadRows<T = Record<string, unknown>>(
  db: Db,
  orgId: string,
  query: Pick<CompiledQuery, 'sql' | 'parameters'>,
): Promise<T[]> {
  const [rows] = await tenantRead(db, orgId, [query]);
  return (rows ?? []) as T[];
}
