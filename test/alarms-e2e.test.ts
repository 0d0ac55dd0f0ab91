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
import type { Role } from '../lib/identity.js';
import type { RoleContext } from '../lib/role.js';
import { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createSubgraph as createMetricsSubgraph } from '../subgraphs/metrics/index.js';
import { createSubgraph as createRulesSubgraph } from '../subgraphs/rules/index.js';
import { RuleEvaluator } from '../workers/rule-eval.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// MQTT → ingest → PostgreSQL → rule-eval (BullMQ) → alarm → Redis → gateway → graphql-ws, every piece real;
// rules and acknowledgements go through the gateway like a dashboard's.
let t: TestDatabase;
let broker: Broker;
let ctx: RoleContext;
let ingest: IngestHandle;
let evaluator: RuleEvaluator;
let gw: GatewayHandle;
let pub: MqttClient;
const clients: Client[] = [];

interface Tenant {
  orgId: string;
  deviceIds: string[];
  site: string;
  token: (role: Role) => Promise<string>;
}
let a: Tenant;
let b: Tenant;

async function tenant(devices: number): Promise<Tenant> {
  const fleet = await seedFleet(t.url, { devices });
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  const site = randomUUID();
  await c.query('insert into sites (id, org_id, name, path) values ($1, $2, $3, $4::ltree)', [
    site,
    fleet.orgId,
    'Harbour',
    site.replaceAll('-', '_'),
  ]);
  await c.query('update devices set site_id = $2 where id = any($1::uuid[])', [fleet.deviceIds, site]);
  await c.end();
  const cfg = ctx.config;
  return {
    orgId: fleet.orgId,
    deviceIds: fleet.deviceIds,
    site,
    token: (role) =>
      issueToken({ userId: randomUUID(), orgId: fleet.orgId, role }, { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 600 }),
  };
}

async function gql(token: string, query: string, variables: Record<string, unknown> = {}) {
  const res = await fetch(`http://127.0.0.1:${gw.port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  // biome-ignore lint/suspicious/noExplicitAny: read by shape and asserted by value
  return (await res.json()) as { data?: any; errors?: { message: string; extensions?: { code?: string } }[] };
}

function subscribe(token: string, query: string, variables: Record<string, unknown> = {}) {
  const c = createClient({
    url: `ws://127.0.0.1:${gw.port}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
  });
  clients.push(c);
  // biome-ignore lint/suspicious/noExplicitAny: read by shape and asserted by value
  const events: any[] = [];
  const errors: unknown[] = [];
  c.subscribe({ query, variables }, { next: (v) => events.push(v), error: (e) => errors.push(e), complete: () => undefined });
  return { events, errors };
}

const send = (deviceId: string, values: Record<string, unknown>) =>
  pub.publishAsync(`devices/${deviceId}/telemetry`, JSON.stringify({ ts: Date.now(), values }), { qos: 1 });

const ALARM_EVENT = `subscription($site: ID) { alarmChanged(siteId: $site) {
  kind
  alarm { id type severity status value message device { id name site { name } } rule { name metric } }
} }`;

beforeAll(async () => {
  t = await createTestDatabase();
  broker = await startNoDropBroker();
  ({ ctx } = contextFor(ingestEnv({ dbUrl: t.url, mqttUrl: broker.url, extra: { REDIS_URL, GATEWAY_RATE_LIMIT: '100000' } })));
  a = await tenant(3);
  b = await tenant(2);
  ingest = await startIngest(ctx, { port: 0 });
  await ingest.subscribed;
  evaluator = new RuleEvaluator({
    db: ctx.db,
    redis: ctx.redis,
    redisUrl: ctx.config.REDIS_URL,
    prefix: ctx.config.REDIS_PREFIX,
    logger: ctx.logger,
  }).start();
  gw = await startGateway(ctx, {
    port: 0,
    local: {
      devices: createDevicesSubgraph(ctx),
      alarms: createAlarmsSubgraph(ctx),
      rules: createRulesSubgraph(ctx),
      metrics: createMetricsSubgraph(ctx),
    },
  });
  pub = await publisher(broker.url);
});

afterAll(async () => {
  for (const c of clients) await c.dispose();
  await pub?.endAsync();
  await gw?.close();
  await evaluator?.close();
  await ingest?.close();
  const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}*`);
  if (keys.length) await ctx.redis.del(...keys);
  await ctx?.close();
  await broker?.stop();
  await t?.drop();
});

describe('alarms from rules, end to end', () => {
  it('raises an alarm from an MQTT reading that breaks a rule, streams it with fields of three subgraphs, and streams its acknowledgement and clearing', async () => {
    const operator = await a.token('operator');
    const created = await gql(operator, `mutation($in: CreateRuleInput!) { createRule(input: $in) { id name alarmType } }`, {
      in: { name: 'Overheat', metric: 'temp', operator: 'GT', threshold: 70, clearThreshold: 65, severity: 'CRITICAL', siteId: a.site },
    });
    expect(created.errors).toBeUndefined();
    const ruleId = created.data.createRule.id;

    const sub = subscribe(await a.token('viewer'), ALARM_EVENT, { site: a.site });
    await until(() => gw.realtime?.hub.subscriberCount === 1, 10_000, 'the subscriber');
    await gw.realtime?.hub.settled();

    const device = a.deviceIds[1] as string;
    await send(device, { temp: 50 });
    await send(device, { temp: 75.5 });
    await until(() => sub.events.length >= 1, 20_000, 'the RAISED event');
    expect(sub.events[0].data.alarmChanged).toEqual({
      kind: 'RAISED',
      alarm: {
        id: expect.any(String),
        type: 'Overheat',
        severity: 'CRITICAL',
        status: 'ACTIVE_UNACK',
        value: 75.5,
        message: 'temp 75.5 > 70',
        device: { id: device, name: expect.any(String), site: { name: 'Harbour' } },
        rule: { name: 'Overheat', metric: 'temp' },
      },
    });
    const alarmId = sub.events[0].data.alarmChanged.alarm.id;

    // a viewer may read but not acknowledge; an operator may
    const viewer = await a.token('viewer');
    const refused = await gql(viewer, 'mutation($id: ID!) { acknowledgeAlarm(id: $id) { status } }', { id: alarmId });
    expect(refused.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const acked = await gql(operator, 'mutation($id: ID!) { acknowledgeAlarm(id: $id, note: "crew sent") { status } }', { id: alarmId });
    expect(acked.data.acknowledgeAlarm.status).toBe('ACTIVE_ACK');
    await until(() => sub.events.length >= 2, 10_000, 'the ACKNOWLEDGED event');
    expect(sub.events[1].data.alarmChanged).toMatchObject({ kind: 'ACKNOWLEDGED', alarm: { id: alarmId, status: 'ACTIVE_ACK' } });

    // inside the hysteresis band nothing changes; below the clear threshold the rule clears it
    await send(device, { temp: 68 });
    await send(device, { temp: 60 });
    await until(() => sub.events.length >= 3, 20_000, 'the CLEARED event');
    expect(sub.events[2].data.alarmChanged).toMatchObject({ kind: 'CLEARED', alarm: { id: alarmId, status: 'CLEARED_ACK', value: 60 } });

    const read = await gql(
      viewer,
      `query($id: ID!, $rule: ID!) {
        alarm(id: $id) { status occurrences history { kind actor note } device { alarms { id } activeAlarmCount } }
        rule(id: $rule) { stats { evaluations matches } executions { raised cleared } }
      }`,
      { id: alarmId, rule: ruleId },
    );
    expect(read.errors).toBeUndefined();
    expect(read.data.alarm.status).toBe('CLEARED_ACK');
    expect(read.data.alarm.history.map((h: { kind: string }) => h.kind)).toEqual(['RAISED', 'ACKNOWLEDGED', 'CLEARED']);
    expect(read.data.alarm.history[1].note).toBe('crew sent');
    expect(read.data.alarm.device).toEqual({ alarms: [{ id: alarmId }], activeAlarmCount: 0 });
    expect(read.data.rule.stats.matches).toBeGreaterThanOrEqual(1);
    expect(read.data.rule.executions.map((e: { raised: number; cleared: number }) => [e.raised, e.cleared]).sort()).toEqual([
      [0, 1],
      [1, 0],
    ]);
  });

  it("never streams or shows organization A's alarms to organization B", async () => {
    const opA = await a.token('operator');
    await gql(opA, `mutation($in: CreateRuleInput!) { createRule(input: $in) { id } }`, {
      in: { name: 'Hot', metric: 'temp', operator: 'GTE', threshold: 90, severity: 'MAJOR' },
    });
    const viewerB = await b.token('viewer');
    const before = gw.realtime?.hub.subscriberCount ?? 0;
    const subB = subscribe(viewerB, 'subscription { alarmChanged { kind alarm { id } } }');
    const subA = subscribe(await a.token('viewer'), 'subscription { alarmChanged(severity: MAJOR) { kind alarm { id type } } }');
    await until(() => gw.realtime?.hub.subscriberCount === before + 2, 10_000, 'both subscribers');
    await gw.realtime?.hub.settled();
    await send(a.deviceIds[2] as string, { temp: 95 });
    await until(() => subA.events.length >= 1, 20_000, "A's event");
    expect(subA.events[0].data.alarmChanged).toMatchObject({ kind: 'RAISED', alarm: { type: 'Hot' } });
    await new Promise((r) => setTimeout(r, 500));
    expect(subB.events).toEqual([]);
    const alarmId = subA.events[0].data.alarmChanged.alarm.id;
    const listed = await gql(viewerB, '{ alarms { totalCount } }');
    expect(listed.data.alarms.totalCount).toBe(0);
    const opB = await b.token('operator');
    const ack = await gql(opB, 'mutation($id: ID!) { acknowledgeAlarm(id: $id) { id } }', { id: alarmId });
    expect(ack.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });
});
