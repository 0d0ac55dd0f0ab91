import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { pino } from 'pino';
import { startRoles } from '../../cli/roles.js';
import { seedDemo } from '../../cli/seed.js';
import { loadSimulatedDevices, simulate } from '../../cli/simulate.js';
import { type Broker, freePort, startNoDropBroker } from '../../ingest/testing/broker.js';
import { hashPassword } from '../../lib/auth.js';
import { type Config, loadConfig } from '../../lib/config.js';
import { deviceTopic } from '../../lib/contracts/mqtt-topics.js';
import type { Role } from '../../lib/identity.js';
import type { RoleHandle } from '../../lib/role.js';
import { portVar, SUBGRAPH_NAMES } from '../../lib/subgraphs.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { REDIS_URL } from './env.js';
import { type SecuredBroker, startSecuredBroker } from './secured-broker.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
/** Where browser tests and bench:console leave screenshots and logs (gitignored; CI keeps it). */
export const ARTIFACTS = join(ROOT, 'test-results/console');

export interface Login {
  email: string;
  password: string;
}

export interface PlatformOptions {
  /** demo street lights to seed @default 200 */
  devices?: number;
  /** run the fleet simulator: messages/s over how many devices (the first by serial); none when unset */
  simulate?: { rate: number; devices?: number; badFraction?: number; inProcess?: boolean; args?: string[] };
  /** extra configuration (environment variable names) */
  env?: Record<string, string>;
  /** platform log level, written to `<ARTIFACTS>/<name>.platform.log` @default 'warn' */
  logLevel?: string;
  /** names the log file @default 'platform' */
  name?: string;
  /** a migrated database to use (the bench's own); default: a clone of the test run's template */
  database?: TestDatabase;
  /** leave the demo city's lighting program unassigned (its desired levels would race a test's commands) @default false */
  withoutProgram?: boolean;
  /**
   * `secured`: the shipped Mosquitto configuration (dynamic security kept by the workers' sync,
   * anonymous off; test/support/secured-broker.ts), ingest and workers on their service accounts
   * @default 'no-drop' (an anonymous broker)
   */
  broker?: 'no-drop' | 'secured';
}

export interface Platform {
  cfg: Config;
  /** `http://127.0.0.1:<gateway port>` (the console at `/`, GraphQL at `/graphql`) */
  url: string;
  orgId: string;
  admin: Login;
  operator: Login;
  viewer: Login;
  t: TestDatabase;
  sql: pg.Client;
  broker: Broker;
  /** the secured broker (with `broker: 'secured'`) */
  secured?: SecuredBroker;
  /** id of a demo device by serial (`SL-000001` …) */
  deviceId(serial: string): Promise<string>;
  /** publishes one telemetry message for a device (QoS 1), as the device would */
  publish(deviceId: string, values: Record<string, number | boolean | string>, ts?: number): Promise<void>;
  /** a GraphQL request through the gateway */
  gql<T = unknown>(token: string | null, query: string, variables?: Record<string, unknown>): Promise<{ data?: T; errors?: GqlError[] }>;
  /** a user token through the public `login` mutation */
  login(who: Login): Promise<string>;
  close(): Promise<void>;
}

export interface GqlError {
  message: string;
  extensions?: { code?: string };
}

/** Adds a person with a role in the organization (as an admin's invitation would, without the mail). */
async function addMember(sql: pg.Client, orgId: string, role: Role, tag: string): Promise<Login> {
  const email = `${role}-${tag}@demo.rulr.io`;
  const password = randomBytes(12).toString('base64url');
  const u = await sql.query<{ id: string }>('insert into users (email, name, password_hash) values ($1, $2, $3) returning id', [
    email,
    `Demo ${role}`,
    await hashPassword(password),
  ]);
  await sql.query('insert into memberships (org_id, user_id, role) values ($1, $2, $3)', [orgId, u.rows[0]?.id, role]);
  return { email, password };
}

/**
 * The whole platform as `rulr start all` runs it (every role in this process, the same
 * `startRoles`), over a database of its own cloned from the migrated template, its own Redis prefix
 * (so its own BullMQ queues), and a private Mosquitto on an ephemeral port (so its own topics),
 * seeded with the demo organization (`rulr seed --demo`) plus an operator and a viewer, and,
 * when asked, the fleet simulator publishing for the demo street lights.
 */
export async function startPlatform(o: PlatformOptions = {}): Promise<Platform> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const t = o.database ?? (await createTestDatabase());
  const secured = o.broker === 'secured' ? await startSecuredBroker() : undefined;
  const broker: Broker = secured
    ? { url: secured.url, port: Number(new URL(secured.url).port), stop: () => secured.stop() }
    : await startNoDropBroker();
  const tag = randomBytes(4).toString('hex');
  const gatewayPort = await freePort();
  const env: Record<string, string> = {
    ...(secured
      ? {
          MQTT_INGEST_PASSWORD: `ingest-${randomBytes(12).toString('hex')}`,
          MQTT_WORKERS_PASSWORD: `workers-${randomBytes(12).toString('hex')}`,
          DYNSEC_ENABLED: 'true',
          DYNSEC_ADMIN_USERNAME: secured.adminUsername,
          DYNSEC_ADMIN_PASSWORD: secured.adminPassword,
        }
      : {}),
    DATABASE_URL: t.url,
    MQTT_URL: broker.url,
    REDIS_URL,
    REDIS_PREFIX: `t${tag}:`,
    INGEST_GROUP: `g${tag}`,
    INGEST_CLIENT_ID: `ingest-${tag}`,
    INGEST_BATCH_MS: '20',
    GATEWAY_PORT: String(gatewayPort),
    // every subgraph on an ephemeral port (the gateway calls them in process)
    ...Object.fromEntries(SUBGRAPH_NAMES.map((n) => [portVar(n), '0'])),
    INGEST_PORT: '0',
    WORKERS_PORT: '0',
    LOG_LEVEL: o.logLevel ?? 'warn',
    ...o.env,
  };
  const cfg = loadConfig({ ...process.env, ...env });
  const logFile = join(ARTIFACTS, `${o.name ?? 'platform'}.platform.log`);
  const logStream = createWriteStream(logFile);
  const logger = pino({ level: cfg.LOG_LEVEL, timestamp: pino.stdTimeFunctions.isoTime }, logStream);

  const seeded = await seedDemo(cfg, { devices: o.devices ?? 200, db: t.db, quiet: true });
  const sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  if (o.withoutProgram) await sql.query('delete from program_assignments where org_id = $1', [seeded.orgId]);
  const operator = await addMember(sql, seeded.orgId, 'operator', tag);
  const viewer = await addMember(sql, seeded.orgId, 'viewer', tag);

  let roles: RoleHandle;
  try {
    roles = await startRoles(cfg, logger, ['all']);
  } catch (e) {
    await sql.end();
    await broker.stop();
    await t.drop();
    throw e;
  }
  const url = `http://127.0.0.1:${gatewayPort}`;

  // The simulator: in this process (tests, small rates) or as `rulr simulate` in its own (the bench).
  const sim = new AbortController();
  let simDone: Promise<unknown> = Promise.resolve();
  let simChild: ChildProcess | undefined;
  if (o.simulate) {
    const n = o.simulate.devices ?? o.devices ?? 200;
    if (o.simulate.inProcess ?? true) {
      const devices = await loadSimulatedDevices(t.db, 'demo', n);
      simDone = simulate(devices, broker.url, {
        devices: n,
        rate: o.simulate.rate,
        badFraction: o.simulate.badFraction ?? 0,
        signal: sim.signal,
        log: () => undefined,
      }).catch((e: unknown) => logger.error({ err: e }, 'simulator failed'));
    } else {
      const simLog = createWriteStream(join(ARTIFACTS, `${o.name ?? 'platform'}.simulate.log`));
      simChild = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          join(ROOT, 'cli/main.ts'),
          'simulate',
          '--devices',
          String(n),
          '--rate',
          String(o.simulate.rate),
          '--bad-fraction',
          String(o.simulate.badFraction ?? 0),
          ...(o.simulate.args ?? []),
        ],
        { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      simChild.stdout?.pipe(simLog);
      simChild.stderr?.pipe(simLog);
      const child = simChild;
      simDone = new Promise((r) => child.once('exit', r));
    }
  }

  let pub: MqttClient | undefined;
  const publisher = async () => {
    pub ??= await mqtt.connectAsync(broker.url, { clientId: `e2e-${tag}-${randomBytes(3).toString('hex')}`, protocolVersion: 5 });
    return pub;
  };

  const gql: Platform['gql'] = async (token, query, variables = {}) => {
    const res = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    return (await res.json()) as { data?: never; errors?: GqlError[] };
  };

  return {
    cfg,
    url,
    orgId: seeded.orgId,
    admin: { email: seeded.email, password: seeded.password },
    operator,
    viewer,
    t,
    sql,
    broker,
    ...(secured ? { secured } : {}),
    async deviceId(serial) {
      const r = await sql.query<{ id: string }>('select id from devices where org_id = $1 and serial = $2', [seeded.orgId, serial]);
      const id = r.rows[0]?.id;
      if (!id) throw new Error(`no demo device ${serial}`);
      return id;
    },
    async publish(deviceId, values, ts = Date.now()) {
      const c = await publisher();
      await c.publishAsync(deviceTopic(deviceId, 'telemetry'), JSON.stringify({ ts, values }), { qos: 1 });
    },
    gql,
    async login(who) {
      const r = await gql<{ login: { token: string } }>(
        null,
        'mutation ($email: String!, $password: String!) { login(email: $email, password: $password) { token } }',
        { email: who.email, password: who.password },
      );
      const token = r.data?.login.token;
      if (!token) throw new Error(`login of ${who.email} failed: ${JSON.stringify(r.errors)}`);
      return token;
    },
    async close() {
      sim.abort();
      simChild?.kill('SIGTERM');
      await simDone;
      await pub?.endAsync().catch(() => undefined);
      await roles.close();
      await sql.end();
      await broker.stop();
      await new Promise((r) => logStream.end(r));
      await t.drop();
    },
  };
}
