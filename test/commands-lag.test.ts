import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { sql } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../ingest/testing/fixtures.js';
import { COMMANDS_QUEUE, parseCommandsJob, type RepliesJob } from '../lib/contracts/commands.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { createLogger } from '../lib/logger.js';
import { CommandDispatcher } from '../workers/commands.js';
import { TestDevice } from './support/command-device.js';
import { type CommandStack, commandStack, STREET_LIGHT_COMMANDS } from './support/command-stack.js';
import { REDIS_URL } from './support/env.js';

// Timeouts are judged by the time a reply reached the platform, not by when the workers get to it
// (docs/commands.md, "Timeouts under lag"). The lag is real: the workers' `commands` queue is not
// consumed while the replies wait in it past the commands' timeouts (real clock, real Mosquitto,
// ingest, PostgreSQL and Redis); the test then applies the waiting jobs itself, in queue order.

let stack: CommandStack;
let queue: Queue;
let dispatcher: CommandDispatcher;
let client: MqttClient;
const devices: TestDevice[] = [];

beforeAll(async () => {
  stack = await commandStack();
  const { f } = stack;
  queue = new Queue(COMMANDS_QUEUE, { connection: f.ctx.redis, prefix: queuePrefix(f.ctx.config.REDIS_PREFIX) });
  client = await mqtt.connectAsync(stack.broker.url, { clientId: `workers-${randomUUID()}`, protocolVersion: 5 });
  // not started: no worker takes jobs and no sweep runs on its own
  dispatcher = new CommandDispatcher({
    db: f.t.db,
    redis: f.ctx.redis,
    redisUrl: REDIS_URL,
    prefix: f.ctx.config.REDIS_PREFIX,
    mqtt: client,
    logger: createLogger('silent'),
  });
}, 60_000);

afterAll(async () => {
  for (const d of devices) await d.close().catch(() => undefined);
  await dispatcher?.close();
  await client?.endAsync();
  await queue?.close();
  await stack?.close();
});

const statusOf = async (id: string) =>
  (await sql<{ status: string }>`select status from commands where id = ${id}`.execute(stack.f.t.db)).rows[0]?.status;

/** The replies waiting in the queue, by command id → reply statuses. */
async function waitingReplies(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const j of await queue.getWaiting()) {
    if (j?.name !== 'replies') continue;
    for (const r of (j.data as RepliesJob).replies) out.set(r.reply.id, [...(out.get(r.reply.id) ?? []), r.reply.status]);
  }
  return out;
}

describe('command timeouts under queue lag', () => {
  it('should not time out a command whose device answered in time while its reply waits in a lagging queue, and refuse a reply that came after the timeout', async () => {
    const { f } = stack;
    const orgId = await f.org();
    const profile = await sql<{ id: string }>`insert into device_profiles (org_id, name) values (${orgId}, 'lamp') returning id`.execute(
      f.t.db,
    );
    const profileId = profile.rows[0]?.id as string;
    await f.ok(
      f.as(orgId, 'admin'),
      'mutation($p: ID!, $c: [CommandSpecInput!]!) { setProfileCommands(profileId: $p, commands: $c) { id } }',
      {
        p: profileId,
        c: STREET_LIGHT_COMMANDS,
      },
    );
    const ids = { inTime: randomUUID(), silent: randomUUID(), late: randomUUID() };
    for (const [k, id] of Object.entries(ids))
      await sql`insert into devices (id, org_id, serial, name, profile_id) values (${id}, ${orgId}, ${`LAG-${k}-${id.slice(0, 6)}`}, ${k}, ${profileId})`.execute(
        f.t.db,
      );
    const inTime = new TestDevice(ids.inTime, stack.broker.url);
    const silent = new TestDevice(ids.silent, stack.broker.url);
    const late = new TestDevice(ids.late, stack.broker.url);
    silent.behaviour = 'silent';
    late.behaviour = 'silent'; // answers by hand below, after the timeout
    devices.push(inTime, silent, late);
    for (const d of devices) await d.connect();
    await until(
      async () =>
        (await Promise.all(Object.values(ids).map((id) => f.ctx.redis.hget(`${f.ctx.config.REDIS_PREFIX}status:${id}`, 'online')))).every(
          (v) => v === '1',
        ),
      10_000,
      'devices online',
    );
    const operator = f.as(orgId, 'operator');
    const send = async (deviceId: string) =>
      (
        (await f.ok(operator, 'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }', {
          i: { deviceId, name: 'setDim', params: { level: 30 }, timeoutSeconds: 2 },
        })) as { sendCommand: { id: string } }
      ).sendCommand.id;
    const cmd = { inTime: await send(ids.inTime), silent: await send(ids.silent), late: await send(ids.late) };
    // the workers send them, then fall behind: nothing takes the replies off the queue
    expect(await dispatcher.dispatch(orgId, Object.values(ids))).toBe(3);
    for (const id of Object.values(cmd)) expect(await statusOf(id)).toBe('SENT');
    await until(async () => (await waitingReplies()).get(cmd.inTime)?.includes('succeeded') === true, 10_000, 'in-time replies queued');
    const dueOf = async (id: string) =>
      Number((await sql<{ due_at: Date }>`select due_at from commands where id = ${id}`.execute(f.t.db)).rows[0]?.due_at?.getTime());
    const due = Math.max(await dueOf(cmd.late), await dueOf(cmd.inTime), await dueOf(cmd.silent));
    const inTimeDue = await dueOf(cmd.inTime);
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now()) + 300));
    await late.reply({ id: cmd.late, status: 'succeeded', result: { level: 30 } });
    await until(async () => (await waitingReplies()).has(cmd.late), 10_000, 'late reply queued');

    // the sweep, past every due time: only the command nobody answered fails
    await dispatcher.sweep();
    expect(await statusOf(cmd.silent)).toBe('FAILED');
    expect(await statusOf(cmd.inTime)).toBe('SENT');
    expect(await statusOf(cmd.late)).toBe('SENT');

    // the workers catch up, in queue order
    const jobs = (await queue.getWaiting()).filter((j) => j?.name === 'replies').sort((a, b) => a.timestamp - b.timestamp);
    for (const j of jobs) {
      await dispatcher.handle({ name: j.name, data: parseCommandsJob(j.name, j.data).job.data });
      await j.remove();
    }
    expect(await statusOf(cmd.inTime)).toBe('SUCCEEDED');
    expect(await statusOf(cmd.late)).toBe('SENT');
    const dead = await sql<{ reason: string; detail: string }>`
      select reason, detail from dead_letters where device_id = ${ids.late}`.execute(f.t.db);
    expect(dead.rows).toEqual([{ reason: 'command_timed_out', detail: expect.stringContaining('reached the platform at') }]);
    await dispatcher.sweep();
    expect(await statusOf(cmd.late)).toBe('FAILED');
    expect(await statusOf(cmd.inTime)).toBe('SUCCEEDED');
    const history = await sql<{ history: { status: string; at: string; evidence: { receivedAt?: string } }[] }>`
      select history from commands where id = ${cmd.inTime}`.execute(f.t.db);
    const h = history.rows[0]?.history ?? [];
    expect(h.map((x) => x.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    // the device's answer reached the platform before the due time, though it was applied after it
    expect(new Date(h[3]?.evidence.receivedAt as string).getTime()).toBeLessThan(inTimeDue);
    expect(new Date(h.at(-1)?.at as string).getTime()).toBeGreaterThan(inTimeDue);
  }, 60_000);
});
