import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker } from '../ingest/testing/broker.js';
import { until } from '../ingest/testing/fixtures.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { codes, type SubgraphFixture } from './devices-fixtures.js';
import { TestDevice } from './support/command-device.js';
import { type CommandStack, type CommandsFixture, commandStack, inProcessWorkers, STREET_LIGHT_COMMANDS } from './support/command-stack.js';

let stack: CommandStack;
let f: CommandsFixture;
let broker: Broker;
let workers: Awaited<ReturnType<typeof inProcessWorkers>>;
const devices: TestDevice[] = [];

beforeAll(async () => {
  stack = await commandStack();
  ({ f, broker } = stack);
  workers = await inProcessWorkers(stack, { jobs: false });
}, 60_000);

afterAll(async () => {
  for (const d of devices) await d.close().catch(() => undefined);
  await workers?.close();
  await stack?.close();
});

const SPECS = STREET_LIGHT_COMMANDS;

interface Tenant {
  orgId: string;
  profileId: string;
  deviceIds: string[];
  admin: ReturnType<SubgraphFixture['as']>;
  operator: ReturnType<SubgraphFixture['as']>;
  viewer: ReturnType<SubgraphFixture['as']>;
}

/** An organization with a street-light profile declaring SPECS and `n` devices of it. */
async function tenant(n = 2): Promise<Tenant> {
  const orgId = await f.org();
  const { rows } = await sql<{ id: string }>`
    insert into device_profiles (org_id, name) values (${orgId}, ${`street light ${randomUUID().slice(0, 6)}`}) returning id`.execute(
    f.t.db,
  );
  const profileId = (rows[0] as { id: string }).id;
  const deviceIds = Array.from({ length: n }, () => randomUUID());
  for (const [i, id] of deviceIds.entries())
    await sql`insert into devices (id, org_id, serial, name, profile_id) values (${id}, ${orgId}, ${`L-${i}-${id.slice(0, 8)}`}, ${`lamp ${i}`}, ${profileId})`.execute(
      f.t.db,
    );
  const t = { orgId, profileId, deviceIds, admin: f.as(orgId, 'admin'), operator: f.as(orgId, 'operator'), viewer: f.as(orgId, 'viewer') };
  await f.ok(
    t.admin,
    'mutation($p: ID!, $c: [CommandSpecInput!]!) { setProfileCommands(profileId: $p, commands: $c) { id commands { name } } }',
    {
      p: profileId,
      c: SPECS,
    },
  );
  return t;
}

async function device(id: string, o: { state?: Record<string, unknown>; connect?: boolean } = {}): Promise<TestDevice> {
  const d = new TestDevice(id, broker.url);
  devices.push(d);
  if (o.connect !== false) await d.connect(o.state ? { state: o.state } : {});
  return d;
}

const SEND = `mutation($i: SendCommandInput!) { sendCommand(input: $i) { id status name params attempts expiresAt } }`;
const COMMAND = `query($id: ID!) { command(id: $id) { id status attempts result error sentAt deliveredAt completedAt
  history { status at evidence } device { id } } }`;

async function send(t: Tenant, input: Record<string, unknown>) {
  return (await f.ok(t.operator, SEND, { i: input })).sendCommand as { id: string; status: string; attempts: number };
}

async function commandOf(t: Tenant, id: string) {
  return (await f.ok(t.viewer, COMMAND, { id })).command as {
    status: string;
    attempts: number;
    result: unknown;
    error: string | null;
    history: { status: string; evidence: Record<string, unknown> }[];
  } | null;
}

async function statusBecomes(t: Tenant, id: string, status: string, ms = 15_000) {
  await until(async () => (await commandOf(t, id))?.status === status, ms, `command ${id} ${status}`);
}

/** Waits until the device's status is in Redis as online (ingest committed its status message). */
async function online(deviceId: string) {
  await until(async () => (await f.ctx.redis.hget(`${f.ctx.config.REDIS_PREFIX}status:${deviceId}`, 'online')) === '1', 10_000, 'online');
}

const deadLetters = async (deviceId: string) =>
  (
    await sql<{ reason: string; topic: string }>`select reason, topic from dead_letters where device_id = ${deviceId} order by id`.execute(
      f.t.db,
    )
  ).rows;

describe('commands end to end (Mosquitto, PostgreSQL, Redis)', () => {
  it('should take a command from sendCommand to SUCCEEDED with evidence at every step', async () => {
    const t = await tenant(1);
    const lamp = await device(t.deviceIds[0] as string);
    await online(lamp.deviceId);
    const c = await send(t, { deviceId: lamp.deviceId, name: 'setDim', params: { level: 40 }, idempotencyKey: 'dim-1' });
    expect(c.status).toBe('QUEUED');
    await statusBecomes(t, c.id, 'SUCCEEDED');
    expect(lamp.received).toEqual([{ id: c.id, name: 'setDim', params: { level: 40 }, expiresAt: expect.any(String) }]);
    const done = await commandOf(t, c.id);
    expect(done?.history.map((h) => h.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    expect(done?.history[1]?.evidence).toMatchObject({ broker: 'PUBACK', topic: `devices/${lamp.deviceId}/commands`, qos: 1 });
    expect(done?.history[2]?.evidence).toMatchObject({ reply: 'received', topic: `devices/${lamp.deviceId}/commands/reply` });
    expect(done?.history[3]?.evidence).toMatchObject({ reply: 'succeeded' });
    expect(done?.result).toEqual({ level: 40 });
    expect(done?.attempts).toBe(1);
    // the same idempotency key returns the same command, and nothing is sent again
    const again = await send(t, { deviceId: lamp.deviceId, name: 'setDim', params: { level: 40 }, idempotencyKey: 'dim-1' });
    expect(again.id).toBe(c.id);
    const { rows } = await sql<{ action: string }>`select action from audit_logs where entity_id = ${c.id}`.execute(f.t.db);
    expect(rows.map((r) => r.action)).toEqual(['command.send']);
    await new Promise((r) => setTimeout(r, 500));
    expect(lamp.received).toHaveLength(1);
  });

  it('should refuse an idempotency key reused for another command with CONFLICT', async () => {
    const t = await tenant(1);
    await send(t, { deviceId: t.deviceIds[0], name: 'reboot', idempotencyKey: 'k' });
    const r = await f.run(t.operator, SEND, { i: { deviceId: t.deviceIds[0], name: 'setDim', params: { level: 1 }, idempotencyKey: 'k' } });
    expect(codes(r)).toEqual(['CONFLICT']);
  });

  it('should refuse unknown commands and bad parameters with BAD_USER_INPUT naming the field', async () => {
    const t = await tenant(1);
    const deviceId = t.deviceIds[0];
    const fieldOf = async (i: Record<string, unknown>) => {
      const r = await f.run(t.operator, SEND, { i: { deviceId, ...i } });
      expect(codes(r)).toEqual(['BAD_USER_INPUT']);
      return r.errors?.[0]?.extensions?.field;
    };
    expect(await fieldOf({ name: 'selfDestruct' })).toBe('input.name');
    expect(await fieldOf({ name: 'setDim', params: { level: 101 } })).toBe('input.params.level');
    expect(await fieldOf({ name: 'setDim', params: {} })).toBe('input.params.level');
    expect(await fieldOf({ name: 'setDim', params: { level: 5, colour: 'red' } })).toBe('input.params.colour');
    expect(await fieldOf({ name: 'switch', params: { on: 'yes' } })).toBe('input.params.on');
    expect(await fieldOf({ name: 'reboot', timeoutSeconds: 0 })).toBe('input.timeoutSeconds');
    expect(await fieldOf({ name: 'reboot', expiresAt: new Date(Date.now() - 1000).toISOString() })).toBe('input.expiresAt');
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from commands where device_id = ${deviceId}`.execute(f.t.db);
    expect(rows[0]?.n).toBe(0);
  });

  it('should keep a command for an offline device QUEUED and deliver it once when the device comes back', async () => {
    const t = await tenant(1);
    const c = await send(t, { deviceId: t.deviceIds[0], name: 'switch', params: { on: true } });
    await new Promise((r) => setTimeout(r, 1500)); // several sweeps
    expect((await commandOf(t, c.id))?.status).toBe('QUEUED');
    const lamp = await device(t.deviceIds[0] as string);
    await statusBecomes(t, c.id, 'SUCCEEDED');
    await lamp.announce(); // another status message: nothing is sent again
    await new Promise((r) => setTimeout(r, 1000));
    expect(lamp.received.map((m) => m.id)).toEqual([c.id]);
    expect((await commandOf(t, c.id))?.attempts).toBe(1);
  });

  it('should expire a command at expiresAt with no message at all', async () => {
    const t = await tenant(1);
    const c = await send(t, { deviceId: t.deviceIds[0], name: 'reboot', expiresAt: new Date(Date.now() + 1200).toISOString() });
    await statusBecomes(t, c.id, 'EXPIRED', 10_000);
    const done = await commandOf(t, c.id);
    expect(done?.history.map((h) => h.status)).toEqual(['QUEUED', 'EXPIRED']);
    expect(done?.history[1]?.evidence).toMatchObject({ sweep: 'expired' });
    // a device that comes back afterwards receives nothing
    const lamp = await device(t.deviceIds[0] as string);
    await online(lamp.deviceId);
    await new Promise((r) => setTimeout(r, 800));
    expect(lamp.received).toEqual([]);
  });

  it('should not let a device that never answers block its next command past the timeout', async () => {
    const t = await tenant(1);
    const lamp = await device(t.deviceIds[0] as string);
    lamp.ignore = (m) => m.name === 'reboot'; // never answers the reboot, answers the rest
    await online(lamp.deviceId);
    const first = await send(t, { deviceId: lamp.deviceId, name: 'reboot', timeoutSeconds: 1 });
    const second = await send(t, { deviceId: lamp.deviceId, name: 'setDim', params: { level: 10 } });
    await statusBecomes(t, first.id, 'SENT');
    // one in flight: the second waits
    expect((await commandOf(t, second.id))?.status).toBe('QUEUED');
    await statusBecomes(t, first.id, 'FAILED', 10_000);
    expect((await commandOf(t, first.id))?.error).toMatch(/^timeout/);
    await statusBecomes(t, second.id, 'SUCCEEDED');
    expect(lamp.received.map((m) => m.id)).toEqual([first.id, second.id]);
  });

  it('should record a device failure as FAILED with its error', async () => {
    const t = await tenant(1);
    const lamp = await device(t.deviceIds[0] as string);
    lamp.behaviour = 'fail';
    await online(lamp.deviceId);
    const c = await send(t, { deviceId: lamp.deviceId, name: 'reboot' });
    await statusBecomes(t, c.id, 'FAILED');
    expect((await commandOf(t, c.id))?.error).toBe('lamp driver fault');
  });

  it("should refuse a device's reply for another device's command, unknown, malformed and late replies, leaving statuses unchanged", async () => {
    const t = await tenant(2);
    const [a, b] = [await device(t.deviceIds[0] as string), await device(t.deviceIds[1] as string)];
    a.behaviour = 'receive-only';
    await online(a.deviceId);
    await online(b.deviceId);
    const c = await send(t, { deviceId: a.deviceId, name: 'reboot' });
    await statusBecomes(t, c.id, 'DELIVERED');
    await b.reply({ id: c.id, status: 'succeeded' }); // B answers for A's command
    await b.reply({ id: randomUUID(), status: 'succeeded' }); // unknown command
    await b.reply('{"id": 42'); // malformed
    await b.reply({ id: c.id, status: 'done' }); // not a status of the contract
    await until(async () => (await deadLetters(b.deviceId)).length === 4, 10_000, 'four dead letters');
    expect((await deadLetters(b.deviceId)).map((d) => d.reason).sort()).toEqual([
      'bad_reply',
      'bad_reply',
      'unknown_command',
      'wrong_device',
    ]);
    expect((await commandOf(t, c.id))?.status).toBe('DELIVERED');

    // a reply after expiry
    b.behaviour = 'silent';
    const late = await send(t, { deviceId: b.deviceId, name: 'reboot', expiresAt: new Date(Date.now() + 1000).toISOString() });
    await statusBecomes(t, late.id, 'EXPIRED', 10_000);
    const before = await deadLetters(b.deviceId);
    await b.reply({ id: late.id, status: 'succeeded' });
    await until(async () => (await deadLetters(b.deviceId)).length === before.length + 1, 10_000, 'late reply dead-lettered');
    expect((await deadLetters(b.deviceId)).at(-1)?.reason).toMatch(/^command_(expired|ended)$/);
    expect((await commandOf(t, late.id))?.status).toBe('EXPIRED');
  }, 40_000);

  it("should apply one batch of replies about several commands in each command's order, refusing what a single reply would", async () => {
    const t = await tenant(3);
    const lamps = await Promise.all(t.deviceIds.map((id) => device(id)));
    for (const l of lamps) {
      l.behaviour = 'silent';
      await online(l.deviceId);
    }
    const [a, b, c] = await Promise.all(lamps.map((l) => send(t, { deviceId: l.deviceId, name: 'reboot' })));
    for (const x of [a, b, c]) await statusBecomes(t, x?.id as string, 'SENT');
    const [da, db, dc] = lamps.map((l) => l.deviceId) as [string, string, string];
    const item = (deviceId: string, reply: { id: string; status: 'received' | 'succeeded' | 'failed'; result?: unknown }) => ({
      deviceId,
      topic: `devices/${deviceId}/commands/reply`,
      receivedAt: Date.now(),
      reply,
      raw: JSON.stringify(reply),
    });
    const unknown = randomUUID();
    await workers.dispatcher.replies({
      orgId: t.orgId,
      replies: [
        item(da, { id: a?.id as string, status: 'received' }),
        item(db, { id: b?.id as string, status: 'succeeded', result: { ok: 1 } }), // no `received` first
        item(da, { id: a?.id as string, status: 'succeeded', result: { ok: 2 } }),
        item(da, { id: a?.id as string, status: 'succeeded' }), // a repeated delivery: a duplicate, not refused
        item(db, { id: c?.id as string, status: 'succeeded' }), // another device's command
        item(dc, { id: unknown, status: 'succeeded' }),
      ],
    });
    const ca = await commandOf(t, a?.id as string);
    expect(ca?.status).toBe('SUCCEEDED');
    expect(ca?.result).toEqual({ ok: 2 });
    expect(ca?.history.map((h) => [h.status, h.evidence.reply ?? null])).toEqual([
      ['QUEUED', null],
      ['SENT', null],
      ['DELIVERED', 'received'],
      ['SUCCEEDED', 'succeeded'],
    ]);
    const cb = await commandOf(t, b?.id as string);
    expect(cb?.status).toBe('SUCCEEDED');
    expect(cb?.history.map((h) => h.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    expect((await commandOf(t, c?.id as string))?.status).toBe('SENT');
    expect((await deadLetters(db)).map((d) => d.reason)).toEqual(['wrong_device']);
    expect((await deadLetters(dc)).map((d) => d.reason)).toEqual(['unknown_command']);
    expect(await deadLetters(da)).toEqual([]);
  }, 30_000);

  it('should refuse a stale desired-state version with CONFLICT, send the delta, and resend it when the device reconnects differing', async () => {
    const t = await tenant(1);
    const SET = `mutation($d: ID!, $p: JSON!, $v: Int!) { setDesiredState(deviceId: $d, patch: $p, expectedVersion: $v) { desired version delta inSync } }`;
    const STATE = `query($d: ID!) { devicesOutOfState(first: 10) { edges { node { device { id } state { desired reported delta inSync version } } } } }`;
    const deviceId = t.deviceIds[0] as string;
    const s1 = (await f.ok(t.operator, SET, { d: deviceId, p: { level: 30 }, v: 0 })).setDesiredState;
    expect(s1).toEqual({ desired: { level: 30 }, version: 1, delta: { level: 30 }, inSync: false });
    const stale = await f.run(t.operator, SET, { d: deviceId, p: { level: 50 }, v: 0 });
    expect(codes(stale)).toEqual(['CONFLICT']);
    const drift = (await f.ok(t.viewer, STATE, { d: deviceId })).devicesOutOfState.edges;
    expect(drift.map((e: { node: { device: { id: string } } }) => e.node.device.id)).toEqual([deviceId]);

    // the device comes online reporting level 0: it gets the delta, applies it and reports again
    const lamp = await device(deviceId, { state: { level: 0 } });
    // applied: the test device sets its state after its `received` reply, so wait for the state itself
    await until(async () => lamp.executed.length === 1 && lamp.state.level === 30, 10_000, 'setState applied');
    expect(lamp.received[0]).toMatchObject({ name: 'setState', params: { desired: { level: 30 }, version: 1 } });
    await lamp.announce();
    await until(async () => (await f.ok(t.viewer, STATE, { d: deviceId })).devicesOutOfState.edges.length === 0, 10_000, 'in sync');
    // reconnect with a reported state that differs again (e.g. a power cut reset the lamp)
    await lamp.drop();
    lamp.state = { level: 100 };
    await lamp.connect();
    await until(async () => lamp.executed.length === 2, 10_000, 'delta resent');
    expect(lamp.received[1]).toMatchObject({ name: 'setState', params: { desired: { level: 30 } } });
  }, 40_000);

  it('should let another organization see, send and cancel nothing, viewers only read, keys need commands:write', async () => {
    const t = await tenant(1);
    const other = await tenant(1);
    const c = await send(t, { deviceId: t.deviceIds[0], name: 'reboot' });
    expect((await f.ok(other.viewer, COMMAND, { id: c.id })).command).toBeNull();
    expect((await f.ok(other.viewer, 'query($ids: [ID!]!) { commandsByIds(ids: $ids) { id } }', { ids: [c.id] })).commandsByIds).toEqual([
      null,
    ]);
    const list = await f.ok(other.viewer, 'query($d: [ID!]) { commands(filter: { deviceIds: $d }) { edges { node { id } } } }', {
      d: t.deviceIds,
    });
    expect(list.commands.edges).toEqual([]);
    expect(codes(await f.run(other.operator, SEND, { i: { deviceId: t.deviceIds[0], name: 'reboot' } }))).toEqual(['NOT_FOUND']);
    expect(codes(await f.run(other.operator, 'mutation($id: ID!) { cancelCommand(id: $id) { id } }', { id: c.id }))).toEqual(['NOT_FOUND']);
    expect(
      codes(
        await f.run(
          other.operator,
          'mutation($d: ID!) { setDesiredState(deviceId: $d, patch: {level: 1}, expectedVersion: 0) { version } }',
          {
            d: t.deviceIds[0],
          },
        ),
      ),
    ).toEqual(['NOT_FOUND']);
    expect(
      codes(await f.run(other.admin, 'mutation($p: ID!) { setProfileCommands(profileId: $p, commands: []) { id } }', { p: t.profileId })),
    ).toEqual(['NOT_FOUND']);
    const entity = await f.ok(
      other.viewer,
      'query($r: [_Any!]!) { _entities(representations: $r) { ... on Device { commands { edges { node { id } } } state { version } } } }',
      {
        r: [{ __typename: 'Device', id: t.deviceIds[0] }],
      },
    );
    expect(entity._entities).toEqual([{ commands: { edges: [] }, state: null }]);
    // roles and scopes
    expect(codes(await f.run(t.viewer, SEND, { i: { deviceId: t.deviceIds[0], name: 'reboot' } }))).toEqual(['FORBIDDEN']);
    const readKey = f.as(t.orgId, 'admin', 'apikey', ['commands:read']);
    expect(codes(await f.run(readKey, SEND, { i: { deviceId: t.deviceIds[0], name: 'reboot' } }))).toEqual(['FORBIDDEN']);
    expect((await f.ok(readKey, COMMAND, { id: c.id })).command.id).toBe(c.id);
    const writeKey = f.as(t.orgId, 'admin', 'apikey', ['commands:write']);
    expect((await f.ok(writeKey, 'mutation($id: ID!) { cancelCommand(id: $id) { status } }', { id: c.id })).cancelCommand.status).toBe(
      'CANCELED',
    );
    expect(codes(await f.run(f.as(t.orgId, 'admin', 'apikey', ['devices:read']), COMMAND, { id: c.id }))).toEqual(['FORBIDDEN']);
    const { rows } = await sql<{ action: string }>`select action from audit_logs where entity_id = ${c.id} order by at`.execute(f.t.db);
    expect(rows.map((r) => r.action)).toEqual(['command.send', 'command.cancel']);
  });

  it("should publish commandUpdated on the command's organization's channel only", async () => {
    const t = await tenant(1);
    const other = await tenant(1);
    const sub = f.ctx.redis.duplicate();
    const got: { channel: string; event: { field: string; orgId: string; filter: Record<string, unknown>; data: unknown } }[] = [];
    sub.on('message', (channel, msg) => got.push({ channel, event: JSON.parse(msg) }));
    await sub.subscribe(eventsChannel(f.ctx.config.REDIS_PREFIX, t.orgId), eventsChannel(f.ctx.config.REDIS_PREFIX, other.orgId));
    try {
      const lamp = await device(t.deviceIds[0] as string);
      await online(lamp.deviceId);
      const c = await send(t, { deviceId: lamp.deviceId, name: 'reboot' });
      await statusBecomes(t, c.id, 'SUCCEEDED');
      await until(() => got.filter((g) => g.event.field === 'commandUpdated').length >= 4, 5000, 'four events');
      const mine = got.filter((g) => g.event.field === 'commandUpdated');
      expect(mine.every((g) => g.channel === eventsChannel(f.ctx.config.REDIS_PREFIX, t.orgId) && g.event.orgId === t.orgId)).toBe(true);
      expect(mine.map((g) => (g.event.data as { status: string }).status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
      expect(mine[0]?.event.filter).toMatchObject({ deviceId: lamp.deviceId, jobId: null });
    } finally {
      sub.disconnect();
    }
  });
});
