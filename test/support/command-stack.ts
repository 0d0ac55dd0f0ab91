import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import { type IngestHandle, startIngest } from '../../ingest/index.js';
import { type Broker, startNoDropBroker } from '../../ingest/testing/broker.js';
import { contextFor, ingestEnv } from '../../ingest/testing/fixtures.js';
import { createLogger } from '../../lib/logger.js';
import type { RoleContext } from '../../lib/role.js';
import { createSubgraph as createCommandsSubgraph } from '../../subgraphs/commands/index.js';
import { CommandJobRunner } from '../../workers/command-jobs.js';
import { CommandDispatcher } from '../../workers/commands.js';
import { type SubgraphFixture, subgraphFixture } from '../devices-fixtures.js';
import { REDIS_URL } from './env.js';

export type CommandsFixture = SubgraphFixture<ReturnType<typeof createCommandsSubgraph>>;

/**
 * The real pieces commands cross, for end-to-end tests: the commands subgraph over its own test
 * database and Redis prefix, a Mosquitto of its own (no message dropped) and ingest on it (device
 * status and replies through the shared subscription). Workers are added with {@link inProcessWorkers},
 * or run as a child process (workers/testing/run-commands.ts).
 */
export interface CommandStack {
  f: CommandsFixture;
  broker: Broker;
  ingest: IngestHandle;
  close(): Promise<void>;
}

export async function commandStack(): Promise<CommandStack> {
  const f = await subgraphFixture(createCommandsSubgraph);
  const broker = await startNoDropBroker();
  const { ctx: ingestCtx }: { ctx: RoleContext } = contextFor(
    ingestEnv({ dbUrl: f.t.url, mqttUrl: broker.url, prefix: f.ctx.config.REDIS_PREFIX, extra: { REDIS_URL, INGEST_BATCH_MS: '20' } }),
  );
  const ingest = await startIngest(ingestCtx, { port: 0 });
  await ingest.subscribed;
  return {
    f,
    broker,
    ingest,
    async close() {
      await ingest.close();
      await ingestCtx.close();
      await broker.stop();
      await f.close();
    },
  };
}

/** The workers' command dispatcher and fleet-job runner in the test process, on the stack's database, Redis prefix and broker. */
export async function inProcessWorkers(
  s: CommandStack,
  o: { sweepMs?: number; leaseS?: number; timeoutS?: number; jobs?: boolean } = {},
): Promise<{ dispatcher: CommandDispatcher; runner?: CommandJobRunner; mqtt: MqttClient; close(): Promise<void> }> {
  const client = await mqtt.connectAsync(s.broker.url, { clientId: `workers-${randomUUID()}`, protocolVersion: 5 });
  const common = { db: s.f.t.db, redis: s.f.ctx.redis, prefix: s.f.ctx.config.REDIS_PREFIX, logger: createLogger('silent') };
  const dispatcher = new CommandDispatcher({
    ...common,
    redisUrl: REDIS_URL,
    mqtt: client,
    sweepMs: o.sweepMs ?? 200,
    leaseS: o.leaseS ?? 5,
    timeoutS: o.timeoutS ?? 5,
  }).start();
  const runner =
    o.jobs === false
      ? undefined
      : new CommandJobRunner({
          ...common,
          tickMs: o.sweepMs ?? 200,
          sender: dispatcher,
          leaseS: o.leaseS ?? 5,
        }).start();
  return {
    dispatcher,
    ...(runner ? { runner } : {}),
    mqtt: client,
    async close() {
      await runner?.close();
      await dispatcher.close();
      await client.endAsync();
    },
  };
}

/** The street-light commands the tests' profiles declare. */
export const STREET_LIGHT_COMMANDS = [
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
  { name: 'switch', params: { type: 'object', properties: { on: { type: 'boolean' } }, required: ['on'] } },
  { name: 'reboot' },
];

export interface SiteTenant {
  orgId: string;
  /** the root site; devices sit in its child `districtId` */
  siteId: string;
  districtId: string;
  profileId: string;
  /** sorted: the order a job releases them */
  deviceIds: string[];
  admin: ReturnType<CommandsFixture['as']>;
  operator: ReturnType<CommandsFixture['as']>;
  viewer: ReturnType<CommandsFixture['as']>;
}

const label = (id: string) => id.replaceAll('-', '_');

/**
 * An organization with a city site, a district below it holding `n` street lights (inserted in
 * one statement) of a profile declaring {@link STREET_LIGHT_COMMANDS}, and its people.
 */
export async function siteTenant(f: CommandsFixture, n: number): Promise<SiteTenant> {
  const orgId = await f.org();
  const [siteId, districtId] = [randomUUID(), randomUUID()];
  await sql`insert into sites (id, org_id, name, path) values (${siteId}, ${orgId}, 'City', ${label(siteId)}::ltree)`.execute(f.t.db);
  await sql`insert into sites (id, org_id, parent_id, name, path)
    values (${districtId}, ${orgId}, ${siteId}, 'District', ${`${label(siteId)}.${label(districtId)}`}::ltree)`.execute(f.t.db);
  const { rows } = await sql<{ id: string }>`
    insert into device_profiles (org_id, name, commands) values (${orgId}, 'street light', ${JSON.stringify(STREET_LIGHT_COMMANDS.map((c) => ({ params: { type: 'object' }, timeoutSeconds: 30, ...c })))}::jsonb)
    returning id`.execute(f.t.db);
  const profileId = (rows[0] as { id: string }).id;
  const { rows: devs } = await sql<{ id: string }>`
    insert into devices (org_id, serial, name, profile_id, site_id)
    select ${orgId}, 'SL-' || i, 'Lamp ' || i, ${profileId}, ${districtId} from generate_series(1, ${n}) as i
    returning id`.execute(f.t.db);
  return {
    orgId,
    siteId,
    districtId,
    profileId,
    deviceIds: devs.map((d) => d.id).sort(),
    admin: f.as(orgId, 'admin'),
    operator: f.as(orgId, 'operator'),
    viewer: f.as(orgId, 'viewer'),
  };
}

export const JOB_FIELDS = `id status name params timeoutSeconds rolloutPerMinute abortReason createdBy completedAt
  site { id } abortWhen { failedPercent minDevices }
  progress { total queued sent delivered succeeded failed expired canceled }`;

export const SEND_SITE = `mutation($i: SendSiteCommandInput!) { sendSiteCommand(input: $i) { ${JOB_FIELDS} } }`;
export const JOB = `query($id: ID!) { commandJob(id: $id) { ${JOB_FIELDS} } }`;

export interface JobView {
  id: string;
  status: string;
  abortReason: string | null;
  progress: Record<'total' | 'queued' | 'sent' | 'delivered' | 'succeeded' | 'failed' | 'expired' | 'canceled', number>;
}

export async function jobOf(f: CommandsFixture, t: SiteTenant, id: string): Promise<JobView | null> {
  return (await f.ok(t.viewer, JOB, { id })).commandJob as JobView | null;
}
