import pg from 'pg';

/**
 * Attempts at reaching tables the way a tenant session could: as `rulr_app` inside one organization's
 * transaction (what `withTenant` sets up), each statement in its own savepoint, everything rolled back.
 */

export type Action = 'select' | 'insert' | 'update' | 'delete';

/** One attempt that ran, or that could not be judged because the statement itself was wrong. */
export interface Reached {
  relation: string;
  action: Action;
  /** `allowed`, or `invalid attempt: <error>` (a syntax error or unknown column: a bug of the test) */
  outcome: string;
}

/** SQLSTATEs that say the attempt itself was malformed, so it proves nothing. */
const INVALID = new Set(['42601', '42703', '42P01', '42883']);

/** Runs `fn` on one connection of `url` as `rulr_app` in a transaction of `orgId`, then rolls back. */
export async function asTenant<T>(url: string, orgId: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('begin');
    await c.query(`select set_config('role', 'rulr_app', true), set_config('rulr.org_id', $1, true)`, [orgId]);
    return await fn(c);
  } finally {
    await c.query('rollback').catch(() => undefined);
    await c.end();
  }
}

/** `sql` in a savepoint: null when it ran, else the error's SQLSTATE and message. */
export async function attempt(c: pg.Client, sql: string, params: unknown[] = []): Promise<{ code: string; message: string } | null> {
  await c.query('savepoint attempt');
  try {
    await c.query(sql, params);
    await c.query('release savepoint attempt');
    return null;
  } catch (e) {
    await c.query('rollback to savepoint attempt');
    return { code: (e as { code?: string }).code ?? '', message: (e as Error).message };
  }
}

/**
 * Tries `actions` on every relation (qualified names) and returns each attempt that ran: an empty list
 * means none of them can be read or written by a tenant session. Attempts fail with `permission
 * denied` (42501), or earlier when TimescaleDB refuses the statement itself (its internal compressed
 * hypertables cannot be planned or written directly); a malformed attempt is returned too. `update`
 * is not tried on a relation without columns (a compressed hypertable's parent).
 */
export async function reachedAsTenant(
  url: string,
  orgId: string,
  relations: string[],
  actions: Action[] = ['select', 'insert', 'update', 'delete'],
): Promise<Reached[]> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const first = new Map<string, string>();
  try {
    const { rows } = await admin.query<{ rel: string; col: string }>(
      `select r as rel, (select quote_ident(attname) from pg_attribute where attrelid = r::regclass and attnum > 0 and not attisdropped
                          order by attnum limit 1) as col
       from unnest($1::text[]) r`,
      [relations],
    );
    for (const r of rows) first.set(r.rel, r.col);
  } finally {
    await admin.end();
  }
  return asTenant(url, orgId, async (c) => {
    const reached: Reached[] = [];
    for (const relation of relations) {
      const col = first.get(relation);
      const statements: Record<Action, string> = {
        select: `select 1 from ${relation} limit 1`,
        insert: `insert into ${relation} default values`,
        update: `update ${relation} set ${col} = ${col}`,
        delete: `delete from ${relation}`,
      };
      for (const action of actions) {
        if (action === 'update' && !col) continue;
        const err = await attempt(c, statements[action]);
        if (!err) reached.push({ relation, action, outcome: 'allowed' });
        else if (INVALID.has(err.code)) reached.push({ relation, action, outcome: `invalid attempt: ${err.code} ${err.message}` });
      }
    }
    return reached;
  });
}

/** Those of `relations` on which `rulr_app` (or PUBLIC) holds any table or column privilege. */
export async function privilegedForApp(url: string, relations: string[]): Promise<string[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ rel: string }>(
      `select r as rel from unnest($1::text[]) r
       where has_table_privilege('rulr_app', r::regclass, 'select, insert, update, delete, truncate, references, trigger')
          or has_any_column_privilege('rulr_app', r::regclass, 'select, insert, update, references')`,
      [relations],
    );
    return rows.map((x) => x.rel);
  } finally {
    await c.end();
  }
}

/**
 * Every relation `rulr_app` may select from (outside PostgreSQL's catalogs, plus the `pg_stats`
 * views, which show sampled column values), with the number of rows in it that, read by a tenant
 * session of `orgId`, mention one of `markers`. A relation it may select from but not read (a
 * view over a table it lacks rights on) counts as 0.
 */
export async function rowsMentioning(url: string, orgId: string, markers: string[]): Promise<Map<string, number>> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  let readable: string[];
  try {
    await admin.query('analyze');
    const { rows } = await admin.query<{ rel: string }>(
      `select format('%I.%I', n.nspname, c.relname) as rel from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind in ('r', 'p', 'v', 'm', 'f')
         and (n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
              or c.relname in ('pg_stats', 'pg_stats_ext', 'pg_stats_ext_exprs'))
         and has_schema_privilege('rulr_app', n.oid, 'usage') and has_table_privilege('rulr_app', c.oid, 'select')
       order by 1`,
    );
    readable = rows.map((r) => r.rel);
  } finally {
    await admin.end();
  }
  return asTenant(url, orgId, async (c) => {
    const found = new Map<string, number>();
    for (const rel of readable) {
      await c.query('savepoint scan');
      try {
        const { rows } = await c.query<{ n: number }>(`select count(*)::int as n from ${rel} t where t::text ilike any($1::text[])`, [
          markers.map((m) => `%${m}%`),
        ]);
        found.set(rel, rows[0]?.n ?? 0);
        await c.query('release savepoint scan');
      } catch (e) {
        await c.query('rollback to savepoint scan');
        if ((e as { code?: string }).code !== '42501') throw new Error(`${rel}: ${(e as Error).message}`);
        found.set(rel, 0);
      }
    }
    return found;
  });
}
