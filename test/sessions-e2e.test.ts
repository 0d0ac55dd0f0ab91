import { type Client, createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type GatewayHandle, startGateway } from '../gateway/index.js';
import { SessionCheckUnavailableError, SessionGuard } from '../gateway/sessions.js';
import { testContext } from '../gateway/test-fixtures.js';
import { hashPassword } from '../lib/auth.js';
import { parseConsoleLink } from '../lib/contracts/console-links.js';
import { CloseCode } from '../lib/errors.js';
import { createLogger } from '../lib/logger.js';
import { createRedis } from '../lib/redis.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { startSubgraphServer } from '../lib/subgraph.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { SessionStore } from '../subgraphs/devices/repositories/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { startSmtpServer, type TestSmtpServer } from './support/smtp.js';

const PASSWORD = 'correct horse battery staple';

async function until(ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Two gateway replicas (one with the devices subgraph in process, one reaching it over HTTP), sharing Redis. */
describe('sign-in sessions at the gateway', () => {
  let tdb: TestDatabase;
  let ctx: RoleContext;
  const handles: RoleHandle[] = [];
  const clients: Client[] = [];
  let a: GatewayHandle;
  let b: GatewayHandle;
  let orgId = '';
  let smtp: TestSmtpServer;
  const users: Record<string, string> = {};

  beforeAll(async () => {
    tdb = await createTestDatabase();
    smtp = await startSmtpServer();
    ctx = testContext({
      DATABASE_URL: tdb.url,
      GATEWAY_RATE_LIMIT: '100000',
      SMTP_URL: smtp.url,
      MAIL_CONSOLE_URL: 'https://console.acme.test',
    });
    orgId = (await tdb.db.insertInto('organizations').values({ slug: 'acme', name: 'Acme' }).returning('id').executeTakeFirstOrThrow()).id;
    const hash = await hashPassword(PASSWORD);
    for (const [name, role] of [
      ['admin', 'admin'],
      ['alice', 'operator'],
      ['bob', 'viewer'],
    ] as const) {
      const u = await tdb.db
        .insertInto('users')
        .values({ email: `${name}@acme.test`, password_hash: hash })
        .returning('id')
        .executeTakeFirstOrThrow();
      await tdb.db.insertInto('memberships').values({ org_id: orgId, user_id: u.id, role }).execute();
      users[name] = u.id;
    }
    const sub = await startSubgraphServer(ctx, createDevicesSubgraph(ctx), 0);
    handles.push(sub);
    a = await startGateway(ctx, { port: 0, local: { devices: createDevicesSubgraph(ctx) } });
    b = await startGateway(ctx, { port: 0, urls: { devices: `http://127.0.0.1:${sub.port}/graphql` } });
    handles.push(a, b);
    await until(() => a.sessions.listening && b.sessions.listening);
  });

  afterAll(async () => {
    for (const c of clients) await c.dispose();
    for (const h of handles.reverse()) await h.close();
    const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
    if (keys.length) await ctx.redis.del(...keys);
    await ctx.close();
    await tdb?.drop();
    await smtp?.close();
  });

  const gql = async (gw: GatewayHandle, query: string, token?: string, variables?: Record<string, unknown>) => {
    const res = await fetch(`http://127.0.0.1:${gw.port}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    // biome-ignore lint/suspicious/noExplicitAny: GraphQL answers are checked field by field.
    return { status: res.status, body: (await res.json()) as any };
  };
  const login = async (who: string, gw: GatewayHandle = a) => {
    const r = await gql(
      gw,
      `mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token refreshToken sessionId } }`,
      undefined,
      {
        e: `${who}@acme.test`,
        p: PASSWORD,
      },
    );
    expect(r.body.errors).toBeUndefined();
    return r.body.data.login as { token: string; refreshToken: string; sessionId: string };
  };
  const ME = '{ me { email } }';
  const ended = (r: { status: number; body: { errors?: { message: string; extensions: { code: string } }[] } }) => {
    expect(r.status).toBe(401);
    expect(r.body.errors?.[0]).toEqual({ message: 'your session has ended: sign in again', extensions: { code: 'UNAUTHENTICATED' } });
  };
  /** A graphql-ws connection with a live subscription; resolves with its close code when the server closes it. */
  const socket = async (gw: GatewayHandle, token: string) => {
    const before = gw.realtime?.connectionCount ?? 0;
    const c = createClient({
      url: `ws://127.0.0.1:${gw.port}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      retryAttempts: 0,
    });
    clients.push(c);
    const closed = new Promise<number>((resolve) => {
      c.subscribe(
        { query: 'subscription { deviceStatusChanged { online } }' },
        { next: () => undefined, error: (e) => resolve((e as { code: number }).code), complete: () => resolve(1000) },
      );
    });
    await until(() => (gw.realtime?.connectionCount ?? 0) > before && (gw.realtime?.hub.subscriberCount ?? 0) > 0);
    // wrapped: an async function returning the promise itself would wait for the close
    return { closed };
  };

  it('ends a session at every gateway replica at once when it logs out', async () => {
    const s = await login('alice');
    for (const gw of [a, b]) {
      expect((await gql(gw, ME, s.token)).body.data.me.email).toBe('alice@acme.test');
      // trusted from memory now: only the notice can end it here
      expect(gw.sessions.isKnownLive(s.sessionId, users.alice as string)).toBe(true);
    }
    expect((await gql(a, 'mutation { logout }', s.token)).body.data.logout).toBe(true);
    // no wait: the notice reached both replicas before the next request, and both had the session cached
    ended(await gql(a, ME, s.token));
    ended(await gql(b, ME, s.token));
    const refreshed = await gql(b, `mutation($t: String!) { refreshSession(refreshToken: $t) { token } }`, undefined, {
      t: s.refreshToken,
    });
    expect(refreshed.body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
  });

  it("closes a session's WebSocket with 4403 when it logs out, on another replica than the one it is connected to", async () => {
    const s = await login('bob', b);
    const { closed } = await socket(a, s.token);
    expect((await gql(b, 'mutation { logout }', s.token)).body.data.logout).toBe(true);
    expect(await closed).toBe(CloseCode.Forbidden);
  });

  it("closes a removed member's WebSockets with 4403 and refuses their tokens at once", async () => {
    const admin = await login('admin');
    const alice = await login('alice');
    const { closed: closedA } = await socket(a, alice.token);
    const { closed: closedB } = await socket(b, alice.token);
    const r = await gql(a, 'mutation($id: ID!) { removeMember(userId: $id) }', admin.token, { id: users.alice });
    expect(r.body.data.removeMember).toBe(true);
    expect(await closedA).toBe(CloseCode.Forbidden);
    expect(await closedB).toBe(CloseCode.Forbidden);
    ended(await gql(b, ME, alice.token));
    // the admin's own session is untouched
    expect((await gql(b, ME, admin.token)).body.data.me.email).toBe('admin@acme.test');
  });

  it('ends the whole session, both copies of its token, when a used refresh token is presented again', async () => {
    const first = await login('bob');
    const REFRESH = `mutation($t: String!) { refreshSession(refreshToken: $t) { token refreshToken } }`;
    const second = (await gql(a, REFRESH, undefined, { t: first.refreshToken })).body.data.refreshSession;
    expect((await gql(b, ME, second.token)).body.data.me.email).toBe('bob@acme.test');
    const stolen = await gql(b, REFRESH, undefined, { t: first.refreshToken });
    expect(stolen.body.errors[0].message).toMatch(/already used/);
    ended(await gql(a, ME, second.token));
    ended(await gql(b, ME, first.token));
  });

  it('takes an invited person from the mailed link to a working session, and a reset from the mailed link to closed WebSockets', async () => {
    const admin = await login('admin', b);
    const invited = await gql(b, 'mutation { inviteUser(email: "olga@acme.test", role: VIEWER) { status } }', admin.token);
    expect(invited.body.data.inviteUser.status).toBe('PENDING');
    const mail = await smtp.waitFor((m) => m.to.includes('olga@acme.test'));
    const { token } = parseConsoleLink(/(https:\/\/\S+)/.exec(mail.text)?.[1] ?? '');
    const accepted = await gql(
      a,
      'mutation($t: String!) { acceptInvitation(token: $t, password: "olga has a long password") { token role } }',
      undefined,
      {
        t: token,
      },
    );
    expect(accepted.body.data.acceptInvitation.role).toBe('VIEWER');
    const olga = accepted.body.data.acceptInvitation.token as string;
    expect((await gql(b, ME, olga)).body.data.me.email).toBe('olga@acme.test');
    const { closed } = await socket(b, olga);

    expect((await gql(a, 'mutation { requestPasswordReset(email: "olga@acme.test") }')).body.data.requestPasswordReset).toBe(true);
    const resetMail = await smtp.waitFor((m) => m.to.includes('olga@acme.test') && /Reset/.test(m.mail.subject ?? ''));
    const reset = parseConsoleLink(/(https:\/\/\S+)/.exec(resetMail.text)?.[1] ?? '');
    expect(reset.kind).toBe('reset-password');
    const done = await gql(b, 'mutation($t: String!) { resetPassword(token: $t, newPassword: "olga has a new password") }', undefined, {
      t: reset.token,
    });
    expect(done.body.data.resetPassword).toBe(true);
    expect(await closed).toBe(CloseCode.Forbidden);
    ended(await gql(a, ME, olga));
    const again = await gql(a, `mutation { login(email: "olga@acme.test", password: "olga has a new password") { role } }`);
    expect(again.body.data.login.role).toBe('VIEWER');
  });

  describe('a replica that cannot hear the revocation channel', () => {
    const logger = createLogger('silent');
    const store = () => new SessionStore(ctx.redis, ctx.config.REDIS_PREFIX, { idleMs: 600_000, maxAgeMs: 3_600_000 });

    it('looks every session up while deaf, so a notice it missed changes nothing', async () => {
      const subscriber = createRedis(ctx.config.REDIS_URL);
      const guard = new SessionGuard(ctx.redis, subscriber, ctx.config.REDIS_PREFIX, logger);
      let resyncs = 0;
      guard.onResync(() => resyncs++);
      guard.start();
      await expect.poll(() => guard.listening).toBe(true);
      const issued = await store().create({ userId: users.admin as string, orgId, role: 'admin', platform: false });
      const sid = issued.session.id;
      await guard.check(sid, users.admin as string);
      expect(guard.isKnownLive(sid, users.admin as string)).toBe(true);
      expect(resyncs).toBe(1);

      subscriber.disconnect(false);
      await expect.poll(() => guard.listening).toBe(false);
      expect(guard.isKnownLive(sid, users.admin as string)).toBe(false);
      // the session ends while this replica hears nothing: no notice reaches it
      await ctx.redis.del(`${ctx.config.REDIS_PREFIX}session:{${sid}}`);
      await expect(guard.check(sid, users.admin as string)).rejects.toThrow(/session has ended/);

      subscriber.connect().catch(() => undefined);
      await expect.poll(() => guard.listening).toBe(true);
      expect(resyncs).toBe(2);
      await guard.close();
    });

    it('refuses with 503 when Redis cannot answer, and never lets the token through', async () => {
      const dead = createRedis('redis://127.0.0.1:1', { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
      const deadSub = createRedis('redis://127.0.0.1:1', { retryStrategy: () => null });
      const guard = new SessionGuard(dead, deadSub, ctx.config.REDIS_PREFIX, logger);
      const e = await guard.check('AAAAAAAAAAAAAAAAAAAAAA', users.admin as string).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(SessionCheckUnavailableError);
      expect((e as SessionCheckUnavailableError).httpStatus).toBe(503);
      await guard.close();
      dead.disconnect();
    });

    it('refuses a token whose session id names another person', async () => {
      const issued = await store().create({ userId: users.admin as string, orgId, role: 'admin', platform: false });
      await expect(a.sessions.check(issued.session.id, users.bob as string)).rejects.toThrow(/session has ended/);
    });
  });
});
