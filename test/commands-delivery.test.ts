import { randomUUID } from 'node:crypto';
import { createClient } from 'graphql-ws';
import { sql } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { STREET_LIGHT_COMMANDS } from '../cli/seed.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { ingestEnv, until } from '../ingest/testing/fixtures.js';
import {
  encodeGatewayCommandReply,
  gatewayCommandReplyTopic,
  gatewayCommandTopic,
  parseGatewayCommandMessage,
} from '../lib/contracts/commands.js';
import { createLogger } from '../lib/logger.js';
import { createSubgraph as createCommandsSubgraph } from '../subgraphs/commands/index.js';
import { CommandDispatcher } from '../workers/commands.js';
import { type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';
import { TestDevice } from './support/command-device.js';
import { REDIS_URL } from './support/env.js';
import { type Platform, startPlatform } from './support/platform.js';
import { type RoleProcess, startRoleProcess } from './support/role-process.js';
import { TcpProxy } from './support/tcp-proxy.js';

// Delivery that survives everything (issue 12, item 4): workers and ingest in their own processes,
// SIGKILLed at the worst moments; a concentrator answering for its child; commandUpdated over a
// real graphql-ws WebSocket through the gateway. Every piece real (Mosquitto, PostgreSQL, Redis).

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe('commands survive SIGKILL of the workers and of ingest', { timeout: 180_000 }, () => {
  let f: SubgraphFixture<ReturnType<typeof createCommandsSubgraph>>;
  let broker: Broker;
  let env: Record<string, string>;

  beforeAll(async () => {
    f = await subgraphFixture(createCommandsSubgraph);
    broker = await startNoDropBroker();
    env = ingestEnv({
      dbUrl: f.t.url,
      mqttUrl: broker.url,
      prefix: f.ctx.config.REDIS_PREFIX,
      extra: { REDIS_URL, COMMANDS_SWEEP_MS: '200', COMMANDS_LEASE_S: '2', LOG_LEVEL: 'warn' },
    });
  }, 60_000);
  afterAll(async () => {
    await broker?.stop();
    await f?.close();
  });

  /** An organization with the demo street-light profile (setDim, switch, reboot) and `n` lamps, each a TestDevice online. */
  async function lamps(n: number, behaviour: TestDevice['behaviour'] = 'succeed') {
    const orgId = await f.org();
    const { rows } = await sql<{ id: string }>`insert into device_profiles (org_id, name, commands)
      values (${orgId}, 'Street-light controller', ${JSON.stringify(STREET_LIGHT_COMMANDS)}::jsonb) returning id`.execute(f.t.db);
    const ids = Array.from({ length: n }, () => randomUUID());
    await sql`insert into devices (id, org_id, serial, name, profile_id)
      select id, ${orgId}, 'SL-' || left(id::text, 8), 'lamp', ${rows[0]?.id} from unnest(${ids}::uuid[]) as id`.execute(f.t.db);
    const devices = await Promise.all(
      ids.map(async (id) => {
        const d = new TestDevice(id, broker.url);
        d.behaviour = behaviour;
        cleanups.push(() => d.close());
        return d.connect();
      }),
    );
    return { operator: f.as(orgId, 'operator'), devices };
  }

  const send = async (operator: ReturnType<SubgraphFixture['as']>, deviceId: string, level: number) =>
    (
      (await f.ok(operator, 'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }', {
        i: { deviceId, name: 'setDim', params: { level } },
      })) as { sendCommand: { id: string } }
    ).sendCommand.id;

  const row = async (id: string) =>
    (
      await sql<{ status: string; attempts: number; lease_until: Date | null; history: { status: string }[] }>`
        select status, attempts, lease_until, history from commands where id = ${id}`.execute(f.t.db)
    ).rows[0];

  const statuses = async (ids: string[]) =>
    (await sql<{ status: string }>`select status from commands where id = any(${ids}::uuid[])`.execute(f.t.db)).rows.map((r) => r.status);

  async function workers(mqttUrl = broker.url): Promise<RoleProcess> {
    const w = await startRoleProcess('workers', 'WORKERS_PORT', { ...env, MQTT_URL: mqttUrl });
    cleanups.push(() => w.kill('SIGKILL'));
    return w;
  }

  async function ingest(): Promise<RoleProcess> {
    const i = await startRoleProcess('ingest', 'INGEST_PORT', env);
    cleanups.push(() => i.kill('SIGKILL'));
    return i;
  }

  it('a workers process killed after claiming a command and before the broker acknowledged it: sent again once, executed once', async () => {
    await ingest();
    const proxy = new TcpProxy(Number(new URL(broker.url).port));
    cleanups.push(() => proxy.close());
    const first = await workers(`mqtt://127.0.0.1:${await proxy.listen()}`);
    const { operator, devices } = await lamps(1);
    const d = devices[0] as TestDevice;
    proxy.hold();
    const id = await send(operator, d.deviceId, 30);
    await until(async () => (await row(id))?.lease_until != null, 20_000, 'the claim');
    await new Promise((r) => setTimeout(r, 300));
    await first.kill('SIGKILL');
    expect(await row(id)).toMatchObject({ status: 'QUEUED', attempts: 1 });
    expect(d.received).toEqual([]);

    await workers();
    await until(async () => (await row(id))?.status === 'SUCCEEDED', 30_000, 'SUCCEEDED after the restart');
    const r = await row(id);
    expect(r?.attempts).toBe(2);
    expect(r?.history.map((h) => h.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    expect(d.executed).toEqual([id]);
    expect(d.deliveries.get(id)).toBe(1);
  });

  it('a workers process killed between the device receiving a command and its result: the result is kept, nothing runs twice', async () => {
    await ingest();
    const first = await workers();
    const { operator, devices } = await lamps(5, 'receive-only');
    const ids = await Promise.all(devices.map((d, i) => send(operator, d.deviceId, 10 + i)));
    await until(async () => (await statuses(ids)).every((s) => s === 'DELIVERED'), 20_000, 'all DELIVERED');
    await first.kill('SIGKILL');
    // the results arrive while no workers process runs: ingest keeps them in the queue
    for (const [i, d] of devices.entries()) await d.reply({ id: ids[i], status: 'succeeded', result: { level: 10 + i } });
    await new Promise((r) => setTimeout(r, 500));
    expect(await statuses(ids)).toEqual(ids.map(() => 'DELIVERED'));

    await workers();
    await until(async () => (await statuses(ids)).every((s) => s === 'SUCCEEDED'), 30_000, 'all SUCCEEDED after the restart');
    for (const [i, d] of devices.entries()) {
      expect(d.executed).toEqual([ids[i]]);
      expect(d.deliveries.get(ids[i] as string)).toBe(1);
    }
  });

  it('an ingest process killed with replies in flight: the broker hands them to the restarted one, none lost', async () => {
    const mq = await mqtt.connectAsync(broker.url, { clientId: `workers-${randomUUID()}`, protocolVersion: 5 });
    const dispatcher = new CommandDispatcher({
      db: f.t.db,
      redis: f.ctx.redis,
      redisUrl: REDIS_URL,
      prefix: f.ctx.config.REDIS_PREFIX,
      mqtt: mq,
      logger: createLogger('silent'),
      sweepMs: 200,
      leaseS: 5,
      timeoutS: 30,
    }).start();
    cleanups.push(async () => {
      await dispatcher.close();
      await mq.endAsync();
    });
    const first = await ingest();
    const { operator, devices } = await lamps(20, 'receive-only');
    const ids = await Promise.all(devices.map((d, i) => send(operator, d.deviceId, i)));
    await until(async () => (await statuses(ids)).every((s) => s === 'DELIVERED'), 20_000, 'all DELIVERED');
    // frozen, then killed: the broker has handed it (or queued for its session) replies it never acknowledged
    first.child.kill('SIGSTOP');
    await Promise.all(devices.map((d, i) => d.reply({ id: ids[i], status: 'succeeded', result: { level: i } })));
    await new Promise((r) => setTimeout(r, 300));
    await first.kill('SIGKILL');
    expect(await statuses(ids)).toEqual(ids.map(() => 'DELIVERED'));

    await ingest();
    await until(async () => (await statuses(ids)).every((s) => s === 'SUCCEEDED'), 30_000, 'all SUCCEEDED after the restart');
    for (const [i, d] of devices.entries()) expect(d.executed).toEqual([ids[i]]);
  });
});

describe('through the whole platform', () => {
  let p: Platform;
  let token: string;
  let gw: MqttClient | undefined;

  beforeAll(async () => {
    p = await startPlatform({ devices: 40, name: 'commands-delivery' });
    token = await p.login(p.operator);
  }, 120_000);
  afterAll(async () => {
    await gw?.endAsync();
    await p?.close();
  });

  const child = async () => {
    const r = await p.sql.query<{ id: string; serial: string; parent_id: string }>(
      'select id, serial, parent_id from devices where org_id = $1 and parent_id is not null order by serial limit 1',
      [p.orgId],
    );
    const c = r.rows[0];
    if (!c) throw new Error('the demo fleet has no concentrator child');
    return c;
  };

  const send = async (deviceId: string, level: number) => {
    const r = await p.gql<{ sendCommand: { id: string } }>(token, 'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }', {
      i: { deviceId, name: 'setDim', params: { level } },
    });
    if (!r.data) throw new Error(JSON.stringify(r.errors));
    return r.data.sendCommand.id;
  };

  const command = async (id: string) =>
    (
      await p.gql<{ command: { status: string; result: unknown; history: { status: string; evidence: Record<string, unknown> }[] } }>(
        token,
        'query($id: ID!) { command(id: $id) { status result history { status evidence } } }',
        { id },
      )
    ).data?.command;

  it("a concentrator receives its child's command on gateways/{id}/commands with the child's serial and answers for it", async () => {
    const c = await child();
    const seen: { serial: string; id: string; name: string }[] = [];
    gw = await mqtt.connectAsync(p.broker.url, { clientId: `gw-${randomUUID()}`, protocolVersion: 5 });
    const conn = gw;
    conn.on('message', (_t, payload) => {
      const m = parseGatewayCommandMessage(payload);
      seen.push({ serial: m.serial, id: m.id, name: m.name });
      // both answers in one message, the array form of the contract
      void conn.publishAsync(
        gatewayCommandReplyTopic(c.parent_id),
        encodeGatewayCommandReply([
          { serial: m.serial, id: m.id, status: 'received' },
          { serial: m.serial, id: m.id, status: 'succeeded', result: { level: m.params.level ?? null } },
        ]),
        { qos: 1 },
      );
    });
    await conn.subscribeAsync(gatewayCommandTopic(c.parent_id), { qos: 1 });
    await conn.publishAsync(`gateways/${c.parent_id}/connect`, JSON.stringify({ devices: [c.serial] }), { qos: 1 });

    const id = await send(c.id, 55);
    await until(async () => (await command(id))?.status === 'SUCCEEDED', 30_000, 'the child command SUCCEEDED');
    const cmd = await command(id);
    expect(cmd?.history.map((h) => h.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    expect(cmd?.history[1]?.evidence).toMatchObject({ broker: 'PUBACK', topic: `gateways/${c.parent_id}/commands` });
    expect(cmd?.result).toEqual({ level: 55 });
    expect(seen.filter((s) => s.id === id)).toEqual([{ serial: c.serial, id, name: 'setDim' }]);
  });

  it('commandUpdated arrives over a graphql-ws WebSocket through the gateway for every status, selecting the device across subgraphs', async () => {
    const r = await p.sql.query<{ id: string; serial: string }>(
      'select id, serial from devices where org_id = $1 and parent_id is null and profile_id is not null order by serial desc limit 1',
      [p.orgId],
    );
    const lamp = r.rows[0] as { id: string; serial: string };
    const d = new TestDevice(lamp.id, p.broker.url);
    await d.connect();
    const ws = createClient({
      url: `${p.url.replace('http', 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      retryAttempts: 0,
    });
    const events: { status: string; command: { id: string; device: { serial: string } } | null }[] = [];
    const stop = ws.subscribe(
      {
        query: 'subscription($d: [ID!]) { commandUpdated(deviceIds: $d) { status command { id device { serial } } } }',
        variables: { d: [lamp.id] },
      },
      {
        next: (v) => events.push((v.data as { commandUpdated: (typeof events)[number] }).commandUpdated),
        error: () => undefined,
        complete: () => undefined,
      },
    );
    try {
      // the subscription is in place once an event of a first command arrives
      let id = '';
      await until(
        async () => {
          if (!id) id = await send(lamp.id, 11);
          return events.some((e) => e.status === 'SUCCEEDED');
        },
        30_000,
        'a first event',
      );
      events.length = 0;
      const second = await send(lamp.id, 12);
      await until(() => events.filter((e) => e.command?.id === second).some((e) => e.status === 'SUCCEEDED'), 30_000, 'SUCCEEDED event');
      const mine = events.filter((e) => e.command?.id === second);
      expect(mine.map((e) => e.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
      expect(mine[0]?.command?.device.serial).toBe(lamp.serial);
    } finally {
      stop();
      await ws.dispose();
      await d.close();
    }
  });
});
