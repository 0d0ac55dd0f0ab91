// bench:auth — device authentication at the broker edge.
//
// 1. EMQX HTTP authentication and authorization against the ingest role's endpoints (the same
//    handler as `rulr start ingest`, in a child process, `tsx bench/auth.ts --serve`), with
//    BENCH_DEVICES provisioned devices:
//    - cold: nothing cached anywhere, BENCH_COLD devices connect (argon2id for each; concurrency =
//      DEVICE_AUTH_MAX_HASHING, what one process verifies at once);
//    - reconnect after an ingest restart: the verification cache in Redis is warm (the fleet
//      connected before), the process is new; every device connects once at BENCH_RATE;
//    - warm: the fleet keeps connecting at BENCH_RATE for BENCH_DURATION_S (authentication), then
//      publishes being authorized at BENCH_RATE (authorization, EMQX before 5.8);
//    - bare: the same server with a handler that reads the body and answers allow at once, just
//      before the warm runs (the machine's baseline, the ratios in the table are to it);
//    fixed-rate (open-loop) over BENCH_CONNECTIONS keep-alive connections (EMQX's pool_size 16).
// 2. The Mosquitto dynamic-security sync: BENCH_SYNC_DEVICES new credentials into an empty
//    dynamic security of a Mosquitto started here with deploy/mosquitto/mosquitto.conf, once per
//    broker of BENCH_SYNC_BROKERS (default `system,2.1`: the machine's `mosquitto`, Debian 12's
//    2.0.11, and 2.1.2, the version docker-compose.yml pins, built from Debian's source package by
//    scripts/mosquitto-2.1.sh if it is not yet); or BENCH_MOSQUITTO (a broker binary) with
//    BENCH_DYNSEC_PLUGIN (its plugin) instead. DYNSEC_BATCH unset: the sync's choice by version.
//
// BENCH_PARTS=http or sync runs one part; BENCH_CPU_PROF=<dir> writes the endpoints' CPU
// profiles; BENCH_TAIL=1 prints where the requests over 20 ms were.
//
// Full run (the targets: p99 < 5 ms warm at 5,000/s with 100,000 devices; 10,000 synced < 30 s):
//   npm run bench:auth
// Smoke run:
//   BENCH_DEVICES=2000 BENCH_RATE=1000 BENCH_DURATION_S=5 BENCH_COLD=100 BENCH_SYNC_DEVICES=300 npm run bench:auth
// Only the sync, only on 2.1 (the 2.0.11 sync of 10,000 takes 7–8 minutes):
//   BENCH_PARTS=sync BENCH_SYNC_BROKERS=2.1 npx tsx bench/auth.ts
// A full-size run (100,000 devices) or BENCH_WRITE=1 writes its section of bench/RESULTS.md (both parts).

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { Pool } from 'undici';
import { createBrokerAuth } from '../ingest/broker-auth/create.js';
import { verificationEntry } from '../ingest/broker-auth/verifier.js';
import { loadConfig } from '../lib/config.js';
import { handoffKey, sealHandoff } from '../lib/contracts/broker-handoff.js';
import { createDb } from '../lib/db.js';
import { generateDeviceSecret, hashDeviceSecret } from '../lib/device-credentials.js';
import { readBody, ServiceServer } from '../lib/http.js';
import { createLogger } from '../lib/logger.js';
import { createRedis } from '../lib/redis.js';
import { RoleContext } from '../lib/role.js';
import { migrateToLatest } from '../schema/migrate.js';
import { startSecuredBroker } from '../test/support/secured-broker.js';
import { DynsecClient } from '../workers/broker-sync/dynsec-client.js';
import { DynsecSync } from '../workers/broker-sync/dynsec-sync.js';
import { loadNote } from './load-note.js';
import { encodeRequests, type runOpenLoopRaw } from './open-loop.js';
import { runOpenLoopInChild } from './open-loop-child.js';
import { recordStalls, showStalls } from './stalls.js';

const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DB_NAME = 'rulr_bench_auth';
const DEVICES = Number(process.env.BENCH_DEVICES ?? 100_000);
const RATE = Number(process.env.BENCH_RATE ?? 5000);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 30);
const COLD = Math.min(DEVICES, Number(process.env.BENCH_COLD ?? 2000));
const SYNC = Number(process.env.BENCH_SYNC_DEVICES ?? 10_000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
/**
 * Requests in flight per connection (HTTP/1.1 pipelining), by default as the EMQX that deploy/emqx/emqx.conf
 * configures sends them: 16 connections (`pool_size`) with up to 100 each (`enable_pipelining`, also EMQX's
 * default). BENCH_PIPELINING=1 is one at a time per connection (the figures before 2026-12-04).
 */
const PIPELINING = Number(process.env.BENCH_PIPELINING ?? 100);
/**
 * Seconds of each steady phase's load (bare, warm authentication, warm authorization) sent first by the
 * same generator process and not counted: a fresh process's own code runs cold for its first second or
 * so, and the requests it is late to send count as server latency (BENCH_TAIL showed the slow ones
 * bunched there, for the bare server too). The reconnect phase has none (each device once).
 */
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
const MAX_HASHING = Number(process.env.DEVICE_AUTH_MAX_HASHING ?? 16);
/** unset: the sync's own choice by the broker's version */
const SYNC_BATCH = process.env.DYNSEC_BATCH ? Number(process.env.DYNSEC_BATCH) : undefined;
/** Another Mosquitto build for the sync instead of BENCH_SYNC_BROKERS: the broker binary and its dynamic-security plugin. */
const MOSQUITTO = process.env.BENCH_MOSQUITTO;
const DYNSEC_PLUGIN = process.env.BENCH_DYNSEC_PLUGIN;
/** The brokers the sync is measured on, in order: `system` (the machine's mosquitto), `2.1` (scripts/mosquitto-2.1.sh's build). */
const SYNC_BROKERS = (process.env.BENCH_SYNC_BROKERS ?? 'system,2.1').split(',').filter(Boolean);

interface SyncBroker {
  version: string;
  mosquitto?: string;
  plugin?: string;
}
const versionOf = (bin: string) => /mosquitto version (\S+)/.exec(spawnSync(bin, ['-h'], { encoding: 'utf8' }).stdout)?.[1] ?? '2.0';
/** The builds the sync part runs on (2.1 is built here first if it is not yet: about half a minute). */
function syncBrokers(): SyncBroker[] {
  if (MOSQUITTO) return [{ version: versionOf(MOSQUITTO), mosquitto: MOSQUITTO, ...(DYNSEC_PLUGIN ? { plugin: DYNSEC_PLUGIN } : {}) }];
  return SYNC_BROKERS.map((b) => {
    if (b === 'system') return { version: versionOf('mosquitto') };
    if (b !== '2.1') throw new Error(`BENCH_SYNC_BROKERS: unknown broker ${b} (system, 2.1)`);
    const out = spawnSync('bash', [new URL('../scripts/mosquitto-2.1.sh', import.meta.url).pathname], { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`scripts/mosquitto-2.1.sh failed: ${out.stderr.slice(-2000)}`);
    const path = (k: string) => new RegExp(`^${k}=(.+)$`, 'm').exec(out.stdout)?.[1];
    const mosquitto = path('BENCH_MOSQUITTO');
    const plugin = path('BENCH_DYNSEC_PLUGIN');
    if (!mosquitto || !plugin) throw new Error(`scripts/mosquitto-2.1.sh printed no paths: ${out.stdout}`);
    return { version: versionOf(mosquitto), mosquitto, plugin };
  });
}
/** BENCH_STALLS=1: both processes note event-loop stalls over 10 ms (wall-clock times, to line up with each other and with --trace-gc) */
const STALLS = process.env.BENCH_STALLS === '1';
/** extra node flags for the endpoints' child processes, e.g. `--trace-gc` (its lines are printed with the wall-clock time they arrived) */
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** The endpoints' node flags: ingest's, as deploy/k8s/ingest.yaml sets them (NODE_OPTIONS), unless BENCH_INGEST_NODE_FLAGS says otherwise. */
const INGEST_NODE_FLAGS = (process.env.BENCH_INGEST_NODE_FLAGS ?? '--max-old-space-size=256 --max-semi-space-size=16')
  .split(' ')
  .filter(Boolean);
/** Which parts run (a comma-separated subset; for profiling one of them): http, sync. */
const PARTS = new Set((process.env.BENCH_PARTS ?? 'http,sync').split(','));
const WRITE = process.env.BENCH_WRITE === '1' || DEVICES >= 100_000;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/**
 * `--serve`: ingest's broker-auth handler on a free port; prints `ready <port>` once it could answer
 * (its credential directory loaded, as ingest's /readyz waits for). `--serve-bare`: the same server
 * with a handler that reads the body and answers allow at once (what this machine's HTTP costs).
 */
async function serve(bare: boolean): Promise<void> {
  const cfg = loadConfig();
  const ctx = new RoleContext(cfg, createLogger(cfg.LOG_LEVEL));
  const auth = bare ? undefined : await createBrokerAuth(ctx, ctx.logger);
  await auth?.ready;
  const allow = JSON.stringify({ result: 'allow', is_superuser: false });
  const handle = auth
    ? (req: IncomingMessage, res: ServerResponse) => auth.brokerAuth.handle(req, res)
    : async (req: IncomingMessage, res: ServerResponse) => {
        await readBody(req, 32_768);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': allow.length }).end(allow);
        return true;
      };
  const server = new ServiceServer({ name: 'ingest', port: 0, handle });
  process.stdout.write(`ready ${await server.listen()}\n`);
  if (STALLS) {
    const r = recordStalls();
    setInterval(() => {
      for (const s of r.take().stalls) process.stderr.write(`[${bare ? 'bare' : 'server'}] stall ${s.at} ${s.ms} ms\n`);
    }, 1000).unref();
  }
  process.on('SIGTERM', async () => {
    await server.close(1000);
    await auth?.close();
    await ctx.close();
    process.exit(0);
  });
}

async function recreate(): Promise<string> {
  const admin = new pg.Client({ connectionString: `${PG}/postgres` });
  await admin.connect();
  await admin.query(`drop database if exists ${DB_NAME} with (force)`);
  await admin.query(`create database ${DB_NAME}`);
  await admin.end();
  const url = `${PG}/${DB_NAME}`;
  const m = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  await migrateToLatest(m);
  await m.destroy();
  return url;
}

interface Device {
  id: string;
  credentialId: string;
  username: string;
}

/**
 * An organization with `n` devices, one secret credential each. All share one secret and its hash:
 * hashing 100,000 distinct secrets with argon2id would take about 10 minutes of setup, and the
 * work of a verification is the same; every cache is per credential.
 */
async function seed(url: string, n: number, secret: string, handoff?: Buffer): Promise<Device[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const hash = await hashDeviceSecret(secret);
    const tag = randomBytes(4).toString('hex');
    const org = await c.query<{ id: string }>('insert into organizations (slug, name) values ($1, $1) returning id', [`bench-${tag}`]);
    const orgId = org.rows[0]?.id as string;
    const out: Device[] = [];
    for (let i = 0; i < n; i += 10_000) {
      const count = Math.min(10_000, n - i);
      const devs = await c.query<{ id: string }>(
        `insert into devices (org_id, serial, name) select $1, $2 || g, $2 || g from generate_series($3::int, $4::int) g returning id`,
        [orgId, `B-${tag}-`, i, i + count - 1],
      );
      const ids = devs.rows.map((r) => r.id);
      const usernames = ids.map((id) => `${id}.${randomBytes(4).toString('hex')}`);
      const handoffs = handoff ? usernames.map((u) => sealHandoff(handoff, u, secret)) : null;
      const creds = await c.query<{ id: string; device_id: string; username: string }>(
        `insert into device_credentials (org_id, device_id, username, secret_hash, hash_scheme, broker_handoff)
         select $1, d, u, $4, 'argon2id', h from unnest($2::uuid[], $3::text[], $5::bytea[]) as t(d, u, h) returning id, device_id, username`,
        [orgId, ids, usernames, hash, handoffs ?? ids.map(() => null)],
      );
      for (const r of creds.rows) out.push({ id: r.device_id, credentialId: r.id, username: r.username });
    }
    return out;
  } finally {
    await c.end();
  }
}

/** The endpoints in a child process; BENCH_CPU_PROF=<dir> writes its CPU profile there. */
async function child(env: Record<string, string>, bare = false): Promise<{ port: number; proc: ChildProcess }> {
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : [];
  const mode = bare ? '--serve-bare' : '--serve';
  const proc = spawn(
    process.execPath,
    [...prof, ...INGEST_NODE_FLAGS, ...NODE_ARGS, '--import', 'tsx', new URL(import.meta.url).pathname, mode],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (l) => {
      const m = /^ready (\d+)$/.exec(l);
      if (m) resolve(Number(m[1]));
      else if (NODE_ARGS.length) process.stderr.write(`[${bare ? 'bare' : 'server'} ${Date.now()}] ${l}\n`);
    });
    proc.once('exit', (code) => reject(new Error(`auth server exited (${code})`)));
  });
  return { port, proc };
}
const stop = async (proc: ChildProcess) => {
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
};

/** The `allow` answers a server gave so far (its /metrics). */
async function allows(port: number, endpoint: 'authn' | 'authz'): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const re = new RegExp(`^rulr_broker_auth_answers_total\\{[^}]*endpoint="${endpoint}"[^}]*result="allow"[^}]*\\} (\\d+)`, 'gm');
  return [...text.matchAll(re)].reduce((s, m) => s + Number(m[1]), 0);
}

/** What a server's /metrics says about its process: CPU seconds, GC pause totals by kind, heap used (MB). */
async function processStats(port: number) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const one = (re: RegExp) => [...text.matchAll(re)].reduce((s, m) => s + Number(m[1]), 0);
  const gc = (kind: string, what: 'sum' | 'count') =>
    one(new RegExp(`^rulr_nodejs_gc_duration_seconds_${what}\\{[^}]*kind="${kind}"[^}]*\\} (\\S+)`, 'gm'));
  return {
    cpu: one(/^rulr_process_cpu_seconds_total (\S+)/gm),
    minorS: gc('minor', 'sum'),
    minorN: gc('minor', 'count'),
    majorS: gc('major', 'sum') + gc('incremental', 'sum'),
    majorN: gc('major', 'count'),
    heapMb: one(/^rulr_nodejs_heap_size_used_bytes (\S+)/gm) / 1048576,
    // prom-client's event-loop delay histogram (monitorEventLoopDelay, a 10 ms timer: each value includes
    // those 10 ms), reset at every scrape: in the scrape after a phase, the delay over that phase
    loopP99Ms: one(/^rulr_nodejs_eventloop_lag_p99_seconds (\S+)/gm) * 1000,
    loopMaxMs: one(/^rulr_nodejs_eventloop_lag_max_seconds (\S+)/gm) * 1000,
  };
}
type Stats = Awaited<ReturnType<typeof processStats>>;
/** The server's work over one phase of `requests` requests, in words. */
const phaseStats = (a: Stats, b: Stats, requests: number) =>
  `${Math.round(((b.cpu - a.cpu) * 1e6) / requests)} µs of CPU per request; GC ${b.minorN - a.minorN} scavenges ${Math.round((b.minorS - a.minorS) * 1000)} ms in all, ${b.majorN - a.majorN} full ${Math.round((b.majorS - a.majorS) * 1000)} ms (incremental steps included); heap ${Math.round(b.heapMb)} MB after; event-loop delay p99 ${b.loopP99Ms.toFixed(1)} ms, max ${b.loopMaxMs.toFixed(1)} ms`;

const authnBody = (d: Device, secret: string) =>
  JSON.stringify({ username: d.username, password: secret, clientid: d.id, peerhost: '10.1.2.3', cert_pem: '' });
const authzBody = (d: Device) =>
  JSON.stringify({
    username: d.username,
    clientid: d.id,
    peerhost: '10.1.2.3',
    topic: `devices/${d.id}/telemetry`,
    action: 'publish',
    qos: '1',
    retain: 'false',
  });

/** Closed loop, `concurrency` requests in flight: every device of `devices` once. */
async function closedLoop(port: number, bodies: string[], concurrency: number) {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency, pipelining: 1 });
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < bodies.length) {
        const body = bodies[next++] as string;
        const t = performance.now();
        const r = await pool.request({ path: '/mqtt/auth', method: 'POST', headers: { 'content-type': 'application/json' }, body });
        await r.body.text();
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0) * 10) / 10;
  return { rps: bodies.length / seconds, p50: pct(0.5), p99: pct(0.99), seconds };
}

type Run = Awaited<ReturnType<typeof runOpenLoopRaw>> & { work: string };
interface HttpResults {
  cold: Awaited<ReturnType<typeof closedLoop>>;
  coldAllowed: number;
  reconnect: Run;
  reconnectAllowed: number;
  bare: Run;
  warm: Run;
  authnAllowed: number;
  authz: Run;
  authzAllowed: number;
}

/** Part 1: the EMQX endpoints, cold, after a restart, warm, and the bare server beside them. */
async function http(url: string, secret: string, rulrSecretEnv: string): Promise<HttpResults> {
  console.log(`seeding ${fmt(DEVICES)} devices…`);
  const devices = await seed(url, DEVICES, secret);
  const prefix = `rulr-bench-auth-${randomBytes(4).toString('hex')}:`;
  const env = {
    DATABASE_URL: url,
    REDIS_URL,
    REDIS_PREFIX: prefix,
    RULR_SECRET: rulrSecretEnv,
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
    DEVICE_AUTH_MAX_HASHING: String(MAX_HASHING),
  };
  const redis = createRedis(REDIS_URL);

  // 1a. cold: argon2id for each device
  let server = await child(env);
  console.log(`cold: ${fmt(COLD)} devices, ${MAX_HASHING} at a time…`);
  const cold = await closedLoop(
    server.port,
    devices.slice(0, COLD).map((d) => authnBody(d, secret)),
    MAX_HASHING,
  );
  const coldAllowed = await allows(server.port, 'authn');
  await stop(server.proc);

  // 1b. the fleet connected before: its verification cache entries are in Redis
  const rulrSecret = loadConfig(env).RULR_SECRET;
  for (let i = 0; i < devices.length; i += 5000) {
    const p = redis.pipeline();
    for (const d of devices.slice(i, i + 5000)) {
      const e = verificationEntry(prefix, rulrSecret, d.credentialId, secret);
      p.set(e.key, e.value, 'EX', 3600);
    }
    await p.exec();
  }
  // the bare server idles beside it until its turn
  const bareServer = await child(env, true);
  server = await child(env);
  // each open-loop run first sends one unmeasured request per connection
  const measuredAllows = async (endpoint: 'authn' | 'authz', before: number) =>
    (await allows(server.port, endpoint)) - before - CONNECTIONS;
  /** `bodies` in turn to `path` of `port`, at RATE for `durationS`; BENCH_TAIL=1 prints where the slow requests were */
  const fixedRate = async (port: number, path: string, bodies: string[], durationS: number, warmupS = 0) => {
    const url = `http://127.0.0.1:${port}${path}`;
    // read before the warm-up, not between (a /metrics scrape mid-run stalls the server it measures)
    const before = await processStats(port);
    const r = await runOpenLoopInChild(
      {
        url,
        rate: RATE,
        durationS,
        connections: CONNECTIONS,
        pipelining: PIPELINING,
        tail: !!process.env.BENCH_TAIL,
        stalls: STALLS,
        warmupS,
      },
      encodeRequests(new URL(url), {}, bodies),
    );
    if (r.slow.length)
      console.log(
        `  requests over 20 ms, worst per 250 ms (epoch ms of the slot:ms): ${r.slow.map(([at, ms]) => `${at}:${Math.round(ms)}`).join(' ')}`,
      );
    const work = `${phaseStats(before, await processStats(port), r.completed + r.warmupCompleted)}; the load generator's event-loop delay p99 ${r.loopP99.toFixed(1)} ms, max ${r.loopMax.toFixed(1)} ms`;
    console.log(`  server: ${work}`);
    if (STALLS) console.log(`  ${showStalls('load generator', r.stalls)}`);
    return { ...r, work };
  };
  const bodies = devices.map((d) => authnBody(d, secret));
  console.log(`reconnect after a restart: ${fmt(devices.length)} devices at ${fmt(RATE)}/s…`);
  const reconnect = await fixedRate(server.port, '/mqtt/auth', bodies, Math.max(1, devices.length / RATE));
  const reconnectAllowed = await measuredAllows('authn', 0);
  const shuffled = [...bodies].sort(() => Math.random() - 0.5);
  console.log(`bare server (reads the body, answers allow): ${fmt(RATE)}/s for ${DURATION_S} s…`);
  const bare = await fixedRate(bareServer.port, '/mqtt/auth', shuffled, DURATION_S, WARMUP_S);
  await stop(bareServer.proc);
  console.log(`warm: authentication at ${fmt(RATE)}/s for ${DURATION_S} s…`);
  const warm = await fixedRate(server.port, '/mqtt/auth', shuffled, DURATION_S, WARMUP_S);
  // the warm-up's requests are allowed too
  const warmup = (r: { warmupCompleted: number }) => r.warmupCompleted;
  const authnAllowed = (await measuredAllows('authn', reconnectAllowed + CONNECTIONS)) - warmup(warm);
  console.log(`warm: authorization at ${fmt(RATE)}/s for ${DURATION_S} s…`);
  const authz = await fixedRate(server.port, '/mqtt/acl', devices.map(authzBody), DURATION_S, WARMUP_S);
  const authzAllowed = (await measuredAllows('authz', 0)) - warmup(authz);
  await stop(server.proc);
  const keys = await redis.keys(`${prefix}*`);
  for (let i = 0; i < keys.length; i += 10_000) await redis.del(...keys.slice(i, i + 10_000));
  await redis.quit();
  return { cold, coldAllowed, reconnect, reconnectAllowed, bare, warm, authnAllowed, authz, authzAllowed };
}

interface SyncResults {
  version: string;
  batch: number;
  seconds: number;
  created: number;
  messages: number;
  atBroker: number;
  firstMs: number;
  lastMs: number;
  fileMb: number;
}

/** Part 2: SYNC new credentials into an empty dynamic security, one reconcile. */
async function sync(url: string, secret: string, rulrSecret: string, build: SyncBroker): Promise<SyncResults> {
  console.log(`dynamic security (Mosquitto ${build.version}): ${fmt(SYNC)} new credentials…`);
  const broker = await startSecuredBroker({
    ...(build.mosquitto ? { mosquitto: build.mosquitto } : {}),
    ...(build.plugin ? { plugin: build.plugin } : {}),
  });
  const db = createDb({ url, poolSize: 2 });
  try {
    await db.updateTable('device_credentials').set({ revoked_at: new Date() }).execute();
    await seed(url, SYNC, secret, handoffKey(rulrSecret));
    const client = new DynsecClient({ url: broker.url, username: broker.adminUsername, password: broker.adminPassword });
    await client.connect();
    // per control message: how long the broker took, and whether it created clients
    const perMessage: { ms: number; creates: number }[] = [];
    const send = client.send.bind(client);
    client.send = async (commands) => {
      const t0 = performance.now();
      const r = await send(commands);
      perMessage.push({ ms: performance.now() - t0, creates: commands.filter((c) => c.command === 'createClient').length });
      return r;
    };
    const s = new DynsecSync({ db, client, group: 'ingest', rulrSecret, services: [], batch: SYNC_BATCH, logger: createLogger('warn') });
    const t = performance.now();
    const r = await s.reconcile();
    const seconds = (performance.now() - t) / 1000;
    const creating = perMessage.filter((m) => m.creates > 0);
    const perClientMs = (m: { ms: number; creates: number } | undefined) => (m ? m.ms / m.creates : 0);
    const [list] = await client.send([{ command: 'listClients', verbose: false }]);
    const atBroker = ((list?.data?.clients ?? []) as (string | { username: string })[])
      .map((c) => (typeof c === 'string' ? c : c.username))
      .filter((u) => u.includes('.')).length;
    const out = {
      version: build.version,
      batch: s.batch,
      seconds,
      created: r.created,
      messages: client.messagesSent,
      atBroker,
      firstMs: perClientMs(creating[0]),
      lastMs: perClientMs(creating.at(-1)),
      fileMb: statSync(broker.dynsecFile).size / 1048576,
    };
    await s.close();
    await client.close();
    return out;
  } finally {
    await db.destroy();
    await broker.stop();
  }
}

async function main(): Promise<void> {
  const started = new Date();
  const loadBefore = os.loadavg()[0] ?? 0;
  const url = await recreate();
  const secret = generateDeviceSecret();
  const rulrSecret = randomBytes(32).toString('base64url');
  const h = PARTS.has('http') ? await http(url, secret, rulrSecret) : undefined;
  const ys: SyncResults[] = [];
  if (PARTS.has('sync')) {
    const rulrSecretValue = loadConfig({ RULR_SECRET: rulrSecret }).RULR_SECRET;
    for (const build of syncBrokers()) ys.push(await sync(url, secret, rulrSecretValue, build));
  }

  const row = (name: string, r: { rps: number; p50: number; p99: number }, note: string) =>
    `| ${name} | ${fmt(r.rps)} | ${r.p50} | ${r.p99} | ${note} |`;
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(1)}×` : 'n/a');
  const section = [
    '<!-- bench:auth:start -->',
    '## Device authentication (`npm run bench:auth`)',
    '',
    `Run ${started.toISOString().slice(0, 16)}Z on ${os.availableParallelism()} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ${loadNote(loadBefore, os.loadavg()[0] ?? 0)}.`,
    `Command: \`npm run bench:auth\` (env: BENCH_DEVICES=${DEVICES}, BENCH_RATE=${RATE}, BENCH_DURATION_S=${DURATION_S}, BENCH_COLD=${COLD}, BENCH_SYNC_DEVICES=${SYNC}, BENCH_CONNECTIONS=${CONNECTIONS}, BENCH_PIPELINING=${PIPELINING}, BENCH_WARMUP_S=${WARMUP_S}, DEVICE_AUTH_MAX_HASHING=${MAX_HASHING}, BENCH_INGEST_NODE_FLAGS=${INGEST_NODE_FLAGS.join(' ')}, DYNSEC_BATCH=${SYNC_BATCH ?? '(unset)'}${MOSQUITTO ? `, BENCH_MOSQUITTO=${MOSQUITTO}` : `, BENCH_SYNC_BROKERS=${SYNC_BROKERS.join(',')}`}${DYNSEC_PLUGIN ? `, BENCH_DYNSEC_PLUGIN=${DYNSEC_PLUGIN}` : ''}).`,
    `Setup: own database \`${DB_NAME}\` with ${fmt(DEVICES)} devices, one argon2id secret credential each (one shared secret and hash: hashing ${fmt(DEVICES)} distinct ones would take most of the run; every cache is per credential). The endpoints run in a child process (the handler of \`rulr start ingest\`, production mode, measured once its credential directory is loaded, as ingest's /readyz waits for) with its own credential pool of 2 and ingest's node flags (\`${INGEST_NODE_FLAGS.join(' ')}\`, as deploy/k8s/ingest.yaml); load comes from a generator process of its own (\`bench/open-loop-child.ts\`: nothing on its heap but the connections, the requests in one off-heap buffer) over ${CONNECTIONS} keep-alive connections${PIPELINING > 1 ? ` with up to ${PIPELINING} requests in flight on each (HTTP/1.1 pipelining, as EMQX's client: deploy/emqx/emqx.conf)` : ' (one request in flight on each)'}, at a fixed rate with latency counted from the scheduled time (\`bench/open-loop.ts\`); the bare, warm authentication and warm authorization phases begin with ${WARMUP_S} s of the same load over the same connections from the same generator process, not counted (a fresh process's own code and new connections are slow for the first second, and what is sent late counts as latency), except the cold run (closed loop from this process, ${MAX_HASHING} in flight). The bare server is the same ServiceServer in its own child process with a handler that reads the body and answers allow at once: what HTTP costs on this machine at that moment, measured just before the warm runs. Targets: p99 under 5 ms warm at 5,000 requests/s; 10,000 devices synced into dynamic security under 30 s.`,
    '',
    ...(h
      ? [
          '| run | requests/s | p50 ms | p99 ms | answers |',
          '| --- | ---: | ---: | ---: | --- |',
          row(`cold: ${fmt(COLD)} devices, nothing cached (argon2id each)`, h.cold, `${fmt(h.coldAllowed)} of ${fmt(COLD)} allowed`),
          row(
            `reconnect after an ingest restart: ${fmt(DEVICES)} devices once, Redis cache warm`,
            h.reconnect,
            `${fmt(h.reconnectAllowed)} of ${fmt(h.reconnect.completed)} allowed; the whole fleet offered in ${(DEVICES / RATE).toFixed(0)} s; p99 ${ratio(h.reconnect.p99, h.bare.p99)} the bare server's`,
          ),
          row(
            `bare server (same framework, allow at once), ${DURATION_S} s`,
            h.bare,
            `${fmt(h.bare.completed)} answered, ${h.bare.errors} errors`,
          ),
          row(
            `warm authentication, ${DURATION_S} s`,
            h.warm,
            `${fmt(h.authnAllowed)} of ${fmt(h.warm.completed)} allowed; p50 ${ratio(h.warm.p50, h.bare.p50)}, p99 ${ratio(h.warm.p99, h.bare.p99)} the bare server's`,
          ),
          row(
            `warm authorization (publish), ${DURATION_S} s`,
            h.authz,
            `${fmt(h.authzAllowed)} of ${fmt(h.authz.completed)} allowed; p50 ${ratio(h.authz.p50, h.bare.p50)}, p99 ${ratio(h.authz.p99, h.bare.p99)} the bare server's`,
          ),
          '',
          "The endpoints' process during each phase (its /metrics before and after: CPU, V8 GC pauses, heap; less sensitive to other work on the machine than the latencies):",
          '',
          `- reconnect: ${h.reconnect.work}`,
          `- bare server: ${h.bare.work}`,
          `- warm authentication: ${h.warm.work}`,
          `- warm authorization: ${h.authz.work}`,
          '',
        ]
      : []),
    ...ys.flatMap((y) => [
      `Mosquitto ${y.version} dynamic security: ${fmt(y.created)} clients created by one reconcile in ${y.seconds.toFixed(1)} s (${fmt(y.created / y.seconds)} clients/s, target 10,000 under 30 s: ${y.created < 10_000 ? 'not measured at this size' : y.seconds < 30 ? 'met' : 'missed'}; ${y.messages} control messages of up to ${y.batch} commands, one \`createClient\` with its role inline per device; ${fmt(y.atBroker)} device clients at the broker after): ${y.firstMs.toFixed(1)} ms per client in the first control message, ${y.lastMs.toFixed(1)} ms in the last, a ${y.fileMb.toFixed(1)} MB file at the end${y.version.startsWith('2.0') ? ` (so about ${fmt(y.created)} saves of the whole file, ${(y.fileMb / 2).toFixed(1)} MB on average: ${((y.created * y.fileMb) / 2 / 1024).toFixed(1)} GB serialized and written; the per-client cost of one save, ${((y.lastMs / Math.max(1, y.created)) * 1000).toFixed(1)} µs from the last message, puts 10,000 from empty at ${(((y.lastMs / Math.max(1, y.created)) * 10_000 * 10_000) / 2 / 1000).toFixed(0)} s whatever the client sends)` : ''}.`,
      '',
    ]),
    ...(ys.length
      ? [
          `Mosquitto 2.0.x saves its whole dynamic-security file after every command, even within one control message (\`plugins/dynamic-security/clients.c\`, \`dynsec__config_save()\` at the end of \`createClient\`), so there the time per client grows with the clients already there; 2.1 saves once per control message (docs/broker-auth.md). The 2.1 here is Debian's source package (sid's 2.1.2-3, SHA-256 checked) built by \`scripts/mosquitto-2.1.sh\` into \`.cache/\`, the version \`docker-compose.yml\` pins.`,
        ]
      : []),
    '<!-- bench:auth:end -->',
  ].join('\n');
  console.log(section);
  if (WRITE && h && ys.length) {
    const path = new URL('./RESULTS.md', import.meta.url);
    const md = readFileSync(path, 'utf8');
    const re = /<!-- bench:auth:start -->[\s\S]*<!-- bench:auth:end -->/;
    writeFileSync(path, re.test(md) ? md.replace(re, section) : `${md.trimEnd()}\n\n${section}\n`);
  } else console.log('(a smoke or partial run: bench/RESULTS.md left as it is; BENCH_WRITE=1 with both parts writes it)');
}

if (process.argv.includes('--serve') || process.argv.includes('--serve-bare')) void serve(process.argv.includes('--serve-bare'));
else
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
