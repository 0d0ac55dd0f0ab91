import { randomBytes, randomUUID } from 'node:crypto';
import { type ExecutionResult, parse } from 'graphql';
import { hashPassword } from '../lib/auth.js';
import { loadConfig } from '../lib/config.js';
import type { Identity, Role } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { executeSubgraph, type SubgraphModule } from '../lib/subgraph.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

/** A subgraph over its own test database and Redis prefix, with helpers to make tenants and run operations. */
export interface SubgraphFixture<M extends SubgraphModule = SubgraphModule> {
  t: TestDatabase;
  ctx: RoleContext;
  mod: M;
  run<T = Record<string, unknown>>(identity: Identity, query: string, variables?: Record<string, unknown>): Promise<ExecutionResult<T>>;
  /** runs and fails the test on GraphQL errors */
  // biome-ignore lint/suspicious/noExplicitAny: tests read results by shape and assert them by value
  ok<T = Record<string, any>>(identity: Identity, query: string, variables?: Record<string, unknown>): Promise<T>;
  org(slug?: string): Promise<string>;
  user(orgId: string, role: Role, password?: string): Promise<{ id: string; email: string; password: string }>;
  as(orgId: string, role?: Role, kind?: Identity['kind'], scopes?: string[]): Identity;
  close(): Promise<void>;
}

export type DevicesFixture = SubgraphFixture<ReturnType<typeof createDevicesSubgraph>>;

/** The devices subgraph over its own test database; `env` overrides configuration (e.g. `SMTP_URL`). */
export const devicesFixture = (env: Record<string, string> = {}): Promise<DevicesFixture> => subgraphFixture(createDevicesSubgraph, env);

/**
 * `create`'s subgraph over its own test database (migrated) and its own Redis key prefix
 * (`ctx.config.REDIS_PREFIX`); `close()` drops the database and deletes the prefix's keys.
 */
export async function subgraphFixture<M extends SubgraphModule>(
  create: (ctx: RoleContext) => M,
  env: Record<string, string> = {},
): Promise<SubgraphFixture<M>> {
  const t = await createTestDatabase();
  const cfg = {
    ...loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', REDIS_URL, ...env }),
    DATABASE_URL: t.url,
    REDIS_PREFIX: `rulr-test-${randomBytes(4).toString('hex')}:`,
  };
  const ctx = new RoleContext(cfg, createLogger('silent'));
  // The subgraph reads ctx.db: point it at the test database's counted handle.
  Object.defineProperty(ctx, 'db', { get: () => t.db });
  Object.defineProperty(ctx, 'readDb', { get: () => t.db });
  const mod = create(ctx);
  const run = <T>(identity: Identity, query: string, variables?: Record<string, unknown>) =>
    executeSubgraph(mod, parse(query), variables, undefined, identity, false) as Promise<ExecutionResult<T>>;
  return {
    t,
    ctx,
    mod,
    run,
    async ok(identity, query, variables) {
      const r = await run(identity, query, variables);
      if (r.errors?.length) throw new Error(`unexpected GraphQL errors: ${JSON.stringify(r.errors)}`);
      return r.data as never;
    },
    async org(slug = `org-${randomBytes(4).toString('hex')}`) {
      const r = await t.db.insertInto('organizations').values({ slug, name: slug.toUpperCase() }).returning('id').executeTakeFirstOrThrow();
      return r.id;
    },
    async user(orgId, role, password = 'correct horse battery staple') {
      const email = `u-${randomBytes(4).toString('hex')}@example.com`;
      const u = await t.db
        .insertInto('users')
        .values({ email, password_hash: await hashPassword(password) })
        .returning('id')
        .executeTakeFirstOrThrow();
      await t.db.insertInto('memberships').values({ org_id: orgId, user_id: u.id, role }).execute();
      return { id: u.id, email, password };
    },
    as(orgId, role = 'admin', kind = 'user', scopes = []) {
      return { kind, subject: randomUUID(), orgId, role, scopes };
    },
    async close() {
      const keys = await ctx.redis.keys(`${cfg.REDIS_PREFIX}*`);
      if (keys.length) await ctx.redis.del(...keys);
      await ctx.close();
      await t.drop();
    },
  };
}

/** The GraphQL error codes of a result, in order. */
export const codes = (r: ExecutionResult) => (r.errors ?? []).map((e) => e.extensions?.code);
