import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway } from '../gateway/index.js';
import { testContext } from '../gateway/test-fixtures.js';
import { issueToken } from '../lib/auth.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { startSubgraphServer } from '../lib/subgraph.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

/**
 * A RULR_SECRET rotation rolled the way docs/operations.md says (subgraphs first, the gateway last,
 * then RULR_SECRET_PREVIOUS emptied), over real gateways and subgraph servers: at each step people
 * stay signed in, and what the old secret signed stops working only when it is no longer given.
 */
describe('rotating RULR_SECRET across the gateway and a subgraph', () => {
  const OLD = randomBytes(32).toString('base64url');
  const NEW = randomBytes(32).toString('base64url');
  let tdb: TestDatabase;
  const contexts: RoleContext[] = [];
  const handles: RoleHandle[] = [];
  const gateways: Record<string, string> = {};
  const tokens: Record<'old' | 'new', string> = { old: '', new: '' };

  beforeAll(async () => {
    tdb = await createTestDatabase();
    const ctxOf = (env: Record<string, string>) => {
      const ctx = testContext({ DATABASE_URL: tdb.url, ...env });
      contexts.push(ctx);
      return ctx;
    };
    const before = ctxOf({ RULR_SECRET: OLD });
    const during = ctxOf({ RULR_SECRET: NEW, RULR_SECRET_PREVIOUS: OLD });
    const after = ctxOf({ RULR_SECRET: NEW });
    const orgId = (
      await tdb.db.insertInto('organizations').values({ slug: 'acme', name: 'Acme' }).returning('id').executeTakeFirstOrThrow()
    ).id;
    const claims = { userId: 'someone', orgId, role: 'admin' as const };
    const jwt = { issuer: before.config.JWT_ISSUER, ttlSeconds: 600 };
    tokens.old = await issueToken(claims, { ...jwt, secret: OLD });
    tokens.new = await issueToken(claims, { ...jwt, secret: NEW });
    const subgraph = async (ctx: RoleContext) => {
      const h = await startSubgraphServer(ctx, createDevicesSubgraph(ctx), 0);
      handles.push(h);
      return `http://127.0.0.1:${h.port}/graphql`;
    };
    const rolled = await subgraph(during);
    const done = await subgraph(after);
    for (const [name, ctx, devices] of [
      ['old gateway, rolled subgraph', before, rolled],
      ['rolled gateway, rolled subgraph', during, rolled],
      ['done gateway, done subgraph', after, done],
      ['old gateway, done subgraph', before, done],
    ] as const) {
      const gw = await startGateway(ctx, { port: 0, urls: { devices }, realtime: false });
      handles.push(gw);
      gateways[name] = `http://127.0.0.1:${gw.port}/graphql`;
    }
  });

  afterAll(async () => {
    for (const h of handles.reverse()) await h.close();
    for (const ctx of contexts) {
      const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
      if (keys.length) await ctx.redis.del(...keys);
      await ctx.close();
    }
    await tdb?.drop();
  });

  const sites = async (gateway: string, token: string) => {
    const res = await fetch(gateways[gateway] as string, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ sites { id } }' }),
    });
    const body = (await res.json()) as { data?: { sites: unknown[] }; errors?: { message: string; extensions?: { code?: string } }[] };
    return body.errors ? `${body.errors[0]?.extensions?.code}: ${body.errors[0]?.message}` : 'ok';
  };

  it('keeps working while the subgraphs have the new secret and the gateway still signs with the old one', async () => {
    expect(await sites('old gateway, rolled subgraph', tokens.old)).toBe('ok');
  });

  it('accepts tokens of both secrets once the gateway has rolled too, and signs its headers with the new one', async () => {
    expect(await sites('rolled gateway, rolled subgraph', tokens.old)).toBe('ok');
    expect(await sites('rolled gateway, rolled subgraph', tokens.new)).toBe('ok');
  });

  it('refuses what the old secret signed once RULR_SECRET_PREVIOUS is emptied: its tokens, and a gateway still on it', async () => {
    expect(await sites('done gateway, done subgraph', tokens.new)).toBe('ok');
    expect(await sites('done gateway, done subgraph', tokens.old)).toMatch(/^UNAUTHENTICATED: invalid token/);
    // a gateway left on the old secret: the subgraph refuses its identity headers (401), which the
    // gateway reports as the subgraph being unavailable (not the person's fault)
    expect(await sites('old gateway, done subgraph', tokens.old)).toMatch(/^SUBGRAPH_UNAVAILABLE: the devices subgraph/);
  });
});
