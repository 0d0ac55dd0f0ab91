import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway } from '../gateway/index.js';
import { testContext } from '../gateway/test-fixtures.js';
import { generateApiKey, hashPassword, issueToken } from '../lib/auth.js';
import { signIdentity } from '../lib/identity.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { startSubgraphServer } from '../lib/subgraph.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const PASSWORD = 'correct horse battery staple';

describe('gateway identity', () => {
  let tdb: TestDatabase;
  let ctx: RoleContext;
  const handles: RoleHandle[] = [];
  let gateway = '';
  let remoteGateway = '';
  let subgraph = '';
  let orgId = '';
  const keys: Record<string, { key: string; id: string }> = {};

  beforeAll(async () => {
    tdb = await createTestDatabase();
    ctx = testContext({ DATABASE_URL: tdb.url });
    const org = await tdb.db.insertInto('organizations').values({ slug: 'acme', name: 'Acme' }).returning('id').executeTakeFirstOrThrow();
    orgId = org.id;
    const hash = await hashPassword(PASSWORD);
    for (const role of ['admin', 'viewer'] as const) {
      const u = await tdb.db
        .insertInto('users')
        .values({ email: `${role}@acme.test`, password_hash: hash })
        .returning('id')
        .executeTakeFirstOrThrow();
      await tdb.db.insertInto('memberships').values({ org_id: orgId, user_id: u.id, role }).execute();
    }
    for (const name of ['live', 'revoked', 'expired']) {
      const k = generateApiKey();
      const row = await tdb.db
        .insertInto('api_keys')
        .values({
          org_id: orgId,
          name,
          prefix: k.prefix,
          key_hash: k.hash,
          scopes: ['devices:read'],
          ...(name === 'revoked' ? { revoked_at: new Date() } : {}),
          ...(name === 'expired' ? { expires_at: new Date(Date.now() - 1000) } : {}),
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      keys[name] = { key: k.key, id: row.id };
    }
    const devices = createDevicesSubgraph(ctx);
    const sub = await startSubgraphServer(ctx, devices, 0);
    handles.push(sub);
    subgraph = `http://127.0.0.1:${sub.port}/graphql`;
    const inProcess = await startGateway(ctx, { port: 0, local: { devices } });
    handles.push(inProcess);
    gateway = `http://127.0.0.1:${inProcess.port}/graphql`;
    const remote = await startGateway(ctx, { port: 0, urls: { devices: subgraph } });
    handles.push(remote);
    remoteGateway = `http://127.0.0.1:${remote.port}/graphql`;
  });

  afterAll(async () => {
    for (const h of handles.reverse()) await h.close();
    const rk = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
    if (rk.length) await ctx.redis.del(...rk);
    await ctx.close();
    await tdb?.drop();
  });

  const gql = async (url: string, query: string, headers: Record<string, string> = {}, variables?: Record<string, unknown>) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ query, variables }),
    });
    // biome-ignore lint/suspicious/noExplicitAny: GraphQL responses are checked field by field.
    return { status: res.status, body: (await res.json()) as any };
  };
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
  const login = (url: string, email: string) =>
    gql(
      url,
      'mutation ($e: String!, $p: String!) { login(email: $e, password: $p, organization: "acme") { token role organization { slug } } }',
      {},
      {
        e: email,
        p: PASSWORD,
      },
    );
  const DEVICES = '{ devices(first: 5) { totalCount edges { node { id } } } }';

  it('logs in through the gateway and queries with the returned token, in process and over HTTP', async () => {
    for (const url of [gateway, remoteGateway]) {
      const l = await login(url, 'admin@acme.test');
      expect(l.body.errors).toBeUndefined();
      expect(l.body.data.login).toMatchObject({ role: 'ADMIN', organization: { slug: 'acme' } });
      const r = await gql(url, DEVICES, bearer(l.body.data.login.token));
      expect(r.body).toEqual({ data: { devices: { totalCount: 0, edges: [] } } });
    }
  });

  it('lets anonymous callers reach login only: other fields are refused downstream with UNAUTHENTICATED', async () => {
    for (const url of [gateway, remoteGateway]) {
      const r = await gql(url, DEVICES);
      expect(r.status).toBe(200);
      expect(r.body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
      expect(r.body.data).toEqual({ devices: null });
    }
  });

  it('refuses a token with a bad signature with 401 UNAUTHENTICATED', async () => {
    const forged = await issueToken(
      { userId: 'x', orgId, role: 'admin' },
      { secret: 'not-the-secret-but-long-enough-to-sign-0123456789', issuer: 'rulr', ttlSeconds: 600 },
    );
    const r = await gql(gateway, DEVICES, bearer(forged));
    expect(r.status).toBe(401);
    expect(r.body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
    expect((await gql(gateway, DEVICES, bearer('not.a.jwt'))).status).toBe(401);
  });

  it('refuses an expired token with 401 UNAUTHENTICATED', async () => {
    const old = Math.floor(Date.now() / 1000) - 7200;
    const expired = await issueToken(
      { userId: 'x', orgId, role: 'admin' },
      { secret: ctx.config.RULR_SECRET, issuer: 'rulr', ttlSeconds: 60 },
      old,
    );
    const r = await gql(gateway, DEVICES, bearer(expired));
    expect(r.status).toBe(401);
    expect(r.body.errors[0]).toMatchObject({ message: 'token expired', extensions: { code: 'UNAUTHENTICATED' } });
  });

  it('refuses a mutation to a role below it with FORBIDDEN', async () => {
    const l = await login(gateway, 'viewer@acme.test');
    const r = await gql(gateway, 'mutation { createSite(input: { name: "North" }) { id } }', bearer(l.body.data.login.token));
    expect(r.body.errors[0].extensions.code).toBe('FORBIDDEN');
  });

  it('accepts a live API key as a bearer or x-api-key and records its use', async () => {
    const live = keys.live as { key: string; id: string };
    expect((await gql(gateway, DEVICES, bearer(live.key))).body.data.devices.totalCount).toBe(0);
    expect((await gql(remoteGateway, DEVICES, { 'x-api-key': live.key })).body.data.devices.totalCount).toBe(0);
    const forbidden = await gql(gateway, 'mutation { createSite(input: { name: "N" }) { id } }', { 'x-api-key': live.key });
    expect(forbidden.body.errors[0].extensions.code).toBe('FORBIDDEN');
    await expect
      .poll(
        async () =>
          (await tdb.db.selectFrom('api_keys').select('last_used_at').where('id', '=', live.id).executeTakeFirstOrThrow()).last_used_at,
      )
      .not.toBeNull();
  });

  it('refuses revoked, expired and unknown API keys with 401 UNAUTHENTICATED', async () => {
    const unknown = generateApiKey().key;
    for (const [key, message] of [
      [keys.revoked?.key, 'API key revoked'],
      [keys.expired?.key, 'API key expired'],
      [unknown, 'invalid API key'],
      ['rulr_nonsense', 'invalid API key'],
    ] as const) {
      const r = await gql(gateway, DEVICES, { 'x-api-key': key as string });
      expect(r.status).toBe(401);
      expect(r.body.errors[0]).toEqual({ message, extensions: { code: 'UNAUTHENTICATED' } });
    }
  });

  it('has subgraphs refuse direct calls without the signed identity header', async () => {
    const r = await gql(subgraph, DEVICES);
    expect(r.status).toBe(401);
    expect(r.body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
    const forged = signIdentity(
      { kind: 'user', subject: 'x', orgId, role: 'admin', scopes: [] },
      'some-other-secret-0123456789-0123456789',
      { body: JSON.stringify({ query: DEVICES }) },
    );
    expect((await gql(subgraph, DEVICES, { 'x-rulr-identity': forged })).status).toBe(401);
  });
});
