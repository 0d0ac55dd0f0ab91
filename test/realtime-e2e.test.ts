import { randomUUID } from 'node:crypto';
import { type Client, createClient } from 'graphql-ws';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type GatewayHandle, startGateway } from '../gateway/index.js';
import { type IngestHandle, startIngest } from '../ingest/index.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { contextFor, ingestEnv, publisher, seedFleet, until } from '../ingest/testing/fixtures.js';
import { issueToken } from '../lib/auth.js';
import { CloseCode } from '../lib/errors.js';
import type { RoleContext } from '../lib/role.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createSubgraph as createMetricsSubgraph } from '../subgraphs/metrics/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// MQTT → ingest → PostgreSQL → Redis → gateway → graphql-ws client, every piece real.
let t: TestDatabase;
let broker: Broker;
let ctx: RoleContext;
let ingest: IngestHandle;
const gateways: GatewayHandle[] = [];
let pub: MqttClient;
const clients: Client[] = [];

interface Tenant {
  orgId: string;
  deviceIds: string[];
  rootSite: string;
  childSite: string;
  token: string;
}
let a: Tenant;
let b: Tenant;

const label = (id: string) => id.replaceAll('-', '_');

async function tenant(devices: number): Promise<Tenant> {
  const fleet = await seedFleet(t.url, { devices });
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  const rootSite = randomUUID();
  const childSite = randomUUID();
  await c.query('insert into sites (id, org_id, name, path) values ($1, $3, $4, $5::ltree), ($2, $3, $6, $7::ltree)', [
    rootSite,
    childSite,
    fleet.orgId,
    'City',
    label(rootSite),
    'Main Street',
    `${label(rootSite)}.${label(childSite)}`,
  ]);
  // device 0 in the root site, the others in the child site
  await c.query('update devices set site_id = $2 where id = $1', [fleet.deviceIds[0], rootSite]);
  await c.query('update devices set site_id = $2 where id = any($1::uuid[])', [fleet.deviceIds.slice(1), childSite]);
  await c.end();
  const cfg = ctx.config;
  const token = await issueToken(
    { userId: randomUUID(), orgId: fleet.orgId, role: 'viewer' },
    { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 600 },
  );
  return { orgId: fleet.orgId, deviceIds: fleet.deviceIds, rootSite, childSite, token };
}

function client(gw: GatewayHandle, token: string | undefined): Client {
  const c = createClient({
    url: `ws://127.0.0.1:${gw.port}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
  });
  clients.push(c);
  return c;
}

function collect(c: Client, query: string, variables: Record<string, unknown> = {}) {
  const events: { data?: unknown; errors?: unknown }[] = [];
  const errors: unknown[] = [];
  const done = new Promise<void>((resolve) => {
    c.subscribe(
      { query, variables },
      {
        next: (v) => events.push(v as { data?: unknown }),
        error: (e) => {
          errors.push(e);
          resolve();
        },
        complete: () => resolve(),
      },
    );
  });
  return { events, errors, done };
}

async function subscribed(gw: GatewayHandle, n: number) {
  await until(() => gw.realtime?.hub.subscriberCount === n, 10_000, `${n} subscribers`);
  await gw.realtime?.hub.settled();
}

async function newGateway(): Promise<GatewayHandle> {
  const gw = await startGateway(ctx, { port: 0, local: { devices: createDevicesSubgraph(ctx), metrics: createMetricsSubgraph(ctx) } });
  gateways.push(gw);
  return gw;
}

const send = (deviceId: string, values: Record<string, unknown>) =>
  pub.publishAsync(`devices/${deviceId}/telemetry`, JSON.stringify({ ts: Date.now(), values }), { qos: 1 });

beforeAll(async () => {
  t = await createTestDatabase();
  broker = await startNoDropBroker();
  ({ ctx } = contextFor(
    ingestEnv({
      dbUrl: t.url,
      mqttUrl: broker.url,
      extra: { REDIS_URL, GATEWAY_RATE_LIMIT: '100000', GATEWAY_CREDENTIAL_RECHECK_MS: '300' },
    }),
  ));
  a = await tenant(3);
  b = await tenant(2);
  ingest = await startIngest(ctx, { port: 0 });
  await ingest.subscribed;
  pub = await publisher(broker.url);
});

afterAll(async () => {
  for (const c of clients) await c.dispose();
  await pub?.endAsync();
  for (const gw of gateways) await gw.close();
  await ingest?.close();
  const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
  if (keys.length) await ctx.redis.del(...keys);
  await ctx?.close();
  await broker?.stop();
  await t?.drop();
});

describe('real-time through the gateway', () => {
  it('should deliver an MQTT reading to a subscriber with fields from the devices and metrics subgraphs', async () => {
    const gw = await newGateway();
    const sub = collect(
      client(gw, a.token),
      `subscription($site: ID) { telemetryUpdated(siteId: $site) {
        device { id name site { name } status { online } }
        readings { metric value }
      } }`,
      { site: a.rootSite },
    );
    await subscribed(gw, 1);
    await send(a.deviceIds[1] as string, { power: 42.5 });
    await until(() => sub.events.length > 0, 15_000, 'an event');
    const e = sub.events[0] as { data: { telemetryUpdated: Record<string, unknown> } };
    expect(e.data.telemetryUpdated).toEqual({
      device: { id: a.deviceIds[1], name: expect.any(String), site: { name: 'Main Street' }, status: { online: true } },
      readings: [{ metric: 'power', value: 42.5 }],
    });
  });

  it("should never deliver org A's events to org B's subscriber, even without a site filter", async () => {
    const gw = gateways[0] as GatewayHandle;
    const before = gw.realtime?.hub.subscriberCount ?? 0;
    const subB = collect(client(gw, b.token), 'subscription { telemetryUpdated { device { id } readings { metric value } } }');
    const subA = collect(client(gw, a.token), 'subscription { telemetryUpdated { device { id } } }');
    await subscribed(gw, before + 2);
    await send(a.deviceIds[0] as string, { power: 1 });
    await send(b.deviceIds[0] as string, { power: 2 });
    await until(() => subA.events.length >= 1 && subB.events.length >= 1, 15_000, 'both events');
    await new Promise((r) => setTimeout(r, 300));
    const ids = (s: typeof subA) =>
      s.events.map((e) => (e.data as { telemetryUpdated: { device: { id: string } } }).telemetryUpdated.device.id);
    expect(ids(subB)).toEqual([b.deviceIds[0]]);
    expect(ids(subA)).not.toContain(b.deviceIds[0]);
  });

  it('should refuse a subscription to a site of another organisation', async () => {
    const gw = gateways[0] as GatewayHandle;
    const sub = collect(client(gw, a.token), 'subscription($s: ID) { telemetryUpdated(siteId: $s) { device { id } } }', { s: b.rootSite });
    await sub.done;
    expect(JSON.stringify(sub.errors)).toContain('FORBIDDEN');
  });

  it('should close with 4401 for a bad token', async () => {
    const gw = gateways[0] as GatewayHandle;
    const sub = collect(client(gw, 'not-a-token'), 'subscription { telemetryUpdated { device { id } } }');
    await sub.done;
    expect((sub.errors[0] as { code: number }).code).toBe(CloseCode.Unauthorized);
  });

  it('should close a connection authenticated by an API key with 4403 once the key is revoked', async () => {
    const gw = gateways[0] ?? (await newGateway());
    const cfg = ctx.config;
    const admin = await issueToken(
      { userId: randomUUID(), orgId: a.orgId, role: 'admin' },
      { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 600 },
    );
    const gql = async (query: string, variables: Record<string, unknown> = {}) => {
      const res = await fetch(`http://127.0.0.1:${gw.port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await res.json()) as { data: Record<string, { key: string; apiKey: { id: string } }>; errors?: unknown };
      expect(body.errors).toBeUndefined();
      return body.data;
    };
    const created = (
      await gql('mutation { createApiKey(input: { name: "screen", scopes: ["telemetry:read", "devices:read"] }) { key apiKey { id } } }')
    ).createApiKey as { key: string; apiKey: { id: string } };
    const n = gw.realtime?.hub.subscriberCount ?? 0;
    const sub = collect(client(gw, created.key), 'subscription($d: [ID!]) { telemetryUpdated(deviceIds: $d) { readings { value } } }', {
      d: [a.deviceIds[1]],
    });
    await subscribed(gw, n + 1);
    await send(a.deviceIds[1] as string, { power: 7 });
    await until(() => sub.events.length === 1, 10_000, 'event for the API key subscriber');
    // several re-checks pass while the key is valid
    await new Promise((r) => setTimeout(r, 800));
    expect(sub.errors).toEqual([]);
    await gql('mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }', { id: created.apiKey.id });
    await sub.done;
    expect((sub.errors[0] as { code: number }).code).toBe(CloseCode.Forbidden);
  });

  it('should refuse an over-limit subscription with the HTTP limit codes', async () => {
    const gw = gateways[0] as GatewayHandle;
    const deep = `subscription { telemetryUpdated { device { ${'parent { '.repeat(20)}id${' }'.repeat(20)} } } }`;
    const sub = collect(client(gw, a.token), deep);
    await sub.done;
    expect(JSON.stringify(sub.errors)).toContain('QUERY_TOO_DEEP');
  });

  it('should deliver one copy to the subscribers of each of two gateway processes', async () => {
    const gw1 = gateways[0] as GatewayHandle;
    const gw2 = await newGateway();
    const n1 = gw1.realtime?.hub.subscriberCount ?? 0;
    const s1 = collect(client(gw1, a.token), 'subscription($d: [ID!]) { telemetryUpdated(deviceIds: $d) { readings { value } } }', {
      d: [a.deviceIds[2]],
    });
    const s2 = collect(client(gw2, a.token), 'subscription($d: [ID!]) { telemetryUpdated(deviceIds: $d) { readings { value } } }', {
      d: [a.deviceIds[2]],
    });
    await subscribed(gw1, n1 + 1);
    await subscribed(gw2, 1);
    await send(a.deviceIds[2] as string, { power: 7 });
    await until(() => s1.events.length === 1 && s2.events.length === 1, 15_000, 'one event each');
    await new Promise((r) => setTimeout(r, 300));
    expect(s1.events).toHaveLength(1);
    expect(s2.events).toHaveLength(1);
  });

  it('should run queries over the same socket', async () => {
    const gw = gateways[0] as GatewayHandle;
    const q = collect(client(gw, a.token), '{ devicesByIds(ids: []) { id } }');
    await q.done;
    expect(q.events).toEqual([{ data: { devicesByIds: [] } }]);
  });
});
