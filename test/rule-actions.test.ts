import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IngestHandle, startIngest } from '../ingest/index.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { contextFor, ingestEnv, until } from '../ingest/testing/fixtures.js';
import type { Identity } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import type { RoleContext } from '../lib/role.js';
import { createSubgraph as createRulesSubgraph } from '../subgraphs/rules/index.js';
import { CommandDispatcher } from '../workers/commands.js';
import { RuleEvaluator } from '../workers/rule-eval.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';
import { TestDevice } from './support/command-device.js';
import { REDIS_URL } from './support/env.js';

// Rule actions end to end: a rule defined through the rules subgraph, evaluated by the workers'
// RuleEvaluator (and its timers), sends commands and sets desired state through lib/commands.ts in
// the alarm's transaction; the command dispatcher delivers them over Mosquitto to a test device.

let f: SubgraphFixture<ReturnType<typeof createRulesSubgraph>>;
let broker: Broker;
let ingestCtx: RoleContext;
let ingest: IngestHandle;
let workersMqtt: MqttClient;
let dispatcher: CommandDispatcher;
let ev: RuleEvaluator;
const lamps: TestDevice[] = [];

beforeAll(async () => {
  f = await subgraphFixture(createRulesSubgraph);
  broker = await startNoDropBroker();
  const prefix = f.ctx.config.REDIS_PREFIX;
  ({ ctx: ingestCtx } = contextFor(
    ingestEnv({ dbUrl: f.t.url, mqttUrl: broker.url, prefix, extra: { REDIS_URL, INGEST_BATCH_MS: '20' } }),
  ));
  ingest = await startIngest(ingestCtx, { port: 0 });
  await ingest.subscribed;
  workersMqtt = await mqtt.connectAsync(broker.url, { clientId: `workers-${randomUUID()}`, protocolVersion: 5 });
  const logger = createLogger('silent');
  dispatcher = new CommandDispatcher({
    db: f.t.db,
    redis: f.ctx.redis,
    redisUrl: REDIS_URL,
    prefix,
    mqtt: workersMqtt,
    logger,
    sweepMs: 200,
    leaseS: 5,
    timeoutS: 5,
  }).start();
  ev = new RuleEvaluator({ db: f.t.db, redis: f.ctx.redis, redisUrl: REDIS_URL, prefix, logger, actions: { timeoutS: 5, expiryS: 600 } });
}, 60_000);

afterAll(async () => {
  for (const d of lamps) await d.close().catch(() => undefined);
  await ev?.close();
  await dispatcher?.close();
  await workersMqtt?.endAsync();
  await ingest?.close();
  await ingestCtx?.close();
  await broker?.stop();
  await f?.close();
});

const SPECS = [
  {
    name: 'setDim',
    params: {
      type: 'object',
      properties: { level: { type: 'integer', minimum: 0, maximum: 100 } },
      required: ['level'],
      additionalProperties: false,
    },
    timeoutSeconds: 10,
  },
];

interface Tenant {
  orgId: string;
  profileId: string;
  deviceIds: string[];
  operator: Identity;
}

/** An organization with a street-light profile declaring `setDim` and `n` devices of it. */
async function tenant(n = 1): Promise<Tenant> {
  const orgId = await f.org();
  const profile = await f.t.db
    .insertInto('device_profiles')
    .values({ org_id: orgId, name: 'street light', commands: JSON.stringify(SPECS) })
    .returning('id')
    .executeTakeFirstOrThrow();
  const deviceIds = Array.from({ length: n }, () => randomUUID());
  await f.t.db
    .insertInto('devices')
    .values(
      deviceIds.map((id, i) => ({ id, org_id: orgId, serial: `L-${i}-${id.slice(0, 8)}`, name: `lamp ${i}`, profile_id: profile.id })),
    )
    .execute();
  return { orgId, profileId: profile.id, deviceIds, operator: f.as(orgId, 'operator') };
}

async function lamp(id: string): Promise<TestDevice> {
  const d = new TestDevice(id, broker.url);
  lamps.push(d);
  await d.connect();
  await until(async () => (await f.ctx.redis.hget(`${f.ctx.config.REDIS_PREFIX}status:${id}`, 'online')) === '1', 10_000, 'online');
  return d;
}

const CREATE = `mutation($input: CreateRuleInput!) { createRule(input: $input) { id actions { kind trigger name params patch } } }`;
const UPDATE = `mutation($id: ID!, $input: UpdateRuleInput!) { updateRule(id: $id, input: $input) { id actions { kind name } } }`;

async function createRule(t: Tenant, input: Record<string, unknown>): Promise<{ id: string; actions: unknown[] }> {
  const r = await f.ok(t.operator, CREATE, {
    input: { name: `R ${randomUUID().slice(0, 8)}`, severity: 'MAJOR', metric: 'voltage', operator: 'GT', threshold: 253, ...input },
  });
  return r.createRule;
}

let clock = Date.now() - 600_000;
/** One rule-eval job: each device's voltage `v`, one second after the previous job. */
const voltage = (t: Tenant, v: number, deviceIds = t.deviceIds) => {
  clock += 1000;
  return ev.evaluate({ orgId: t.orgId, readings: deviceIds.map((deviceId) => ({ deviceId, metric: 'voltage', ts: clock, value: v })) });
};

const commandsOf = async (deviceId: string) =>
  (
    await sql<{ name: string; params: Record<string, unknown>; created_by: string; status: string }>`
      select name, params, created_by, status from commands where device_id = ${deviceId} order by created_at, id`.execute(f.t.db)
  ).rows;

describe('rule actions (PostgreSQL, Redis, Mosquitto)', () => {
  it('should send setDim once when a rule raises, and nothing more while the alarm stays active or the job is retried', async () => {
    const t = await tenant();
    const device = await lamp(t.deviceIds[0] as string);
    const rule = await createRule(t, {
      profileId: t.profileId,
      actions: [{ kind: 'COMMAND', name: 'setDim', params: { level: 30 } }],
    });
    expect(rule.actions).toEqual([{ kind: 'COMMAND', trigger: 'RAISE', name: 'setDim', params: { level: 30 }, patch: null }]);
    clock += 1000;
    const job = { orgId: t.orgId, readings: [{ deviceId: device.deviceId, metric: 'voltage', ts: clock, value: 260 }] };
    expect((await ev.evaluate(job)).raised).toBe(1);
    expect((await ev.evaluate(job)).raised).toBe(0); // a retry of the same job
    await voltage(t, 262); // still breaching: the alarm is refreshed, no action
    await voltage(t, 265);
    await until(async () => (await commandsOf(device.deviceId))[0]?.status === 'SUCCEEDED', 15_000, 'setDim SUCCEEDED');
    const cmds = await commandsOf(device.deviceId);
    expect(cmds).toEqual([{ name: 'setDim', params: { level: 30 }, created_by: `rule:${rule.id}`, status: 'SUCCEEDED' }]);
    await new Promise((r) => setTimeout(r, 500));
    expect(device.received.map((m) => [m.name, m.params])).toEqual([['setDim', { level: 30 }]]);
    expect(device.state).toMatchObject({ level: 30 });
  });

  it('should queue one command per raise of a flapping rule, and run CLEAR actions on clear', async () => {
    const t = await tenant();
    const rule = await createRule(t, {
      profileId: t.profileId,
      actions: [
        { kind: 'COMMAND', name: 'setDim', params: { level: 10 } },
        { kind: 'COMMAND', trigger: 'CLEAR', name: 'setDim', params: { level: 100 } },
      ],
    });
    // breach, recover, breach, recover, breach: 3 raises and 2 clears over 5 readings, plus 3 readings while active
    for (const v of [260, 261, 262, 230, 260, 230, 260, 261]) await voltage(t, v);
    const cmds = await commandsOf(t.deviceIds[0] as string);
    expect(cmds.map((c) => c.params.level)).toEqual([10, 100, 10, 100, 10]);
    expect(new Set(cmds.map((c) => c.created_by))).toEqual(new Set([`rule:${rule.id}`]));
  });

  it('should merge a setDesiredState action into the desired state and send the delta as setState', async () => {
    const t = await tenant();
    const device = await lamp(t.deviceIds[0] as string);
    const rule = await createRule(t, { actions: [{ kind: 'SET_DESIRED_STATE', patch: { level: 0, mode: 'safe' } }] });
    await voltage(t, 270);
    const { rows } = await sql<{ desired: Record<string, unknown>; version: number }>`
      select desired, version from device_states where device_id = ${device.deviceId}`.execute(f.t.db);
    expect(rows[0]).toMatchObject({ desired: { level: 0, mode: 'safe' }, version: 1 });
    await until(async () => device.state.mode === 'safe', 15_000, 'device reached the desired state');
    const cmds = await commandsOf(device.deviceId);
    expect(cmds).toHaveLength(1);
    expect(cmds[0]).toMatchObject({
      name: 'setState',
      created_by: `rule:${rule.id}`,
      params: { desired: { level: 0, mode: 'safe' }, version: 1 },
    });
    expect(device.received.filter((m) => m.name === 'setState')).toHaveLength(1);
  });

  it('should fire the action of a rule that waits when its durable timer raises the alarm, once', async () => {
    const t = await tenant();
    await createRule(t, {
      kind: 'EXPRESSION',
      metric: null,
      operator: null,
      threshold: null,
      expression: 'voltage > 253',
      forSeconds: 1,
      actions: [{ kind: 'COMMAND', name: 'setDim', params: { level: 50 } }],
    });
    await ev.evaluate({
      orgId: t.orgId,
      readings: [{ deviceId: t.deviceIds[0] as string, metric: 'voltage', ts: Date.now() - 5000, value: 260 }],
    });
    // the condition held long ago enough: the reading (or the timer, with no reading) raises
    await ev.wait.sweep();
    await ev.wait.sweep();
    const cmds = await commandsOf(t.deviceIds[0] as string);
    expect(cmds.map((c) => c.params)).toEqual([{ level: 50 }]);
  });

  it('should refuse invalid actions with BAD_USER_INPUT naming the field', async () => {
    const t = await tenant();
    const field = async (input: Record<string, unknown>) => {
      const r = await f.run(t.operator, CREATE, {
        input: { name: `R ${randomUUID().slice(0, 8)}`, severity: 'MAJOR', metric: 'voltage', operator: 'GT', threshold: 253, ...input },
      });
      expect(codes(r)).toEqual(['BAD_USER_INPUT']);
      return r.errors?.[0]?.extensions?.field;
    };
    const scoped = (actions: unknown[]) => ({ profileId: t.profileId, actions });
    expect(await field(scoped([{ kind: 'COMMAND', name: 'selfDestruct' }]))).toBe('input.actions[0].name');
    expect(await field(scoped([{ kind: 'COMMAND', name: 'setDim', params: { level: 200 } }]))).toBe('input.actions[0].params.level');
    expect(await field(scoped([{ kind: 'COMMAND', name: 'setDim', params: { level: 5, colour: 'red' } }]))).toBe(
      'input.actions[0].params.colour',
    );
    expect(await field({ actions: [{ kind: 'COMMAND' }] })).toBe('input.actions[0].name');
    expect(await field({ actions: [{ kind: 'COMMAND', name: 'setState' }] })).toBe('input.actions[0].name');
    expect(await field({ actions: [{ kind: 'COMMAND', name: 'setDim', patch: { level: 1 } }] })).toBe('input.actions[0].patch');
    expect(await field({ actions: [{ kind: 'SET_DESIRED_STATE' }] })).toBe('input.actions[0].patch');
    expect(await field({ actions: [{ kind: 'SET_DESIRED_STATE', patch: {} }] })).toBe('input.actions[0].patch');
    expect(await field({ actions: [{ kind: 'SET_DESIRED_STATE', patch: { level: 1 }, name: 'x' }] })).toBe('input.actions[0].name');
    expect(await field({ actions: Array.from({ length: 6 }, () => ({ kind: 'SET_DESIRED_STATE', patch: { a: 1 } })) })).toBe(
      'input.actions',
    );
    // an update is checked against the profile too, and null removes the actions
    const rule = await createRule(t, { profileId: t.profileId, actions: [{ kind: 'COMMAND', name: 'setDim', params: { level: 1 } }] });
    const r = await f.run(t.operator, UPDATE, { id: rule.id, input: { actions: [{ kind: 'COMMAND', name: 'reboot' }] } });
    expect(r.errors?.[0]?.extensions?.field).toBe('input.actions[0].name');
    const removed = await f.ok(t.operator, UPDATE, { id: rule.id, input: { actions: null } });
    expect(removed.updateRule.actions).toEqual([]);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from rules where org_id = ${t.orgId}`.execute(f.t.db);
    expect(rows[0]?.n).toBe(1);
  });

  it("should not let another organization's rule act on this organization's devices", async () => {
    const victim = await tenant();
    const attacker = await tenant();
    // naming the victim's profile (to reach its devices) is refused
    const r = await f.run(attacker.operator, CREATE, {
      input: {
        name: 'steal',
        severity: 'MAJOR',
        metric: 'voltage',
        operator: 'GT',
        threshold: 0,
        profileId: victim.profileId,
        actions: [{ kind: 'COMMAND', name: 'setDim', params: { level: 0 } }],
      },
    });
    expect(codes(r)).toEqual(['BAD_USER_INPUT']);
    // an organization-wide rule of the attacker, fed a job that names the victim's device: nothing happens to it
    await createRule(attacker, {
      threshold: 0,
      actions: [
        { kind: 'COMMAND', name: 'setDim', params: { level: 0 } },
        { kind: 'SET_DESIRED_STATE', patch: { level: 0 } },
      ],
    });
    const s = await voltage(attacker, 230, [victim.deviceIds[0] as string, attacker.deviceIds[0] as string]);
    expect(s.raised).toBe(1);
    expect(await commandsOf(victim.deviceIds[0] as string)).toEqual([]);
    const { rows } = await sql<{
      n: number;
    }>`select count(*)::int as n from device_states where device_id = ${victim.deviceIds[0]}`.execute(f.t.db);
    expect(rows[0]?.n).toBe(0);
    expect((await commandsOf(attacker.deviceIds[0] as string)).map((c) => c.name).sort()).toEqual(['setDim', 'setState']);
  });

  it("should refuse, count and skip a command the device's own profile does not declare (rule without a profile)", async () => {
    const t = await tenant();
    await createRule(t, { actions: [{ kind: 'COMMAND', name: 'reboot' }] });
    const s = await voltage(t, 260);
    expect(s.raised).toBe(1);
    expect(await commandsOf(t.deviceIds[0] as string)).toEqual([]);
  });
});
