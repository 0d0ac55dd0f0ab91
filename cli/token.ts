import { sql } from 'kysely';
import { API_SCOPES, generateApiKey, issueToken } from '../lib/auth.js';
import type { Config } from '../lib/config.js';
import { createDb, type Db } from '../lib/db.js';
import { isRole, ROLES } from '../lib/identity.js';

interface CliDb {
  /** reuse this database handle instead of connecting to `DATABASE_URL` (tests) */
  db?: Db | undefined;
  /** return the result without printing it */
  quiet?: boolean | undefined;
}

async function withDb<T>(cfg: Config, o: CliDb, fn: (db: Db) => Promise<T>): Promise<T> {
  const db = o.db ?? createDb({ url: cfg.DATABASE_URL, poolSize: 1 });
  try {
    return await fn(db);
  } finally {
    if (!o.db) await db.destroy();
  }
}

async function orgBySlug(db: Db, slug: string): Promise<{ id: string }> {
  const org = await db.selectFrom('organizations').select('id').where('slug', '=', slug).executeTakeFirst();
  if (!org) throw new Error(`no organization with slug "${slug}"`);
  return org;
}

/**
 * Prints a JWT signed with `RULR_SECRET` for an organization, as `login` would issue. With `user`,
 * the token is that user's and the role may not exceed their membership; without, the subject is
 * `service:cli`.
 */
export async function printToken(
  cfg: Config,
  o: { org: string; role: string; user?: string | undefined; ttl?: string | undefined } & CliDb,
): Promise<string> {
  if (!isRole(o.role)) throw new Error(`--role must be one of ${ROLES.join(', ')}`);
  const role = o.role;
  const ttl = o.ttl === undefined ? cfg.JWT_TTL_SECONDS : Number(o.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error('--ttl must be a positive number of seconds');
  const token = await withDb(cfg, o, async (db) => {
    const org = await orgBySlug(db, o.org);
    let subject = 'service:cli';
    if (o.user) {
      const m = await db
        .selectFrom('users as u')
        .innerJoin('memberships as m', 'm.user_id', 'u.id')
        .select(['u.id', 'm.role'])
        .where(sql`lower(u.email)`, '=', o.user.toLowerCase())
        .where('m.org_id', '=', org.id)
        .executeTakeFirst();
      if (!m) throw new Error(`user ${o.user} is not a member of "${o.org}"`);
      if (ROLES.indexOf(role) > ROLES.indexOf(m.role as (typeof ROLES)[number])) {
        throw new Error(`user ${o.user} is ${m.role} in "${o.org}": cannot issue a ${role} token`);
      }
      subject = m.id;
    }
    return issueToken({ userId: subject, orgId: org.id, role }, { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: ttl });
  });
  if (!o.quiet) console.log(token);
  return token;
}

/** Creates an API key for an organization and prints it once (only its hash is stored). */
export async function createApiKeyCli(
  cfg: Config,
  o: { org: string; name: string; scopes: string } & CliDb,
): Promise<{ id: string; key: string; scopes: string[] }> {
  const scopes = [
    ...new Set(
      o.scopes
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
  const unknown = scopes.filter((s) => !(API_SCOPES as readonly string[]).includes(s));
  if (unknown.length) throw new Error(`unknown scope(s) ${unknown.join(', ')} (known: ${API_SCOPES.join(', ')})`);
  if (!scopes.length) throw new Error('--scopes must name at least one scope');
  const name = o.name.trim();
  if (!name || name.length > 200) throw new Error('--name must be 1 to 200 characters');
  const created = await withDb(cfg, o, async (db) => {
    const org = await orgBySlug(db, o.org);
    const { key, prefix, hash } = generateApiKey();
    return db.transaction().execute(async (tx) => {
      const row = await tx
        .insertInto('api_keys')
        .values({ org_id: org.id, name, prefix, key_hash: hash, scopes })
        .returning('id')
        .executeTakeFirstOrThrow();
      await tx
        .insertInto('audit_logs')
        .values({
          org_id: org.id,
          actor: 'system:cli',
          action: 'api_key.create',
          entity_type: 'api_key',
          entity_id: row.id,
          after: JSON.stringify({ name, prefix, scopes }),
        })
        .execute();
      return { id: row.id, key, scopes };
    });
  });
  if (!o.quiet) {
    console.log(created.key);
    console.error(`API key ${created.id} for "${o.org}" (scopes: ${scopes.join(', ')}); it is shown only this once.`);
  }
  return created;
}
