import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IngestHandle, startIngest } from '../ingest/index.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { contextFor, ingestEnv, publisher, until } from '../ingest/testing/fixtures.js';
import { rejectedCount } from '../lib/contracts/contract.js';
import { deviceChangesChannel } from '../lib/contracts/device-changes.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { deviceTopic, gatewayTopic } from '../lib/contracts/mqtt-topics.js';
import type { Identity } from '../lib/identity.js';
import { registry } from '../lib/metrics.js';
import { createRedis, type Redis } from '../lib/redis.js';
import type { RoleContext } from '../lib/role.js';
import { type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { REDIS_URL } from './support/env.js';

// The devices subgraph's mutations reach a running ingest at once through the device-change notice
// (lib/contracts/device-changes.ts), although ingest caches devices for five minutes: every piece
// real (PostgreSQL, Redis pub/sub, Mosquitto), the changes made through the subgraph's mutations.

/** What the tests allow a change to take to reach ingest (its device cache lives 300 s). */
const AT_ONCE_MS = 1000;

let f: DevicesFixture;
let broker: Broker;
let ctx: RoleContext;
let ingest: IngestHandle;
let pub: MqttClient;
let sub: Redis;
let orgId: string;
let operator: Identity;
const events: { field: string; filter: { deviceId: string; siteId: string | null } }[] = [];

const gql = {
  profile: `mutation($input: CreateDeviceProfileInput!) { createDeviceProfile(input: $input) { id } }`,
  updateProfile: `mutation($id: ID!, $input: UpdateDeviceProfileInput!) { updateDeviceProfile(id: $id, input: $input) { id metrics { name type } } }`,
  site: `mutation($name: String!) { createSite(input: { name: $name }) { id } }`,
  device: `mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }`,
  move: `mutation($id: ID!, $siteId: ID!) { moveDevice(id: $id, siteId: $siteId) { id } }`,
  decommission: `mutation($id: ID!) { decommissionDevice(id: $id) { id decommissionedAt } }`,
};

const send = (topic: string, body: unknown) => pub.publishAsync(topic, JSON.stringify(body), { qos: 1 });
const rows = async (deviceId: string, metric: string) =>
  Number(
    (
      await f.t.db
        .selectFrom('device_metrics')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('device_id', '=', deviceId)
        .where('metric', '=', metric)
        .executeTakeFirstOrThrow()
    ).n,
  );
const deadLetters = (deviceId: string | null, reason: string) =>
  f.t.db
    .selectFrom('dead_letters')
    .select(['reason', 'detail', 'topic'])
    .where('reason', '=', reason)
    .where((eb) => (deviceId ? eb('device_id', '=', deviceId) : eb('device_id', 'is', null)))
    .execute();
const createDevice = async (input: Record<string, unknown>) => (await f.ok(operator, gql.device, { input })).createDevice.id as string;
/** waits for ingest to have seen (and cached) the device: a first reading stored */
const primed = async (deviceId: string) => {
  await send(deviceTopic(deviceId, 'telemetry'), { power: 1 });
  await until(async () => (await rows(deviceId, 'power')) > 0, 10_000, 'first reading');
};

beforeAll(async () => {
  f = await devicesFixture();
  broker = await startNoDropBroker();
  // the prefix of the subgraph's context: its notices are the ones this ingest listens to
  const env = ingestEnv({ dbUrl: f.t.url, mqttUrl: broker.url, prefix: f.ctx.config.REDIS_PREFIX, extra: { REDIS_URL } });
  ({ ctx } = contextFor(env));
  expect(ctx.config.INGEST_DEVICE_CACHE_TTL_S).toBe(300);
  ingest = await startIngest(ctx, { port: 0 });
  await ingest.subscribed;
  pub = await publisher(broker.url);
  orgId = await f.org();
  operator = f.as(orgId, 'operator');
  sub = createRedis(REDIS_URL);
  sub.on('message', (_c, m: string) => events.push(...[JSON.parse(m)].flat()));
  await sub.subscribe(eventsChannel(f.ctx.config.REDIS_PREFIX, orgId));
});

afterAll(async () => {
  await pub?.endAsync();
  await ingest?.close();
  await ctx?.close();
  await sub?.quit();
  await broker?.stop();
  await f?.close();
});

describe('device changes reach ingest at once', () => {
  it('dead-letters the next reading of a device once decommissionDevice returns', async () => {
    const id = await createDevice({ serial: 'DC-1', name: 'lamp' });
    await primed(id);
    await f.ok(operator, gql.decommission, { id });

    const sent = Date.now();
    await send(deviceTopic(id, 'telemetry'), { power: 2 });
    await until(async () => (await deadLetters(id, 'unknown_device')).length > 0, AT_ONCE_MS, 'dead letter within a second');
    expect(Date.now() - sent).toBeLessThan(AT_ONCE_MS);
    expect(await deadLetters(id, 'unknown_device')).toEqual([
      { reason: 'unknown_device', detail: 'device is decommissioned', topic: deviceTopic(id, 'telemetry') },
    ]);
    expect(await rows(id, 'power')).toBe(1);
  });

  it("enforces a metric type added to the device's profile from the next message", async () => {
    const profileId = (await f.ok(operator, gql.profile, { input: { name: 'Lamp', metrics: [{ name: 'power', type: 'NUMBER' }] } }))
      .createDeviceProfile.id;
    const id = await createDevice({ serial: 'DC-2', name: 'lamp', profileId });
    // a metric the profile does not define is stored, its type taken from the value
    await send(deviceTopic(id, 'telemetry'), { temp: 'hot' });
    await until(async () => (await rows(id, 'temp')) === 1, 10_000, 'unknown metric stored');

    const updated = await f.ok(operator, gql.updateProfile, {
      id: profileId,
      input: {
        metrics: [
          { name: 'power', type: 'NUMBER' },
          { name: 'temp', type: 'NUMBER', unit: '°C' },
        ],
      },
    });
    expect(updated.updateDeviceProfile.metrics).toEqual([
      { name: 'power', type: 'NUMBER' },
      { name: 'temp', type: 'NUMBER' },
    ]);

    await send(deviceTopic(id, 'telemetry'), { temp: 'hot' });
    await until(async () => (await deadLetters(id, 'wrong_type')).length > 0, AT_ONCE_MS, 'wrong_type within a second');
    expect((await deadLetters(id, 'wrong_type'))[0]?.detail).toMatch(/temp/);
    expect(await rows(id, 'temp')).toBe(1);
  });

  it("files the next readings of a moved device under its new site, in the events' filter", async () => {
    const [from, to] = await Promise.all(['North', 'South'].map(async (name) => (await f.ok(operator, gql.site, { name })).createSite.id));
    const id = await createDevice({ serial: 'DC-3', name: 'lamp', siteId: from });
    await primed(id);
    await f.ok(operator, gql.move, { id, siteId: to });

    await send(deviceTopic(id, 'telemetry'), { power: 3 });
    const telemetry = () => events.filter((e) => e.field === 'telemetryUpdated' && e.filter.deviceId === id);
    await until(() => telemetry().length >= 2, AT_ONCE_MS, 'event within a second');
    expect(telemetry().map((e) => e.filter.siteId)).toEqual([from, to]);
  });

  it('accepts a child created under a concentrator that ingest had refused as unknown', async () => {
    const gw = (await f.ok(operator, gql.profile, { input: { name: 'Concentrator', isGateway: true } })).createDeviceProfile.id;
    const gatewayId = await createDevice({ serial: 'DC-GW', name: 'gateway', profileId: gw });
    await send(gatewayTopic(gatewayId, 'telemetry'), { 'DC-CHILD': { power: 4 } });
    await until(async () => (await deadLetters(gatewayId, 'unknown_child')).length > 0, 10_000, 'unknown child');

    const child = await createDevice({ serial: 'DC-CHILD', name: 'child', parentId: gatewayId });
    await send(gatewayTopic(gatewayId, 'telemetry'), { 'DC-CHILD': { power: 5 } });
    await until(async () => (await rows(child, 'power')) === 1, AT_ONCE_MS, 'child reading within a second');
  });

  it('counts and ignores a corrupt notice and keeps ingesting', async () => {
    const invalid = async () => {
      const m = await registry.getSingleMetric('rulr_ingest_device_changes_invalid_total')?.get();
      return m?.values[0]?.value ?? 0;
    };
    const before = await invalid();
    const rejectedBefore = await rejectedCount('device-changes');
    const id = await createDevice({ serial: 'DC-4', name: 'lamp' });
    await primed(id);
    for (const notice of ['*', id, '{"orgId":"x","kind":"updated","deviceIds":[]}', '{"orgId":'])
      await f.ctx.redis.publish(deviceChangesChannel(f.ctx.config.REDIS_PREFIX), notice);

    await until(async () => (await invalid()) === before + 4, 5000, 'corrupt notices counted');
    expect(await rejectedCount('device-changes')).toBe(rejectedBefore + 4);
    await send(deviceTopic(id, 'telemetry'), { power: 6 });
    await until(async () => (await rows(id, 'power')) === 2, 10_000, 'ingest still storing');
  });
});
