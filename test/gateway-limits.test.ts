import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway } from '../gateway/index.js';
import { fixtureSubgraphs, testContext } from '../gateway/test-fixtures.js';
import { issueToken } from '../lib/auth.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';

const ORG = '22222222-2222-4222-8222-222222222222';
const PROD_SECRET = 'a-production-secret-for-the-gateway-tests-0123456789';

describe('gateway limits', () => {
  const fx = fixtureSubgraphs();
  const contexts: RoleContext[] = [];
  const handles: RoleHandle[] = [];
  const urls: Record<string, string> = {};
  const tokens: Record<string, string> = {};

  const start = async (name: string, env: Record<string, string>) => {
    const ctx = testContext(env);
    contexts.push(ctx);
    const h = await startGateway(ctx, { port: 0, local: { devices: fx.devices, metrics: fx.metrics }, supergraphSdl: fx.supergraphSdl });
    handles.push(h);
    urls[name] = `http://127.0.0.1:${h.port}/graphql`;
    tokens[name] = await issueToken(
      { userId: `u-${name}`, orgId: ORG, role: 'viewer' },
      { secret: ctx.config.RULR_SECRET, issuer: ctx.config.JWT_ISSUER, ttlSeconds: 600 },
    );
  };

  beforeAll(async () => {
    await start('strict', {
      GATEWAY_MAX_DEPTH: '3',
      GATEWAY_MAX_ALIASES: '3',
      GATEWAY_MAX_COST: '100',
      GATEWAY_MAX_BODY_BYTES: '2000',
      GATEWAY_TIMEOUT_MS: '300',
    });
    await start('rate', { GATEWAY_RATE_LIMIT: '3', GATEWAY_RATE_WINDOW_S: '60' });
    await start('production', { NODE_ENV: 'production', RULR_SECRET: PROD_SECRET });
    await start('productionIntrospection', { NODE_ENV: 'production', RULR_SECRET: PROD_SECRET, GATEWAY_INTROSPECTION: 'true' });
    await start('development', { NODE_ENV: 'development' });
  });

  afterAll(async () => {
    for (const h of handles.reverse()) await h.close();
    for (const c of contexts) {
      const keys = await c.redis.keys(`${c.config.REDIS_PREFIX}*`);
      if (keys.length) await c.redis.del(...keys);
      await c.close();
    }
  });

  const post = async (gw: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(urls[gw] as string, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens[gw]}`, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    // biome-ignore lint/suspicious/noExplicitAny: GraphQL responses are checked field by field.
    return { status: res.status, headers: res.headers, body: (await res.json()) as any };
  };
  const code = (r: { body: { errors?: { extensions?: { code?: string } }[] } }) => r.body.errors?.[0]?.extensions?.code;

  it('answers an operation within every limit', async () => {
    const r = await post('strict', { query: '{ things(first: 2) { id } }' });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ data: { things: [{ id: '1' }, { id: '2' }] } });
  });

  it('refuses a deep query with QUERY_TOO_DEEP', async () => {
    const r = await post('strict', { query: '{ thing(id: "1") { ...F } } fragment F on Thing { id ... on Thing { tags __typename } }' });
    expect(r.status).toBe(200);
    const deep = await post('strict', { query: '{ a { b { c { d } } } }' });
    expect(deep.status).toBe(400);
    expect(code(deep)).toBe('QUERY_TOO_DEEP');
    expect(deep.body.data).toBeUndefined();
  });

  it('refuses an alias flood with TOO_MANY_ALIASES', async () => {
    const r = await post('strict', { query: `{ ${[1, 2, 3, 4].map((i) => `t${i}: thing(id: "${i}") { id }`).join(' ')} }` });
    expect(r.status).toBe(400);
    expect(code(r)).toBe('TOO_MANY_ALIASES');
  });

  it('refuses an over-cost query with QUERY_TOO_COSTLY', async () => {
    const r = await post('strict', { query: '{ things(first: 60) { id name tags } }' });
    expect(r.status).toBe(400);
    expect(code(r)).toBe('QUERY_TOO_COSTLY');
    expect(r.body.errors[0].message).toMatch(/cost \d+ exceeds the limit of 100/);
  });

  it('refuses an oversized body with 413 PAYLOAD_TOO_LARGE', async () => {
    const r = await post('strict', { query: `{ things { id } } # ${'x'.repeat(3000)}` });
    expect(r.status).toBe(413);
    expect(code(r)).toBe('PAYLOAD_TOO_LARGE');
  });

  it('refuses a batched request with BATCHING_DISABLED', async () => {
    const r = await post('strict', [{ query: '{ whoami }' }, { query: '{ whoami }' }]);
    expect(r.status).toBe(400);
    expect(code(r)).toBe('BATCHING_DISABLED');
  });

  it('answers malformed JSON with 400 BAD_USER_INPUT', async () => {
    const r = await post('strict', '{"query": "{ whoami }"');
    expect(r.status).toBe(400);
    expect(code(r)).toBe('BAD_USER_INPUT');
  });

  it('answers a wrongly typed variable with BAD_USER_INPUT and a clear message', async () => {
    const r = await post('strict', { query: 'query ($n: Int) { things(first: $n) { id } }', variables: { n: 'ten' } });
    expect(r.status).toBe(400);
    expect(code(r)).toBe('BAD_USER_INPUT');
    expect(r.body.errors[0].message).toContain('Int cannot represent non-integer value: "ten"');
  });

  it('stops a slow request with TIMEOUT', async () => {
    const started = Date.now();
    const r = await post('strict', { query: '{ slow(ms: 1500) }' });
    expect(r.status).toBe(504);
    expect(code(r)).toBe('TIMEOUT');
    expect(Date.now() - started).toBeLessThan(1400);
  });

  it('limits each identity to GATEWAY_RATE_LIMIT requests per window with 429 RATE_LIMITED and retry-after', async () => {
    for (let i = 0; i < 3; i++) expect((await post('rate', { query: '{ whoami }' })).status).toBe(200);
    const r = await post('rate', { query: '{ whoami }' });
    expect(r.status).toBe(429);
    expect(code(r)).toBe('RATE_LIMITED');
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    // Anonymous callers are counted by address, separately from the user above.
    const anon = await fetch(urls.rate as string, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"query":"{ __typename }"}',
    });
    expect(anon.status).toBe(200);
  });

  it('refuses introspection in production unless GATEWAY_INTROSPECTION=true', async () => {
    const q = { query: '{ __schema { queryType { name } } }' };
    const refused = await post('production', q);
    expect(refused.status).toBe(403);
    expect(code(refused)).toBe('FORBIDDEN');
    expect(refused.body.errors[0].message).toMatch(/introspection is disabled/);
    const hidden = await post('production', {
      query: '{ things(first: 1) { id } ...Q } fragment Q on Query { __type(name: "Thing") { name } }',
    });
    expect(code(hidden)).toBe('FORBIDDEN');
    expect((await post('productionIntrospection', q)).body).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
    expect((await post('development', q)).body).toEqual({ data: { __schema: { queryType: { name: 'Query' } } } });
  });

  it('masks internal errors in production and never sends stack traces', async () => {
    const r = await post('production', { query: '{ crash }' });
    expect(r.body.errors).toEqual([{ message: 'internal error', path: ['crash'], extensions: { code: 'INTERNAL_SERVER_ERROR' } }]);
    const dev = await post('development', { query: '{ crash }' });
    expect(JSON.stringify(dev.body)).not.toMatch(/stacktrace|at .*\.ts:\d+/);
  });

  it('serves health, readiness and metrics on the same port', async () => {
    const base = (urls.strict as string).replace('/graphql', '');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(await fetch(`${base}/metrics`).then((r) => r.text())).toContain('rulr_gateway_requests_total');
  });
});
