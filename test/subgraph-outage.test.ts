import { randomBytes, randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { type Client, createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadSubgraph } from '../cli/subgraphs.js';
import { type GatewayHandle, startGateway } from '../gateway/index.js';
import { freePort } from '../ingest/testing/broker.js';
import { seedFleet, until } from '../ingest/testing/fixtures.js';
import { issueToken } from '../lib/auth.js';
import { loadConfig } from '../lib/config.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext, type RoleHandle } from '../lib/role.js';
import { type SubgraphModule, startSubgraphServer } from '../lib/subgraph.js';
import { SUBGRAPH_NAMES, type SubgraphName } from '../lib/subgraphs.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// Each subgraph runs as its own HTTP server on its own port, as deployed; "killed" means that server
// is closed and its port refuses connections. Three gateways in front: the fast one (direct and
// planned routes), one sending everything through Apollo Server, and a production one.

const SECRET = randomBytes(32).toString('hex');
let t: TestDatabase;
let subCtx: RoleContext;
const gwContexts: RoleContext[] = [];
const ports = {} as Record<SubgraphName, number>;
const modules = {} as Record<SubgraphName, SubgraphModule>;
const servers: Partial<Record<SubgraphName, RoleHandle>> = {};
const gateways = {} as Record<'fast' | 'apollo' | 'production', GatewayHandle>;
const clients: Client[] = [];
let orgId: string;
let deviceIds: string[];
let serials: string[];
let token: string;
let ruleId: string;

const env = (extra: Record<string, string> = {}) =>
  loadConfig({
    DATABASE_URL: t.url,
    REDIS_URL,
    REDIS_PREFIX: `rulr-test-outage-${randomBytes(4).toString('hex')}:`,
    RULR_SECRET: SECRET,
    LOG_LEVEL: 'silent',
    NODE_ENV: 'test',
    GATEWAY_RATE_LIMIT: '100000',
    ...extra,
  });

async function start(name: SubgraphName): Promise<void> {
  servers[name] = await startSubgraphServer(subCtx, modules[name], ports[name]);
}

async function kill(name: SubgraphName): Promise<void> {
  await servers[name]?.close();
  delete servers[name];
  // really gone: its port refuses connections
  await new Promise<void>((resolve, reject) => {
    const s = connect(ports[name], '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      reject(new Error(`${name} still accepts connections`));
    });
    s.once('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNREFUSED' ? resolve() : reject(e)));
  });
}

interface Answer {
  status: number;
  route: string | null;
  // biome-ignore lint/suspicious/noExplicitAny: answers are read by shape and compared by value
  body: { data?: any; errors?: { message: string; path?: unknown[]; extensions?: Record<string, unknown> }[] };
}

async function gql(gw: GatewayHandle, query: string, variables: Record<string, unknown> = {}): Promise<Answer> {
  const res = await fetch(`http://127.0.0.1:${gw.port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, route: res.headers.get('x-rulr-route'), body: (await res.json()) as Answer['body'] };
}

/** A dashboard page with something from every subgraph, alarm counts and live status on each device. */
const PAGE = `query Page {
  devices(first: 3) { edges { node { serial activeAlarmCount status { online } latest { metric } } } }
  alarms(first: 5) { totalCount edges { node { type device { serial } } } }
  rules { totalCount }
  deadLetters(first: 5) { edges { node { reason } } }
  commands(first: 3) { edges { node { id status } } }
}`;

/** What a subgraph's loss leaves out of PAGE's answer: its own parts null, the others' intact. */
function without(whole: Answer['body']['data'], dead: SubgraphName): unknown {
  const d = structuredClone(whole);
  if (dead === 'devices') {
    d.devices = null;
    for (const e of d.alarms.edges) e.node.device = null;
  }
  if (dead === 'alarms') {
    d.alarms = null;
    for (const e of d.devices.edges) e.node.activeAlarmCount = null;
  }
  if (dead === 'rules') d.rules = null;
  if (dead === 'commands') d.commands = null;
  if (dead === 'metrics') {
    d.deadLetters = null;
    for (const e of d.devices.edges) {
      e.node.status = null;
      e.node.latest = null;
    }
  }
  return d;
}

/** Every error is the dead subgraph's SUBGRAPH_UNAVAILABLE, and nothing in it tells where the subgraph lives. */
function expectUnavailable(body: Answer['body'], dead: SubgraphName): void {
  expect(body.errors?.length, JSON.stringify(body)).toBeGreaterThan(0);
  for (const e of body.errors ?? []) {
    expect(e.extensions?.code, JSON.stringify(e)).toBe('SUBGRAPH_UNAVAILABLE');
    expect(e.extensions?.subgraph).toBe(dead);
    expect(e.message).toContain(dead);
    const text = JSON.stringify(e);
    for (const leak of ['127.0.0.1', 'localhost', 'http:', 'ECONNREFUSED', ...Object.values(ports).map(String)]) {
      expect(text, `error mentions ${leak}`).not.toContain(leak);
    }
  }
}

beforeAll(async () => {
  t = await createTestDatabase();
  subCtx = new RoleContext(env(), createLogger('silent'));
  for (const name of SUBGRAPH_NAMES) {
    ports[name] = await freePort();
    modules[name] = (await loadSubgraph(name)).createSubgraph(subCtx);
    await start(name);
  }
  const urls = Object.fromEntries(SUBGRAPH_NAMES.map((n) => [n, `http://127.0.0.1:${ports[n]}/graphql`]));
  const gateway = async (extra: Record<string, string>, fastPath: boolean) => {
    const ctx = new RoleContext(env(extra), createLogger('silent'));
    gwContexts.push(ctx);
    return startGateway(ctx, { port: 0, urls, fastPath });
  };
  gateways.fast = await gateway({}, true);
  gateways.apollo = await gateway({}, false);
  gateways.production = await gateway({ NODE_ENV: 'production' }, true);

  const fleet = await seedFleet(t.url, { devices: 3 });
  orgId = fleet.orgId;
  deviceIds = fleet.deviceIds;
  serials = fleet.serials;
  token = await issueToken({ userId: randomUUID(), orgId, role: 'admin' }, { secret: SECRET, issuer: 'rulr', ttlSeconds: 3600 });
  await t.db.insertInto('dead_letters').values({ org_id: orgId, topic: 'devices/x/telemetry', reason: 'not_json' }).execute();
  const raised = await gql(
    gateways.fast,
    'mutation($d: ID!) { raiseAlarm(input: { deviceId: $d, type: "Door open", severity: MAJOR }) { id } }',
    {
      d: deviceIds[0],
    },
  );
  expect(raised.body.errors).toBeUndefined();
  const rule = await gql(
    gateways.fast,
    'mutation { createRule(input: { name: "High power", metric: "power", operator: GT, threshold: 150, severity: MINOR }) { id } }',
  );
  expect(rule.body.errors).toBeUndefined();
  ruleId = rule.body.data.createRule.id;
});

afterAll(async () => {
  for (const c of clients) await c.dispose();
  for (const gw of Object.values(gateways)) await gw?.close();
  for (const s of Object.values(servers)) await s?.close();
  for (const ctx of [...gwContexts, subCtx]) {
    const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
    if (keys.length) await ctx.redis.del(...keys);
    await ctx.close();
  }
  await t?.drop();
});

describe('a subgraph outage', () => {
  let whole: Answer['body']['data'];

  it('answers the whole page while every subgraph runs, through the planned route', async () => {
    const r = await gql(gateways.fast, PAGE);
    expect(r.body.errors).toBeUndefined();
    expect(r.route).toBe('planned');
    whole = r.body.data;
    expect(whole.devices.edges).toHaveLength(3);
    expect(whole.devices.edges.map((e: { node: { activeAlarmCount: number } }) => e.node.activeAlarmCount).sort()).toEqual([0, 0, 1]);
    expect(whole.alarms.edges[0].node.device.serial).toBe(serials[0]);
    expect(whole.rules.totalCount).toBe(1);
    expect(whole.deadLetters.edges).toEqual([{ node: { reason: 'not_json' } }]);
    for (const gw of [gateways.apollo, gateways.production]) expect((await gql(gw, PAGE)).body).toEqual({ data: whole });
  });

  for (const dead of SUBGRAPH_NAMES) {
    describe(`with the ${dead} subgraph killed`, () => {
      beforeAll(() => kill(dead));
      afterAll(async () => {
        if (!servers[dead]) await start(dead);
      });

      it("returns the other subgraphs' data and nulls its parts, each with SUBGRAPH_UNAVAILABLE naming it and not its address", async () => {
        for (const [which, gw] of Object.entries(gateways)) {
          const r = await gql(gw, PAGE);
          expect(r.status, which).toBe(200);
          expect(r.route, which).toBe(which === 'apollo' ? 'apollo' : 'planned');
          expect(r.body.data, which).toEqual(without(whole, dead));
          expectUnavailable(r.body, dead);
        }
      });

      it('answers a query of that subgraph alone with its root fields null and the same error (direct route, falling back to Apollo)', async () => {
        const own: Record<SubgraphName, string> = {
          devices: '{ sites { id } deviceProfiles { id } }',
          alarms: '{ alarmCounts { active } }',
          rules: '{ rules { totalCount } }',
          metrics: '{ deadLetters(first: 1) { edges { node { id } } } }',
          commands: '{ commands(first: 1) { edges { node { id } } } }',
        };
        for (const gw of [gateways.fast, gateways.production]) {
          const r = await gql(gw, own[dead]);
          expect(r.status).toBe(200);
          expect(Object.values(r.body.data)).toEqual(Object.keys(r.body.data).map(() => null));
          expectUnavailable(r.body, dead);
        }
      });

      // metrics has no mutations
      it.skipIf(dead === 'metrics')(
        'refuses a mutation of that subgraph with the same error, without retrying it (direct route)',
        async () => {
          const own: Record<Exclude<SubgraphName, 'metrics'>, [string, Record<string, unknown>]> = {
            devices: ['mutation { createSite(input: { name: "Depot" }) { id } }', {}],
            alarms: ['mutation($d: ID!) { raiseAlarm(input: { deviceId: $d, type: "T", severity: MINOR }) { id } }', { d: deviceIds[1] }],
            rules: ['mutation($id: ID!) { deleteRule(id: $id) }', { id: ruleId }],
            commands: ['mutation($id: ID!) { cancelCommand(id: $id) { id } }', { id: ruleId }],
          };
          const [query, variables] = own[dead as Exclude<SubgraphName, 'metrics'>];
          for (const gw of [gateways.fast, gateways.production]) {
            const r = await gql(gw, query, variables);
            expect(r.route).toBe('direct');
            expect(r.body.data).toBeNull();
            expectUnavailable(r.body, dead);
          }
        },
      );

      it('answers the whole page again once it is back', async () => {
        await start(dead);
        for (const gw of Object.values(gateways)) expect((await gql(gw, PAGE)).body).toEqual({ data: whole });
      });
    });
  }
});

describe('a subscription that selects fields of a subgraph that is down', () => {
  function subscribe(query: string, variables: Record<string, unknown>) {
    const c = createClient({
      url: `ws://127.0.0.1:${gateways.fast.port}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      retryAttempts: 0,
    });
    clients.push(c);
    const events: { data?: unknown; errors?: { extensions?: Record<string, unknown>; message: string }[] }[] = [];
    const refusals: unknown[] = [];
    c.subscribe(
      { query, variables },
      { next: (v) => events.push(v as (typeof events)[number]), error: (e) => refusals.push(e), complete: () => undefined },
    );
    return Object.assign(events, { refusals });
  }
  const publish = (deviceId: string) =>
    subCtx.redis.publish(
      eventsChannel(gwContexts[0]!.config.REDIS_PREFIX, orgId),
      JSON.stringify({
        field: 'telemetryUpdated',
        orgId,
        filter: { deviceId },
        data: { device: { id: deviceId }, readings: [{ metric: 'power', ts: new Date().toISOString(), value: 42, text: null }] },
      }),
    );

  it('gets its events with those fields null and the same error, and whole events again after the restart', async () => {
    const device = deviceIds[0] as string;
    const events = subscribe(
      'subscription($d: [ID!]) { telemetryUpdated(deviceIds: $d) { device { serial activeAlarmCount status { online } } readings { value } } }',
      { d: [device] },
    );
    await until(() => gateways.fast.realtime?.hub.subscriberCount === 1, 10_000, 'the subscription');
    await gateways.fast.realtime?.hub.settled();
    const next = async (n: number) => {
      await publish(device);
      await until(() => events.length === n, 10_000, `event ${n}`);
      return events[n - 1]!;
    };
    const serial = (await next(1)) as { data: { telemetryUpdated: { device: { serial: string } } }; errors?: unknown };
    expect(serial.errors).toBeUndefined();
    const whole = serial.data.telemetryUpdated;
    expect(whole).toEqual({
      device: { serial: expect.any(String), activeAlarmCount: 1, status: { online: false } },
      readings: [{ value: 42 }],
    });

    await kill('alarms');
    const a = await next(2);
    expect(a.data).toEqual({ telemetryUpdated: { ...whole, device: { ...whole.device, activeAlarmCount: null } } });
    expectUnavailable(a as Answer['body'], 'alarms');
    await start('alarms');

    await kill('devices');
    const d = await next(3);
    expect(d.data).toEqual({ telemetryUpdated: { ...whole, device: null } });
    expectUnavailable(d as Answer['body'], 'devices');
    await start('devices');

    const back = await next(4);
    expect(back).toEqual({ data: { telemetryUpdated: whole } });
  });

  it('refuses a subscription whose filter cannot be checked while the devices subgraph is down, with its error rather than FORBIDDEN', async () => {
    await kill('devices');
    try {
      const sub = subscribe('subscription($d: [ID!]) { telemetryUpdated(deviceIds: $d) { readings { value } } }', { d: [deviceIds[1]] });
      await until(() => sub.refusals.length > 0, 10_000, 'the refusal');
      const [errors] = sub.refusals as { message: string; extensions?: Record<string, unknown> }[][];
      expectUnavailable({ errors: errors ?? [] } as Answer['body'], 'devices');
    } finally {
      await start('devices');
    }
  });
});
