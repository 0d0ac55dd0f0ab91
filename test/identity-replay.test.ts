import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway } from '../gateway/index.js';
import { testContext } from '../gateway/test-fixtures.js';
import { issueToken } from '../lib/auth.js';
import { IDENTITY_HEADER } from '../lib/identity.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { startSubgraphServer } from '../lib/subgraph.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

interface Captured {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A pass-through HTTP proxy in front of a subgraph that keeps every request it forwards (what an eavesdropper sees). */
async function recordingProxy(target: () => string): Promise<{ url: string; seen: Captured[]; close(): Promise<void> }> {
  const seen: Captured[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    seen.push({ headers: req.headers, body });
    const answer = await fetch(target(), {
      method: 'POST',
      headers: { 'content-type': 'application/json', [IDENTITY_HEADER]: String(req.headers[IDENTITY_HEADER] ?? '') },
      body,
    });
    res.writeHead(answer.status, { 'content-type': 'application/json' });
    res.end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`,
    seen,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe('the gateway identity header, captured between gateway and subgraph', () => {
  let tdb: TestDatabase;
  let ctx: RoleContext;
  const handles: RoleHandle[] = [];
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  const replicas: string[] = [];
  let fast = '';
  let apolloOnly = '';
  let token = '';
  let orgId = '';

  beforeAll(async () => {
    tdb = await createTestDatabase();
    ctx = testContext({ DATABASE_URL: tdb.url, IDENTITY_MAX_AGE_S: '2' });
    orgId = (await tdb.db.insertInto('organizations').values({ slug: 'acme', name: 'Acme' }).returning('id').executeTakeFirstOrThrow()).id;
    token = await issueToken(
      { userId: 'cli', orgId, role: 'admin' },
      { secret: ctx.config.RULR_SECRET, issuer: ctx.config.JWT_ISSUER, ttlSeconds: 600 },
    );
    // two replicas of the devices subgraph, sharing Redis like a deployment does
    for (let i = 0; i < 2; i++) {
      const h = await startSubgraphServer(ctx, createDevicesSubgraph(ctx), 0);
      handles.push(h);
      replicas.push(`http://127.0.0.1:${h.port}/graphql`);
    }
    proxy = await recordingProxy(() => replicas[0] as string);
    for (const fastPath of [true, false]) {
      const gw = await startGateway(ctx, { port: 0, urls: { devices: proxy.url }, fastPath, realtime: false });
      handles.push(gw);
      if (fastPath) fast = `http://127.0.0.1:${gw.port}/graphql`;
      else apolloOnly = `http://127.0.0.1:${gw.port}/graphql`;
    }
  });

  afterAll(async () => {
    for (const h of handles.reverse()) await h.close();
    await proxy?.close();
    const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
    if (keys.length) await ctx.redis.del(...keys);
    await ctx.close();
    await tdb?.drop();
  });

  const viaGateway = async (url: string, query: string) => {
    const before = proxy.seen.length;
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query }),
    });
    const body = (await res.json()) as { data?: unknown; errors?: unknown };
    expect(body.errors).toBeUndefined();
    const captured = proxy.seen.slice(before).at(-1);
    if (!captured) throw new Error('nothing went through the proxy');
    return captured;
  };
  const replay = async (url: string, header: unknown, body: string) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [IDENTITY_HEADER]: String(header) },
      body,
    });
    return {
      status: res.status,
      body: (await res.json()) as { data?: unknown; errors?: { message: string; extensions: { code: string } }[] },
    };
  };
  const sitesNamed = async (name: string) => (await tdb.db.selectFrom('sites').select('id').where('name', '=', name).execute()).length;

  it("is refused with another body: a query's header cannot carry a mutation", async () => {
    const q = await viaGateway(fast, '{ sites { id } }');
    const mutation = JSON.stringify({ query: 'mutation { createSite(input: { name: "Smuggled" }) { id } }' });
    for (const url of replicas) {
      const r = await replay(url, q.headers[IDENTITY_HEADER], mutation);
      expect(r.status).toBe(401);
      expect(r.body.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
      expect(r.body.errors?.[0]?.message).toMatch(/another request/);
    }
    expect(await sitesNamed('Smuggled')).toBe(0);
  });

  it('is refused when a mutation is replayed unchanged, at the replica that ran it and at any other', async () => {
    for (const [route, url] of [
      ['direct', fast],
      ['apollo', apolloOnly],
    ] as const) {
      const name = `North ${route}`;
      const m = await viaGateway(url, `mutation { createSite(input: { name: "${name}" }) { id } }`);
      for (const replica of replicas) {
        const r = await replay(replica, m.headers[IDENTITY_HEADER], m.body);
        expect(r.status, `${route} → ${replica}`).toBe(401);
        expect(r.body.errors?.[0]?.message).toBe('replayed gateway identity');
      }
      expect(await sitesNamed(name), route).toBe(1);
    }
  });

  it('is refused once older than IDENTITY_MAX_AGE_S, even for the very query it was signed for', async () => {
    const q = await viaGateway(fast, '{ sites { name } }');
    // within the window an identical read returns what the eavesdropper already saw
    expect((await replay(replicas[1] as string, q.headers[IDENTITY_HEADER], q.body)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 2_300));
    const late = await replay(replicas[1] as string, q.headers[IDENTITY_HEADER], q.body);
    expect(late.status).toBe(401);
    expect(late.body.errors?.[0]?.message).toBe('gateway identity expired');
  });

  it('is signed over exactly the bytes the gateway sent, on every route', async () => {
    const apollo = await viaGateway(apolloOnly, '{ devices(first: 1) { totalCount } }');
    const direct = await viaGateway(fast, '{ devices(first: 2) { totalCount } }');
    for (const c of [apollo, direct]) {
      const r = await replay(replicas[1] as string, c.headers[IDENTITY_HEADER], c.body);
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({ devices: { totalCount: 0 } });
    }
  });
});
