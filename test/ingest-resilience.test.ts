import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type IngestHandle, startIngest } from '../ingest/index.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { contextFor, type Fleet, ingestEnv, publisher, seedFleet, until } from '../ingest/testing/fixtures.js';
import { createRedis } from '../lib/redis.js';
import type { RoleContext } from '../lib/role.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';
import { TcpProxy } from './support/tcp-proxy.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

let t: TestDatabase;
let broker: Broker;
let sql: pg.Client;
let pub: MqttClient;
const prefixes: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  broker = await startNoDropBroker();
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  pub = await publisher(broker.url);
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

afterAll(async () => {
  await pub?.endAsync();
  await sql?.end();
  const r = createRedis(REDIS_URL);
  for (const p of prefixes) {
    const keys = await r.keys(`${p}*`);
    if (keys.length) await r.del(...keys);
  }
  await r.quit();
  await broker?.stop();
  await t?.drop();
});

const rows = async (f: Fleet) => Number((await sql.query('select count(*) n from device_metrics where org_id = $1', [f.orgId])).rows[0].n);

/** Publishes `messages` QoS 1 messages of `values` readings each, round-robin over the fleet, with unique timestamps. */
async function burst(f: Fleet, messages: number, values: number, t0 = Date.now() - 600_000): Promise<number> {
  const names = ['power', 'temp', 'energy', 'a', 'b', 'c', 'd', 'e', 'f', 'g'].slice(0, values);
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < messages; i++) {
    const v: Record<string, number> = {};
    for (const n of names) v[n] = (i * 7) % 200;
    sends.push(
      pub.publishAsync(`devices/${f.deviceIds[i % f.deviceIds.length]}/telemetry`, JSON.stringify({ ts: t0 + i, values: v }), { qos: 1 }),
    );
    if (sends.length >= 500) await Promise.all(sends.splice(0));
  }
  await Promise.all(sends);
  return messages * values;
}

async function checkExactlyOnce(f: Fleet, expected: number): Promise<void> {
  const r = await sql.query(
    `select count(*)::int n, count(distinct (device_id, metric, time))::int d from device_metrics where org_id = $1`,
    [f.orgId],
  );
  expect(r.rows[0]).toEqual({ n: expected, d: expected });
  const h = await sql.query(`select coalesce(sum(count), 0)::int n from metrics_hourly_live where org_id = $1`, [f.orgId]);
  expect(h.rows[0].n).toBe(expected);
}

function startChild(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn('npx', ['tsx', 'ingest/testing/run-ingest.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env, INGEST_PORT: '0' },
    detached: true,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`ingest exited early (${code})`)));
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    process.kill(-(child.pid as number), signal);
  } catch {
    /* already gone */
  }
  return exited;
}

async function inProcess(env: Record<string, string>, onCommit?: (n: number) => void): Promise<{ h: IngestHandle; ctx: RoleContext }> {
  const { ctx } = contextFor(env);
  const h = await startIngest(ctx, { port: 0, ...(onCommit ? { onCommit: (m) => onCommit(m.length) } : {}) });
  cleanups.push(async () => {
    await h.close();
    await ctx.close();
  });
  await h.subscribed;
  return { h, ctx };
}

describe('ingest loses nothing', () => {
  it('should store every reading exactly once when the ingest process is SIGKILLed mid-burst and restarted', async () => {
    const f = await seedFleet(t.url, { devices: 50 });
    const env = ingestEnv({ dbUrl: t.url, mqttUrl: broker.url, extra: { REDIS_URL, INGEST_BATCH_SIZE: '2000' } });
    prefixes.push(env.REDIS_PREFIX as string);
    const first = await startChild(env);
    cleanups.push(() => killGroup(first, 'SIGKILL'));
    const total = burst(f, 6000, 5);
    await until(async () => (await rows(f)) > 3000, 30_000, 'some rows');
    await killGroup(first, 'SIGKILL');
    const expected = await total;
    const atKill = await rows(f);
    expect(atKill).toBeLessThan(expected);

    const second = await startChild(env);
    cleanups.push(() => killGroup(second, 'SIGTERM'));
    await until(async () => (await rows(f)) >= expected, 60_000, 'all rows');
    await new Promise((r) => setTimeout(r, 500));
    await checkExactlyOnce(f, expected);
  });

  it('should stop acknowledging, bound its memory, and store everything once the database comes back', async () => {
    const f = await seedFleet(t.url, { devices: 20 });
    const proxy = new TcpProxy(5432);
    const port = await proxy.listen();
    cleanups.push(() => proxy.close());
    const url = new URL(t.url);
    url.host = `127.0.0.1:${port}`;
    const env = ingestEnv({
      dbUrl: url.toString(),
      mqttUrl: broker.url,
      extra: { REDIS_URL, INGEST_MAX_PENDING: '400', INGEST_BATCH_SIZE: '500' },
    });
    prefixes.push(env.REDIS_PREFIX as string);
    const { h } = await inProcess(env);

    const part1 = await burst(f, 300, 2, Date.now() - 900_000);
    await until(async () => (await rows(f)) === part1, 20_000, 'part 1');

    proxy.cut();
    const part2 = burst(f, 2000, 2, Date.now() - 800_000);
    let maxPending = 0;
    const watch = setInterval(() => {
      maxPending = Math.max(maxPending, h.pipeline.pendingMessages);
    }, 10);
    await new Promise((r) => setTimeout(r, 2500));
    expect(await rows(f)).toBe(part1);
    expect(h.pipeline.pendingMessages).toBeGreaterThan(0);
    proxy.restore();
    const expected = part1 + (await part2);
    await until(async () => (await rows(f)) === expected, 60_000, 'all rows after the outage');
    clearInterval(watch);
    expect(maxPending).toBeLessThanOrEqual(401);
    await checkExactlyOnce(f, expected);
  });

  it('should split a burst between two ingest processes of one shared-subscription group with no loss and no duplicates', async () => {
    const f = await seedFleet(t.url, { devices: 40 });
    const group = `g${randomBytes(4).toString('hex')}`;
    const envA = ingestEnv({ dbUrl: t.url, mqttUrl: broker.url, group, extra: { REDIS_URL } });
    const envB = { ...envA, INGEST_CLIENT_ID: `${envA.INGEST_CLIENT_ID}-b` };
    prefixes.push(envA.REDIS_PREFIX as string);
    let a = 0;
    let b = 0;
    await inProcess(envA, (n) => {
      a += n;
    });
    await inProcess(envB, (n) => {
      b += n;
    });
    const expected = await burst(f, 4000, 3);
    await until(async () => (await rows(f)) === expected, 30_000, 'all rows');
    await new Promise((r) => setTimeout(r, 300));
    expect(a).toBeGreaterThan(500);
    expect(b).toBeGreaterThan(500);
    expect(a + b).toBe(4000);
    await checkExactlyOnce(f, expected);
  });
});
