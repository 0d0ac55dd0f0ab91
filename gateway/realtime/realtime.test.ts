import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildSchema, execute, GraphQLError, type GraphQLSchema } from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { eventsChannel, type RealtimeEvent } from '../../lib/contracts/events.js';
import { CloseCode, UnauthenticatedError } from '../../lib/errors.js';
import type { Identity } from '../../lib/identity.js';
import { createLogger } from '../../lib/logger.js';
import { registry } from '../../lib/metrics.js';
import { createRedis, type Redis } from '../../lib/redis.js';
import { REDIS_URL } from '../../test/support/env.js';
import { RealtimeServer } from './server.js';

// A small federated-looking API schema served in memory: the gateway's follow-up executor is what
// this file replaces; Redis pub/sub and the graphql-ws client are real.
const schema: GraphQLSchema = buildSchema(`
  type Query { devicesByIds(ids: [ID!]!): [Device]! sitesByIds(ids: [ID!]!): [Site]! commandJob(id: ID!): CommandJob }
  type CommandJob { id: ID! status: String! }
  type CommandJobEvent { job: CommandJob! }
  type Site { id: ID! name: String! }
  type Device { id: ID! name: String! site: Site }
  type Reading { metric: String! value: Float ts: String! text: String }
  type TelemetryEvent { device: Device! readings: [Reading!]! }
  type DeviceStatusEvent { device: Device! online: Boolean! note: String }
  type Subscription {
    telemetryUpdated(deviceIds: [ID!], siteId: ID): TelemetryEvent!
    deviceStatusChanged(siteId: ID): DeviceStatusEvent!
    commandJobUpdated(jobId: ID!): CommandJobEvent!
    thingUpdated(thingId: ID): DeviceStatusEvent!
  }
`);

const ORG_A = randomUUID();
const ORG_B = randomUUID();
const sites = new Map([
  ['s-a', { id: 's-a', name: 'Main Street', org: ORG_A }],
  ['s-a2', { id: 's-a2', name: 'Side Street', org: ORG_A }],
  ['s-b', { id: 's-b', name: 'Other Town', org: ORG_B }],
]);
const devices = new Map([
  ['d-a1', { id: 'd-a1', name: 'Lamp A1', siteId: 's-a', org: ORG_A }],
  ['d-a2', { id: 'd-a2', name: 'Lamp A2', siteId: 's-a2', org: ORG_A }],
  ['d-b1', { id: 'd-b1', name: 'Lamp B1', siteId: 's-b', org: ORG_B }],
]);
let followUpCalls = 0;
const root = {
  devicesByIds: ({ ids }: { ids: string[] }, ctx: Identity) => {
    followUpCalls++;
    return ids.map((id) => {
      const d = devices.get(id);
      return d && d.org === ctx.orgId ? { ...d, site: () => sites.get(d.siteId) } : null;
    });
  },
  sitesByIds: ({ ids }: { ids: string[] }, ctx: Identity) => ids.map((id) => (sites.get(id)?.org === ctx.orgId ? sites.get(id) : null)),
  commandJob: ({ id }: { id: string }, ctx: Identity) => (jobs.get(id)?.org === ctx.orgId ? jobs.get(id) : null),
};
const jobs = new Map([
  ['j-a', { id: 'j-a', status: 'RUNNING', org: ORG_A }],
  ['j-b', { id: 'j-b', status: 'RUNNING', org: ORG_B }],
]);

const identities: Record<string, Identity> = {
  A: { kind: 'user', subject: 'ua', orgId: ORG_A, role: 'viewer', scopes: [] },
  B: { kind: 'user', subject: 'ub', orgId: ORG_B, role: 'viewer', scopes: [] },
};

const prefix = `test:${randomUUID()}:`;
let publisher: Redis;
const servers: { http: Server; rt: RealtimeServer; url: string }[] = [];
const clients: Client[] = [];

async function startServer(opts: Partial<ConstructorParameters<typeof RealtimeServer>[1]> = {}) {
  const http = createServer();
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const rt = new RealtimeServer(http, {
    schema: () => schema,
    authenticate: async (payload) => {
      const token = payload?.token as string | undefined;
      if (token === 'expiring') return { identity: identities.A as Identity, expiresAt: Date.now() + 300 };
      const id = token ? identities[token] : undefined;
      if (!id) throw new UnauthenticatedError('invalid token');
      return { identity: id };
    },
    execute: async (document, variables, operationName, identity) =>
      execute({
        schema,
        document,
        variableValues: variables,
        operationName: operationName ?? null,
        rootValue: root,
        contextValue: identity,
      }),
    checkLimits: (doc) => (JSON.stringify(doc).length > 20_000 ? new GraphQLError('too big') : null),
    redisSubscriber: createRedis(REDIS_URL),
    redisPrefix: prefix,
    logger: createLogger('silent'),
    mask: false,
    ...opts,
  });
  const s = { http, rt, url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}/graphql` };
  servers.push(s);
  return s;
}

function client(url: string, token: string | undefined): Client {
  const c = createClient({ url, webSocketImpl: WebSocket, connectionParams: token ? { token } : {}, retryAttempts: 0, lazy: true });
  clients.push(c);
  return c;
}

interface Collected {
  events: unknown[];
  errors: unknown[];
  done: Promise<void>;
  stop: () => void;
}

function collect(c: Client, query: string, variables: Record<string, unknown> = {}): Collected {
  const events: unknown[] = [];
  const errors: unknown[] = [];
  let stop = () => {};
  const done = new Promise<void>((resolve) => {
    stop = c.subscribe(
      { query, variables },
      {
        next: (v) => events.push(v),
        error: (e) => {
          errors.push(e);
          resolve();
        },
        complete: () => resolve(),
      },
    );
  });
  return { events, errors, done, stop };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const t = Date.now();
  while (!cond()) {
    if (Date.now() - t > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits until every server has as many subscribers as expected (the subscribe handshake is async). */
async function subscribed(n: number, server = servers[0]) {
  await until(() => server?.rt.hub.subscriberCount === n);
  await server?.rt.hub.settled();
}

const telemetry = (orgId: string, deviceId: string, siteId: string, value: number): RealtimeEvent => ({
  field: 'telemetryUpdated',
  orgId,
  filter: { deviceId, siteId, sitePath: [siteId] },
  data: { device: { id: deviceId }, readings: [{ metric: 'power', value, ts: new Date().toISOString() }] },
  coalesce: deviceId,
});

/** A counter's total over its label sets (the servers run in this process, so its registry is ours). */
async function counterValue(name: string): Promise<number> {
  const m = registry.getSingleMetric(name);
  return m ? (await m.get()).values.reduce((n, v) => n + v.value, 0) : 0;
}

const publish = (e: RealtimeEvent) => publisher.publish(eventsChannel(prefix, e.orgId), JSON.stringify(e));

beforeAll(() => {
  publisher = createRedis(REDIS_URL);
});
afterEach(async () => {
  for (const c of clients.splice(0)) await c.dispose();
  for (const s of servers.splice(0)) {
    await s.rt.close();
    await new Promise((r) => s.http.close(r));
  }
});
afterAll(async () => {
  await publisher.quit();
});

describe('federated subscriptions over graphql-ws', () => {
  it('should deliver an event with fields resolved through the graph, aliases included', async () => {
    const s = await startServer();
    const sub = collect(
      client(s.url, 'A'),
      'subscription { t: telemetryUpdated(siteId: "s-a") { device { label: name site { name } } readings { metric value } } }',
    );
    await subscribed(1);
    await publish(telemetry(ORG_A, 'd-a1', 's-a', 42));
    await until(() => sub.events.length === 1);
    expect(sub.events[0]).toEqual({
      data: { t: { device: { label: 'Lamp A1', site: { name: 'Main Street' } }, readings: [{ metric: 'power', value: 42 }] } },
    });
  });

  it('should frame payloads of every WebSocket length class intact, in order, for subscriptions sharing a payload', async () => {
    const s = await startServer();
    const q = 'subscription { deviceStatusChanged { online note } }';
    const one = collect(client(s.url, 'A'), q);
    const two = collect(client(s.url, 'A'), q);
    await subscribed(2);
    // 7-bit, 16-bit and 64-bit frame lengths (< 126, < 65,536, larger), and a multi-byte character
    const notes = ['', 'é'.repeat(60), 'x'.repeat(5000), `ü${'y'.repeat(70_000)}`];
    for (const [i, note] of notes.entries()) {
      await publish({ field: 'deviceStatusChanged', orgId: ORG_A, filter: { deviceId: 'd-a1' }, data: { online: i % 2 === 0, note } });
    }
    await until(() => one.events.length === notes.length && two.events.length === notes.length);
    const expected = notes.map((note, i) => ({ data: { deviceStatusChanged: { online: i % 2 === 0, note } } }));
    expect(one.events).toEqual(expected);
    expect(two.events).toEqual(expected);
  });

  it('should never show one organisation the events of another, even without a site filter', async () => {
    const s = await startServer();
    const b = collect(client(s.url, 'B'), 'subscription { telemetryUpdated { device { id } } }');
    const a = collect(client(s.url, 'A'), 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(2);
    await publish(telemetry(ORG_A, 'd-a1', 's-a', 1));
    await publish(telemetry(ORG_B, 'd-b1', 's-b', 2));
    await until(() => a.events.length === 1 && b.events.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(a.events).toEqual([{ data: { telemetryUpdated: { device: { id: 'd-a1' } } } }]);
    expect(b.events).toEqual([{ data: { telemetryUpdated: { device: { id: 'd-b1' } } } }]);
  });

  it('should deliver every envelope of an array message in order, skipping and counting a malformed one', async () => {
    const s = await startServer();
    const sub = collect(client(s.url, 'A'), 'subscription { telemetryUpdated { device { id } readings { value } } }');
    await subscribed(1);
    const invalidBefore = await counterValue('rulr_realtime_events_invalid_total');
    const batch = [telemetry(ORG_A, 'd-a1', 's-a', 1), { field: 'telemetryUpdated', orgId: ORG_A }, telemetry(ORG_A, 'd-a2', 's-a2', 2)];
    await publisher.publish(eventsChannel(prefix, ORG_A), JSON.stringify(batch));
    await until(() => sub.events.length === 2);
    expect(sub.events).toEqual([
      { data: { telemetryUpdated: { device: { id: 'd-a1' }, readings: [{ value: 1 }] } } },
      { data: { telemetryUpdated: { device: { id: 'd-a2' }, readings: [{ value: 2 }] } } },
    ]);
    expect((await counterValue('rulr_realtime_events_invalid_total')) - invalidBefore).toBe(1);
  });

  it('should filter by device ids and by site subtree', async () => {
    const s = await startServer();
    const byDevice = collect(client(s.url, 'A'), 'subscription($ids: [ID!]) { telemetryUpdated(deviceIds: $ids) { device { id } } }', {
      ids: ['d-a2'],
    });
    const bySite = collect(client(s.url, 'A'), 'subscription { telemetryUpdated(siteId: "s-a") { device { id } } }');
    await subscribed(2);
    await publish(telemetry(ORG_A, 'd-a1', 's-a', 1));
    await publish(telemetry(ORG_A, 'd-a2', 's-a2', 1));
    // a device in a child site of s-a: its event carries s-a in its path
    await publish({ ...telemetry(ORG_A, 'd-a2', 's-a2', 3), filter: { deviceId: 'd-a2', siteId: 's-a2', sitePath: ['s-a', 's-a2'] } });
    await until(() => byDevice.events.length === 2 && bySite.events.length === 2);
    expect(
      byDevice.events.map((e) => (e as { data: { telemetryUpdated: { device: { id: string } } } }).data.telemetryUpdated.device.id),
    ).toEqual(['d-a2', 'd-a2']);
    expect(
      bySite.events.map((e) => (e as { data: { telemetryUpdated: { device: { id: string } } } }).data.telemetryUpdated.device.id),
    ).toEqual(['d-a1', 'd-a2']);
  });

  it('should resolve entity fields with one follow-up per batch shared by subscribers with the same selection', async () => {
    const s = await startServer();
    const subs = Array.from({ length: 20 }, () => collect(client(s.url, 'A'), 'subscription { telemetryUpdated { device { name } } }'));
    await subscribed(20);
    followUpCalls = 0;
    await Promise.all(Array.from({ length: 10 }, (_, i) => publish(telemetry(ORG_A, i % 2 ? 'd-a1' : 'd-a2', 's-a', i))));
    await until(() => subs.every((x) => x.events.length === 10));
    // 10 events for 20 subscribers: batches of events share one query, never one per subscriber per event
    expect(followUpCalls).toBeGreaterThanOrEqual(1);
    expect(followUpCalls).toBeLessThanOrEqual(10);
  });

  it('should refuse a subscription to a site the identity cannot see', async () => {
    const s = await startServer();
    const sub = collect(client(s.url, 'A'), 'subscription { telemetryUpdated(siteId: "s-b") { device { id } } }');
    await sub.done;
    expect(JSON.stringify(sub.errors)).toContain('FORBIDDEN');
    expect(s.rt.hub.subscriberCount).toBe(0);
  });

  it("should refuse a job filter of another organisation and accept the identity's own job", async () => {
    const s = await startServer();
    const q = 'subscription($j: ID!) { commandJobUpdated(jobId: $j) { job { id } } }';
    const foreign = collect(client(s.url, 'A'), q, { j: 'j-b' });
    await foreign.done;
    expect(JSON.stringify(foreign.errors)).toContain('FORBIDDEN');
    collect(client(s.url, 'A'), q, { j: 'j-a' });
    await subscribed(1);
  });

  it('should refuse a missing or mistyped required variable instead of subscribing without the filter', async () => {
    const s = await startServer();
    const q = 'subscription($j: ID!) { commandJobUpdated(jobId: $j) { job { id } } }';
    const missing = collect(client(s.url, 'A'), q, {});
    await missing.done;
    expect(JSON.stringify(missing.errors)).toContain('BAD_USER_INPUT');
    expect(JSON.stringify(missing.errors)).toContain('$j');
    const mistyped = collect(client(s.url, 'A'), q, { j: { any: 1 } });
    await mistyped.done;
    expect(JSON.stringify(mistyped.errors)).toContain('BAD_USER_INPUT');
    expect(s.rt.hub.subscriberCount).toBe(0);
  });

  it('should refuse an id filter that no query can check (fail closed)', async () => {
    const s = await startServer();
    const sub = collect(client(s.url, 'A'), 'subscription { thingUpdated(thingId: "t-1") { online } }');
    await sub.done;
    expect(JSON.stringify(sub.errors)).toContain('thingId cannot be checked');
    expect(s.rt.hub.subscriberCount).toBe(0);
  });

  it('should close a connection without credentials with 4401', async () => {
    const s = await startServer();
    const sub = collect(client(s.url, undefined), 'subscription { telemetryUpdated { device { id } } }');
    await sub.done;
    expect((sub.errors[0] as { code: number }).code).toBe(CloseCode.Unauthorized);
  });

  it('should close a connection whose token expires with 4403', async () => {
    const s = await startServer();
    const sub = collect(client(s.url, 'expiring'), 'subscription { telemetryUpdated { device { id } } }');
    await sub.done;
    expect((sub.errors[0] as { code: number }).code).toBe(CloseCode.Forbidden);
  });

  it("should count every operation over the socket against the identity's rate limit", async () => {
    const used = new Map<string, number>();
    const s = await startServer({
      rateLimit: async (identity) => {
        const n = (used.get(identity.subject) ?? 0) + 1;
        used.set(identity.subject, n);
        return n > 2 ? 17 : null;
      },
    });
    const c = client(s.url, 'A');
    collect(c, 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(1);
    const query = collect(c, 'query($ids: [ID!]!) { devicesByIds(ids: $ids) { id } }', { ids: ['d-a1'] });
    await query.done;
    expect(query.events).toEqual([{ data: { devicesByIds: [{ id: 'd-a1' }] } }]);
    const third = collect(c, 'subscription { deviceStatusChanged { online } }');
    await third.done;
    expect(third.errors).toHaveLength(1);
    expect(JSON.stringify(third.errors)).toContain('RATE_LIMITED');
    expect(JSON.stringify(third.errors)).toContain('retry in 17 s');
    // another identity has its own budget
    const other = collect(client(s.url, 'B'), 'subscription { deviceStatusChanged { online } }');
    await subscribed(2);
    expect(other.errors).toEqual([]);
  });

  it('should refuse subscriptions beyond the per-connection limit and over-limit documents', async () => {
    const s = await startServer({ maxSubscriptionsPerConnection: 1 });
    const c = client(s.url, 'A');
    collect(c, 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(1);
    const second = collect(c, 'subscription { deviceStatusChanged { online } }');
    await second.done;
    expect(JSON.stringify(second.errors)).toContain('RATE_LIMITED');
    const huge = collect(
      client(s.url, 'A'),
      `subscription { telemetryUpdated { ${Array.from({ length: 400 }, (_, i) => `a${i}: readings { metric }`).join(' ')} } }`,
    );
    await huge.done;
    expect(JSON.stringify(huge.errors)).toContain('too big');
  });

  it('should deliver one copy per subscriber from each of two gateway processes', async () => {
    const s1 = await startServer();
    const s2 = await startServer();
    const a = collect(client(s1.url, 'A'), 'subscription { telemetryUpdated { device { id } } }');
    const b = collect(client(s2.url, 'A'), 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(1, s1);
    await subscribed(1, s2);
    await publish(telemetry(ORG_A, 'd-a1', 's-a', 1));
    await until(() => a.events.length === 1 && b.events.length === 1);
    await new Promise((r) => setTimeout(r, 150));
    expect(a.events).toHaveLength(1);
    expect(b.events).toHaveLength(1);
  });

  it('should not let a client that stops reading delay a fast one, and should close it when status events pile up', async () => {
    const s = await startServer({ softBufferBytes: 4096, hardBufferBytes: 64 * 1024 });
    const fast = collect(client(s.url, 'A'), 'subscription { deviceStatusChanged { online device { id } } }');
    // The slow client speaks the protocol by hand, then stops reading from its socket.
    const slow = new WebSocket(s.url, 'graphql-transport-ws');
    const closed = new Promise<number>((r) => slow.on('close', (code) => r(code)));
    await new Promise((r) => slow.on('open', r));
    slow.send(JSON.stringify({ type: 'connection_init', payload: { token: 'A' } }));
    await new Promise((r) => slow.once('message', r));
    slow.send(
      JSON.stringify({
        id: '1',
        type: 'subscribe',
        payload: { query: 'subscription { deviceStatusChanged { online note device { id name } } }' },
      }),
    );
    await subscribed(2);
    (slow as unknown as { _socket: { pause(): void } })._socket.pause();
    // ~10 MB of status events: more than the loopback socket buffers (~4 MB) hold for the slow
    // reader, yet below Redis's pub/sub output-buffer limit for the gateway's own subscription.
    const n = 2500;
    const note = 'x'.repeat(4000);
    for (let i = 0; i < n; i++) {
      void publish({
        field: 'deviceStatusChanged',
        orgId: ORG_A,
        filter: { deviceId: 'd-a1' },
        data: { device: { id: 'd-a1' }, online: i % 2 === 0, note },
      });
    }
    // the fast subscriber gets every status event (none dropped) while the slow one is stuck
    await until(() => fast.events.length === n, 30_000);
    expect(fast.events).toHaveLength(n);
    // in publish order, across the hub's batches (their follow-ups overlap)
    const online = fast.events.map((e) => (e as { data: { deviceStatusChanged: { online: boolean } } }).data.deviceStatusChanged.online);
    expect(online).toEqual(Array.from({ length: n }, (_, i) => i % 2 === 0));
    // once the slow client reads again it finds it was disconnected with the slow-consumer code
    (slow as unknown as { _socket: { resume(): void } })._socket.resume();
    expect(await closed).toBe(CloseCode.SlowConsumer);
  });

  it('should coalesce the telemetry of a lagging client to the newest values instead of disconnecting it', async () => {
    const s = await startServer({ softBufferBytes: 4096, hardBufferBytes: 64 * 1024 });
    const slow = new WebSocket(s.url, 'graphql-transport-ws');
    const frames: { payload?: { data: { telemetryUpdated: { readings: { value: number }[] } } } }[] = [];
    let closedCode = 0;
    slow.on('close', (code) => {
      closedCode = code;
    });
    await new Promise((r) => slow.on('open', r));
    slow.send(JSON.stringify({ type: 'connection_init', payload: { token: 'A' } }));
    await new Promise((r) => slow.once('message', r));
    slow.on('message', (m) => frames.push(JSON.parse(m.toString())));
    slow.send(
      JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { telemetryUpdated { readings { value text } } }' } }),
    );
    await subscribed(1);
    const socket = (slow as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    const n = 2500;
    const text = 'y'.repeat(4000);
    for (let i = 0; i < n; i++) {
      const e = telemetry(ORG_A, 'd-a1', 's-a', i);
      (e.data as { readings: { text?: string }[] }).readings[0]!.text = text;
      void publish(e);
    }
    await new Promise((r) => setTimeout(r, 1500));
    socket.resume();
    await until(() => frames.at(-1)?.payload?.data.telemetryUpdated.readings[0]?.value === n - 1, 30_000);
    expect(frames.length).toBeLessThan(n);
    expect(closedCode).toBe(0);
  });

  it('should let a client reconnect and resubscribe', async () => {
    const s = await startServer();
    const c1 = client(s.url, 'A');
    const first = collect(c1, 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(1);
    await c1.dispose();
    await first.done;
    await until(() => s.rt.hub.subscriberCount === 0);
    const second = collect(client(s.url, 'A'), 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(1);
    await publish(telemetry(ORG_A, 'd-a1', 's-a', 1));
    await until(() => second.events.length === 1);
    expect(first.events).toHaveLength(0);
  });
});
