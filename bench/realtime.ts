// `npm run bench:realtime` (issue 4): N concurrent graphql-ws subscribers on one gateway process,
// fed by MQTT → ingest → Redis, against a bare `ws` broadcast of the same frames to the same number
// of clients. Every server, client and publisher runs in its own child process; all of them are
// killed at the end (also on error or Ctrl-C).
// Options: --connections 10000 --duration 60 --rate 1000 --warmup 5 --clients <n> --concurrency 100
//          --only bare|gateway --cpu-prof --no-write --tsx --source mqtt|redis (redis: events straight to the
//          gateway's Redis channel, without MQTT and ingest)
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { type Broker, freePort, startNoDropBroker } from '../ingest/testing/broker.js';
import { issueToken } from '../lib/auth.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { createRedis } from '../lib/redis.js';
import { migrateToLatest } from '../schema/migrate.js';
import { adminUrl, dbUrl, REDIS_URL } from '../test/support/env.js';
import type { BareCommand, BareMessage } from './realtime/bare-server.js';
import type { ClientCommand, ClientMessage } from './realtime/client.js';
import { Histogram, MAX_MS } from './realtime/histogram.js';
import type { PublisherCommand, PublisherMessage } from './realtime/publisher.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '10000' },
    duration: { type: 'string', default: '60' },
    rate: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '5' },
    clients: { type: 'string' },
    concurrency: { type: 'string', default: '100' },
    only: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    tsx: { type: 'boolean', default: false },
    source: { type: 'string', default: 'mqtt' },
  },
});
const CONNECTIONS = Number(args.connections);
const DURATION = Number(args.duration);
const RATE = Number(args.rate);
const WARMUP = Number(args.warmup);
const CLIENTS = Number(args.clients ?? Math.max(2, Math.ceil(CONNECTIONS / 5000)));
const CONCURRENCY = Number(args.concurrency);
const SITES = 100;
const DEVICES_PER_SITE = 10;
const DB_NAME = 'rulr_bench_rt';
const QUERY =
  'subscription BenchTelemetry($siteId: ID) { telemetryUpdated(siteId: $siteId) { device { name } readings { metric value ts } } }';
/** `--cpu-prof` writes the gateway's profiles here (one per thread; the biggest is the main thread). */
const PROFILE_DIR = `${ROOT}bench/out/realtime-profile`;
/** The roles run compiled (like production: `tsc` into `bench/out/dist`); `--tsx` runs the sources through tsx (about 60 MB more RSS). */
const DIST = `${ROOT}bench/out/dist`;
const MAIN = args.tsx ? 'cli/main.ts' : 'bench/out/dist/cli/main.js';

function buildDist(): void {
  rmSync(DIST, { recursive: true, force: true });
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', DIST], { cwd: ROOT, encoding: 'utf8' });
  if (!existsSync(`${DIST}/cli/main.js`)) throw new Error(`tsc did not build ${DIST}: ${r.stdout}${r.stderr}`);
  const copy = (dir: string): void => {
    for (const e of readdirSync(`${ROOT}${dir}`, { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) copy(rel);
      else if (e.name.endsWith('.graphql')) {
        mkdirSync(`${DIST}/${dir}`, { recursive: true });
        copyFileSync(`${ROOT}${rel}`, `${DIST}/${rel}`);
      }
    }
  };
  for (const d of ['gateway', 'subgraphs', 'schema', 'ingest', 'workers', 'lib']) if (existsSync(`${ROOT}${d}`)) copy(d);
}

const log = (...a: unknown[]) => console.log(new Date().toISOString().slice(11, 19), ...a);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// child processes

const children = new Set<ChildProcess>();

function spawnNode(file: string, o: { env?: Record<string, string>; nodeFlags?: string[]; args?: string[] } = {}): ChildProcess {
  const loader = file.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const proc = spawn(process.execPath, [...(o.nodeFlags ?? []), ...loader, file, ...(o.args ?? [])], {
    cwd: ROOT,
    env: { ...process.env, ...o.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

/** The next IPC message of `type` from `proc` (rejects if the child exits first or on timeout). */
function nextMessage<T extends { type: string }>(proc: ChildProcess, type: T['type'], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: T) => {
      if (m?.type !== type) return;
      done();
      resolve(m);
    };
    const onExit = (code: number | null) => {
      done();
      reject(new Error(`child ${proc.pid} exited (${code}) while waiting for "${type}"`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${type}" from ${proc.pid}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      proc.off('message', onMsg);
      proc.off('exit', onExit);
    };
    proc.on('message', onMsg);
    proc.once('exit', onExit);
  });
}

async function stopChild(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill(signal);
  const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c, 'SIGTERM', 5_000)));
}

const rssMb = (pid: number): number => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
};

/** Samples a process's RSS every second until stopped. */
function rssSampler(pid: number) {
  const samples: number[] = [];
  const t = setInterval(() => samples.push(rssMb(pid)), 1000);
  return {
    samples,
    stop: () => clearInterval(t),
    max: () => Math.max(0, ...samples),
    mean: () => (samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length : 0),
  };
}

// ---------------------------------------------------------------------------------------------
// the client fleet

interface Fleet {
  procs: ChildProcess[];
  command(c: ClientCommand): void;
}

function startClients(): Fleet {
  const procs = Array.from({ length: CLIENTS }, () => spawnNode('bench/realtime/client.ts'));
  return {
    procs,
    command: (c) => {
      for (const p of procs) p.send(c);
    },
  };
}

/** Connection k subscribes to site k % SITES; the k's are split into contiguous chunks per client process. */
async function connectClients(
  fleet: Fleet,
  url: string,
  token: string,
  siteIds: string[],
): Promise<{ ok: number; failed: number; errors: string[] }> {
  const per = Math.ceil(CONNECTIONS / CLIENTS);
  const answers = fleet.procs.map((p, i) => {
    const ks = Array.from({ length: Math.max(0, Math.min(per, CONNECTIONS - i * per)) }, (_, j) => i * per + j);
    const done = nextMessage<Extract<ClientMessage, { type: 'connected' }>>(p, 'connected', 600_000);
    p.send({
      cmd: 'connect',
      url,
      token,
      siteIds: ks.map((k) => siteIds[k % SITES] as string),
      query: QUERY,
      concurrency: CONCURRENCY,
    } satisfies ClientCommand);
    return done;
  });
  const rs = await Promise.all(answers);
  return { ok: rs.reduce((a, r) => a + r.ok, 0), failed: rs.reduce((a, r) => a + r.failed, 0), errors: rs.flatMap((r) => r.firstErrors) };
}

interface Collected {
  count: number;
  hist: Histogram;
  lastAt: number;
  open: number;
  closed: number;
  errors: number;
  firstErrors: string[];
}

async function collect(fleet: Fleet): Promise<Collected> {
  const reports = await Promise.all(
    fleet.procs.map((p) => {
      const r = nextMessage<Extract<ClientMessage, { type: 'report' }>>(p, 'report', 60_000);
      p.send({ cmd: 'report' } satisfies ClientCommand);
      return r;
    }),
  );
  const hist = new Histogram();
  for (const r of reports) hist.merge(r.pairs);
  return {
    count: reports.reduce((a, r) => a + r.count, 0),
    hist,
    lastAt: Math.max(...reports.map((r) => r.lastAt)),
    open: reports.reduce((a, r) => a + r.open, 0),
    closed: reports.reduce((a, r) => a + r.closed, 0),
    errors: reports.reduce((a, r) => a + r.errors, 0),
    firstErrors: reports.flatMap((r) => r.firstErrors).slice(0, 8),
  };
}

/** Frames the clients must receive for `events` round-robin events (device j is at site floor(j / 10)). */
function expectedFrames(events: number): number {
  const subs = new Array<number>(SITES).fill(0);
  for (let k = 0; k < CONNECTIONS; k++) subs[k % SITES] = (subs[k % SITES] as number) + 1;
  const devices = SITES * DEVICES_PER_SITE;
  let n = 0;
  for (let e = 0; e < events; e++) n += subs[Math.floor((e % devices) / DEVICES_PER_SITE)] as number;
  return n;
}

/** Sums client progress until `expected` frames arrived or nothing new came for `quietMs` (an overloaded server can block for many seconds in one fan-out). */
async function drain(fleet: Fleet, expected: number, quietMs = 20_000, maxMs = 300_000): Promise<void> {
  const counts = new Map<ChildProcess, number>();
  const onMsg = (p: ChildProcess) => (m: ClientMessage) => {
    if (m.type === 'progress') counts.set(p, m.count);
  };
  const handlers = fleet.procs.map((p) => {
    const h = onMsg(p);
    p.on('message', h);
    return [p, h] as const;
  });
  const t0 = Date.now();
  let last = -1;
  let lastChange = Date.now();
  try {
    while (Date.now() - t0 < maxMs) {
      await sleep(500);
      const total = [...counts.values()].reduce((a, b) => a + b, 0);
      if (total >= expected) return;
      if (total !== last) {
        last = total;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > quietMs) return;
    }
  } finally {
    for (const [p, h] of handlers) p.off('message', h);
  }
}

// ---------------------------------------------------------------------------------------------
// one measured phase

interface PhaseResult {
  name: string;
  subscribed: number;
  failed: number;
  connectMs: number;
  rssIdleMb: number;
  rssConnectedMb: number;
  rssPeakMb: number;
  rssMeanMb: number;
  events: number;
  expected: number;
  delivered: number;
  deliveryMs: number;
  perSecond: number;
  p50: number;
  p99: number;
  max: number;
  closed: number;
  errors: number;
  firstErrors: string[];
  /** gateway counters over the measured run (from its /metrics) */
  serverStats?: Record<string, number>;
}

async function measure(
  name: string,
  fleet: Fleet,
  serverPid: number,
  rssIdleMb: number,
  connect: () => Promise<{ ok: number; failed: number; errors: string[] }>,
  drive: (durationS: number) => Promise<{ events: number; startedAt: number }>,
  serverStats?: () => Promise<Record<string, number>>,
): Promise<PhaseResult> {
  log(`${name}: connecting ${CONNECTIONS} subscribers from ${CLIENTS} client processes`);
  const c0 = performance.now();
  const conn = await connect();
  const connectMs = performance.now() - c0;
  log(`${name}: ${conn.ok} subscribed, ${conn.failed} failed in ${(connectMs / 1000).toFixed(1)} s ${conn.errors.slice(0, 3).join(' | ')}`);
  await sleep(2000);
  const rssConnectedMb = rssMb(serverPid);
  if (WARMUP > 0) {
    log(`${name}: warm-up ${WARMUP} s at ${RATE} events/s`);
    fleet.command({ cmd: 'reset', since: 0 });
    const w = await drive(WARMUP);
    await drain(fleet, expectedFrames(w.events), 3_000);
  }
  fleet.command({ cmd: 'reset', since: Date.now() });
  const statsBefore = await serverStats?.();
  const rss = rssSampler(serverPid);
  log(`${name}: driving ${RATE} events/s for ${DURATION} s (server RSS ${rssConnectedMb.toFixed(0)} MB)`);
  const { events, startedAt } = await drive(DURATION);
  const expected = expectedFrames(events);
  await drain(fleet, expected);
  rss.stop();
  const statsAfter = await serverStats?.();
  const r = await collect(fleet);
  const deliveryMs = r.lastAt ? r.lastAt - startedAt : Number.NaN;
  const result: PhaseResult = {
    name,
    subscribed: conn.ok,
    failed: conn.failed,
    connectMs,
    rssIdleMb,
    rssConnectedMb,
    rssPeakMb: Math.max(rss.max(), rssConnectedMb),
    rssMeanMb: rss.mean(),
    events,
    expected,
    delivered: r.count,
    deliveryMs,
    perSecond: r.count / (deliveryMs / 1000),
    p50: r.hist.percentile(50),
    p99: r.hist.percentile(99),
    max: r.hist.max,
    closed: r.closed,
    errors: r.errors,
    firstErrors: r.firstErrors,
    ...(statsBefore && statsAfter
      ? { serverStats: Object.fromEntries(Object.entries(statsAfter).map(([k, v]) => [k, v - (statsBefore[k] ?? 0)])) }
      : {}),
  };
  if (result.serverStats) log(`${name}: server counters ${JSON.stringify(result.serverStats)}`);
  log(
    `${name}: delivered ${r.count}/${expected} frames in ${(deliveryMs / 1000).toFixed(1)} s = ${Math.round(result.perSecond)}/s; latency p50 ${result.p50} ms p99 ${result.p99} ms max ${result.max} ms; RSS peak ${result.rssPeakMb.toFixed(0)} MB; closed ${r.closed}, errors ${r.errors} ${r.firstErrors.slice(0, 3).join(' | ')}`,
  );
  return result;
}

// ---------------------------------------------------------------------------------------------
// bare ws baseline

async function bare(devices: { name: string; siteId: string }[], siteIds: string[]): Promise<PhaseResult> {
  const server = spawnNode('bench/realtime/bare-server.ts');
  const fleet = startClients();
  try {
    const { port } = await nextMessage<Extract<BareMessage, { type: 'listening' }>>(server, 'listening', 30_000);
    const rssIdle = rssMb(server.pid as number);
    return await measure(
      'bare ws',
      fleet,
      server.pid as number,
      rssIdle,
      async () => {
        const r = await connectClients(fleet, `ws://127.0.0.1:${port}/graphql`, 'bare', siteIds);
        for (let i = 0; i < 100; i++) {
          const c = nextMessage<Extract<BareMessage, { type: 'count' }>>(server, 'count', 10_000);
          server.send({ cmd: 'count' } satisfies BareCommand);
          if ((await c).subscriptions >= r.ok) break;
          await sleep(100);
        }
        return r;
      },
      async (durationS) => {
        const done = nextMessage<Extract<BareMessage, { type: 'done' }>>(server, 'done', (durationS * 4 + 120) * 1000);
        const startedAt = Date.now();
        server.send({ cmd: 'broadcast', rate: RATE, durationS, devices } satisfies BareCommand);
        return { events: (await done).events, startedAt };
      },
    );
  } finally {
    await Promise.all([...fleet.procs, server].map((p) => stopChild(p, 'SIGTERM', 5_000)));
  }
}

// ---------------------------------------------------------------------------------------------
// the RULR gateway fed by MQTT → ingest → Redis

interface Data {
  orgId: string;
  siteIds: string[];
  devices: { id: string; name: string; siteId: string }[];
}

/** Recreates `rulr_bench_rt`: migrations, one organization, 100 sites × 10 devices, one profile. */
async function prepareDatabase(): Promise<Data> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${DB_NAME} with (force)`);
    await admin.query(`create database ${DB_NAME}`);
  } finally {
    await admin.end();
  }
  const url = dbUrl(DB_NAME);
  const kdb = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  await migrateToLatest(kdb);
  await kdb.destroy();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const org = await c.query<{ id: string }>(`insert into organizations (slug, name) values ('bench-rt', 'Realtime bench') returning id`);
    const orgId = org.rows[0]?.id as string;
    const prof = await c.query<{ id: string }>(
      `insert into device_profiles (org_id, name, metrics) values ($1, 'bench light', $2) returning id`,
      [
        orgId,
        JSON.stringify([
          { name: 'power', type: 'number', unit: 'W' },
          { name: 'dim', type: 'number' },
        ]),
      ],
    );
    const profileId = prof.rows[0]?.id as string;
    const sites = await c.query<{ id: string; name: string }>(
      `insert into sites (org_id, name, path)
       select $1, 'Site ' || lpad(i::text, 3, '0'), ('s' || i)::ltree from generate_series(0, $2 - 1) i
       returning id, name`,
      [orgId, SITES],
    );
    const siteIds = sites.rows.sort((a, b) => a.name.localeCompare(b.name)).map((r) => r.id);
    const serials = Array.from({ length: SITES * DEVICES_PER_SITE }, (_, j) => `SL-${String(j).padStart(4, '0')}`);
    const devs = await c.query<{ id: string; serial: string }>(
      `insert into devices (org_id, serial, name, profile_id, site_id)
       select $1, s, 'Light ' || s, $2, site from unnest($3::text[], $4::uuid[]) as t(s, site) returning id, serial`,
      [orgId, profileId, serials, serials.map((_, j) => siteIds[Math.floor(j / DEVICES_PER_SITE)])],
    );
    const byserial = new Map(devs.rows.map((r) => [r.serial, r.id]));
    return {
      orgId,
      siteIds,
      devices: serials.map((s, j) => ({
        id: byserial.get(s) as string,
        name: `Light ${s}`,
        siteId: siteIds[Math.floor(j / DEVICES_PER_SITE)] as string,
      })),
    };
  } finally {
    await c.end();
  }
}

async function waitReady(port: number, what: string, proc: ChildProcess, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${what} exited (${proc.exitCode}) before it was ready`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > end) throw new Error(`${what} not ready on ${port} within ${ms} ms`);
    await sleep(250);
  }
}

async function gatewaySubscriptions(port: number): Promise<number | null> {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
    (r) => r.text(),
    () => '',
  );
  const m = /^rulr_realtime_subscriptions(?:\{[^}]*\})? (\d+)/m.exec(text);
  return m ? Number(m[1]) : null;
}

/** The real-time counters of the gateway's /metrics (sums over label sets). */
async function realtimeCounters(port: number): Promise<Record<string, number>> {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(
    (r) => r.text(),
    () => '',
  );
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(rulr_realtime_[a-z_]+?(?:_total|_sum|_count))(?:\{[^}]*\})? ([0-9.e+-]+)$/gm)) {
    out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
  }
  return out;
}

async function gateway(data: Data, prefix: string, cpuProf: boolean): Promise<PhaseResult> {
  let broker: Broker | undefined;
  const secret = randomBytes(32).toString('hex');
  const [gwPort, devPort, metPort, ingPort, wrkPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const env: Record<string, string> = {
    NODE_ENV: 'production',
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    DATABASE_URL: dbUrl(DB_NAME),
    REDIS_URL,
    REDIS_PREFIX: prefix,
    RULR_SECRET: secret,
    GATEWAY_PORT: String(gwPort),
    DEVICES_PORT: String(devPort),
    METRICS_PORT: String(metPort),
    INGEST_PORT: String(ingPort),
    WORKERS_PORT: String(wrkPort),
    GATEWAY_RATE_LIMIT: '100000000',
    INGEST_GROUP: `bench-rt-${prefix.slice(0, -1)}`,
    INGEST_CLIENT_ID: `bench-rt-ingest-${prefix.slice(0, -1)}`,
  };
  const fleet = startClients();
  let gw: ChildProcess | undefined;
  try {
    broker = await startNoDropBroker();
    env.MQTT_URL = broker.url;
    if (cpuProf) {
      rmSync(PROFILE_DIR, { recursive: true, force: true });
      mkdirSync(PROFILE_DIR, { recursive: true });
    }
    gw = spawnNode(MAIN, {
      env,
      // A bounded heap, as the deployment sets it (NODE_OPTIONS): without it V8 lets garbage from
      // ~90,000 frames/s pile up to ~1 GB before collecting.
      nodeFlags: [...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR] : []), '--max-old-space-size=256'],
      args: ['start', 'gateway', 'devices', 'metrics'],
    });
    await waitReady(gwPort, 'gateway', gw);
    const ingest = args.source === 'redis' ? undefined : spawnNode(MAIN, { env, args: ['start', 'ingest'] });
    if (ingest) await waitReady(ingPort, 'ingest', ingest);
    const gwPid = gw.pid as number;
    const rssIdle = rssMb(gwPid);
    const token = await issueToken(
      { userId: 'service:bench-realtime', orgId: data.orgId, role: 'viewer' },
      { secret, issuer: 'rulr', ttlSeconds: 7200 },
    );
    const publisher = spawnNode('bench/realtime/publisher.ts');
    const result = await measure(
      'RULR gateway',
      fleet,
      gwPid,
      rssIdle,
      async () => {
        const r = await connectClients(fleet, `ws://127.0.0.1:${gwPort}/graphql`, token, data.siteIds);
        // graphql-ws has no "subscribed" message: wait until the gateway counts every subscription.
        const end = Date.now() + 120_000;
        let n = await gatewaySubscriptions(gwPort);
        while (n !== null && n < r.ok && Date.now() < end) {
          await sleep(200);
          n = await gatewaySubscriptions(gwPort);
        }
        if (n === null) r.errors.push('gateway /metrics has no rulr_realtime_subscriptions: connect time excludes subscription setup');
        else if (n < r.ok) r.errors.push(`only ${n} of ${r.ok} subscriptions active after 120 s`);
        return r;
      },
      async (durationS) => {
        const done = nextMessage<PublisherMessage>(publisher, 'done', (durationS * 4 + 120) * 1000);
        const startedAt = Date.now();
        publisher.send({
          cmd: 'publish',
          url: (broker as Broker).url,
          rate: RATE,
          durationS,
          deviceIds: data.devices.map((d) => d.id),
          ...(args.source === 'redis'
            ? {
                redis: {
                  url: REDIS_URL,
                  channel: eventsChannel(prefix, data.orgId),
                  orgId: data.orgId,
                  siteOf: Object.fromEntries(data.devices.map((d) => [d.id, d.siteId])),
                },
              }
            : {}),
        } satisfies PublisherCommand);
        const d = await done;
        if (d.lateTicks > 0) log(`publisher: ${d.lateTicks} ticks more than 20 ms late`);
        return { events: d.published, startedAt };
      },
      () => realtimeCounters(gwPort),
    );
    await stopChild(publisher);
    if (ingest) await stopChild(ingest);
    return result;
  } finally {
    await Promise.all(fleet.procs.map((p) => stopChild(p, 'SIGTERM', 5_000)));
    if (gw) await stopChild(gw, 'SIGTERM', 30_000);
    await stopAll();
    await broker?.stop();
  }
}

/** Top self-time functions of the gateway's main thread (its largest profile). */
function profileSummary(): string[] {
  const file = readdirSync(PROFILE_DIR)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ f, size: statSync(`${PROFILE_DIR}/${f}`).size }))
    .sort((x, y) => y.size - x.size)[0]?.f;
  if (!file) return [];
  const prof = JSON.parse(readFileSync(`${PROFILE_DIR}/${file}`, 'utf8')) as {
    nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
    samples: number[];
    timeDeltas: number[];
  };
  const self = new Map<number, number>();
  prof.samples.forEach((id, i) => {
    self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
  });
  const byFn = new Map<string, number>();
  let total = 0;
  for (const n of prof.nodes) {
    const t = self.get(n.id) ?? 0;
    total += t;
    const where = n.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/main\//, '');
    const key = `${n.callFrame.functionName || '(anonymous)'} ${where ? `${where}:${n.callFrame.lineNumber + 1}` : ''}`.trim();
    byFn.set(key, (byFn.get(key) ?? 0) + t);
  }
  return [...byFn]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 15)
    .map(([k, t]) => `${((100 * t) / total).toFixed(1)}% ${k}`);
}

// ---------------------------------------------------------------------------------------------

function writeResults(rs: PhaseResult[], o: { loadBefore: number; loadAfter: number; started: Date; profile: string[] }): void {
  const file = `${ROOT}bench/RESULTS.md`;
  const b = rs.find((r) => r.name === 'bare ws');
  const g = rs.find((r) => r.name === 'RULR gateway');
  const cpu = os.cpus();
  const n = (v: number) => Math.round(v).toLocaleString('en-US');
  const s = (t: number) => `${(t / 1000).toFixed(1)} s`;
  /** the histogram stops at MAX_MS: a value there means "at least" */
  const ms = (t: number) => (t >= MAX_MS ? `≥ ${n(MAX_MS)}` : n(t));
  const cell = (r: PhaseResult | undefined, f: (r: PhaseResult) => string) => (r ? f(r) : 'not run');
  const rows: [string, (r: PhaseResult) => string, string][] = [
    ['subscribers connected and subscribed (failed)', (r) => `${n(r.subscribed)} (${r.failed})`, `${n(CONNECTIONS)}`],
    ['connect time (all connected and subscribed)', (r) => s(r.connectMs), ''],
    [
      'server RSS: idle / with subscribers / peak during the run',
      (r) => `${n(r.rssIdleMb)} / ${n(r.rssConnectedMb)} / ${n(r.rssPeakMb)} MB`,
      '< 400 MB',
    ],
    ['events published', (r) => n(r.events), ''],
    ['frames received / expected', (r) => `${n(r.delivered)} / ${n(r.expected)}`, ''],
    ['delivery time (first publish → last frame received)', (r) => s(r.deliveryMs), ''],
    ['frames delivered per second', (r) => n(r.perSecond), ''],
    ['publish → receive latency p50 / p99 / max', (r) => `${ms(r.p50)} / ${ms(r.p99)} / ${ms(r.max)} ms`, 'p99 < 250 ms'],
    ['connections closed during the run / client errors', (r) => `${r.closed} / ${r.errors}`, '0 / 0'],
  ];
  const ratio = b && g ? g.deliveryMs / b.deliveryMs : Number.NaN;
  const lines = [
    '<!-- bench:realtime:start -->',
    '## Real time (`npm run bench:realtime`)',
    '',
    `Run ${o.started.toISOString().slice(0, 16)}Z on ${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, Node ${process.version}, PostgreSQL/Redis of the host, private Mosquitto 2.0 (no-drop config). 1-minute load average ${o.loadBefore.toFixed(1)} before and ${o.loadAfter.toFixed(1)} after (the host is shared).`,
    `Command: \`npm run bench:realtime\` (options \`-- --connections ${CONNECTIONS} --duration ${DURATION} --rate ${RATE} --warmup ${WARMUP} --clients ${CLIENTS} --concurrency ${CONCURRENCY}\`, \`--source ${args.source}\`; also \`--cpu-prof\`, \`--only bare|gateway\`, \`--tsx\`, \`--no-write\`).`,
    `Setup: ${SITES} sites × ${DEVICES_PER_SITE} devices in database \`${DB_NAME}\` (recreated). ${n(CONNECTIONS)} graphql-transport-ws connections from ${CLIENTS} client processes (minimal client on raw \`ws\`, ${CONCURRENCY} connects in flight per process), connection k subscribed to \`telemetryUpdated(siteId: <site k mod ${SITES}>) { device { name } readings { metric value ts } }\`.`,
    args.source === 'redis'
      ? `Gateway side (\`--source redis\`): one \`rulr start gateway devices metrics\` process (its RSS is reported; ${MAIN === 'cli/main.ts' ? 'run from sources through tsx, which adds about 60 MB' : 'compiled with tsc, as in production'}); MQTT and ingest bypassed: a publisher process sends ${n(RATE)} events/s in ingest's envelope straight to the Redis channel \`<prefix>events:<org>\` (\`ts\` = publish time) for ${DURATION} s after a ${WARMUP} s warm-up.`
      : `Gateway side: one \`rulr start gateway devices metrics\` process with \`--max-old-space-size=256\` (its RSS is reported; ${MAIN === 'cli/main.ts' ? 'run from sources through tsx, which adds about 60 MB' : 'compiled with tsc, as in production'}), one \`rulr start ingest\`, a private no-drop Mosquitto, a publisher process sending ${n(RATE)} MQTT messages/s (QoS 1, one device's \`power\` and \`dim\` each, \`ts\` = publish time) for ${DURATION} s after a ${WARMUP} s warm-up.`,
    `Baseline: a bare \`ws\` server process generating the same ${n(RATE)} events/s and sending each frame (same shape; \`ts\` = scheduled time, so its own lag counts as latency) to its site's subscribers, same client code and number of client processes. Latency = client receive time − reading \`ts\` (same host clock), 1 ms histograms merged over the client processes. Delivery time = first publish → last frame received.`,
    '',
    '| measure | bare ws broadcast | RULR gateway | target |',
    '| --- | ---: | ---: | --- |',
    ...rows.map(([label, f, target]) => `| ${label} | ${cell(b, f)} | ${cell(g, f)} | ${target} |`),
    '',
    `Ratio gateway / bare delivery time: ${Number.isFinite(ratio) ? ratio.toFixed(2) : 'n/a'} (target ≤ 2). Ratio of p50 latency: ${b && g ? Number((g.p50 / Math.max(1, b.p50)).toPrecision(2)) : 'n/a'}.`,
  ];
  const st = g?.serverStats;
  if (st?.rulr_realtime_batch_seconds_count) {
    lines.push(
      '',
      `Gateway counters over the measured run: ${n(st.rulr_realtime_events_total ?? 0)} events from Redis in ${n(st.rulr_realtime_batch_seconds_count)} fan-out batches (mean ${((1000 * (st.rulr_realtime_batch_seconds_sum ?? 0)) / st.rulr_realtime_batch_seconds_count).toFixed(1)} ms per batch, ${n(st.rulr_realtime_followups_total ?? 0)} follow-up queries), ${n(st.rulr_realtime_deliveries_total ?? 0)} frames handed to connections, ${n(st.rulr_realtime_coalesced_total ?? 0)} coalesced for lagging connections, ${n(st.rulr_realtime_slow_consumer_closed_total ?? 0)} slow consumers closed.`,
    );
  }
  if (g?.firstErrors.length)
    lines.push('', `Gateway-side client errors (first): ${g.firstErrors.map((e) => `\`${e.replace(/`/g, "'")}\``).join('; ')}`);
  if (o.profile.length) lines.push('', 'Gateway CPU profile (`--cpu-prof`), top self time:', '', ...o.profile.map((l) => `- ${l}`));
  const text = readFileSync(file, 'utf8');
  // Hand-written analysis between the notes markers survives a re-run.
  const notes = /<!-- bench:realtime:notes:start -->[\s\S]*?<!-- bench:realtime:notes:end -->/.exec(text)?.[0];
  if (notes) lines.push('', notes);
  lines.push('<!-- bench:realtime:end -->');
  const section = lines.join('\n');
  const re = /<!-- bench:realtime:start -->[\s\S]*?<!-- bench:realtime:end -->/;
  writeFileSync(file, re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`);
  log(`wrote ${file}`);
}

async function main(): Promise<void> {
  const started = new Date();
  const loadBefore = os.loadavg()[0] as number;
  const prefix = `benchrt${randomBytes(3).toString('hex')}:`;
  const results: PhaseResult[] = [];
  let profile: string[] = [];
  try {
    log(`preparing ${DB_NAME}`);
    const data = await prepareDatabase();
    if (!args.tsx && args.only !== 'bare') {
      log(`compiling the roles into ${DIST}`);
      buildDist();
    }
    if (args.only !== 'bare') {
      results.push(await gateway(data, prefix, args['cpu-prof'] === true));
      if (args['cpu-prof']) {
        profile = profileSummary();
        for (const l of profile) log(`  ${l}`);
      }
    }
    if (args.only !== 'gateway') results.push(await bare(data.devices, data.siteIds));
  } finally {
    await stopAll();
    const redis = createRedis(REDIS_URL);
    const keys = await redis.keys(`${prefix}*`).catch(() => [] as string[]);
    for (let i = 0; i < keys.length; i += 1000) await redis.del(...keys.slice(i, i + 1000));
    await redis.quit();
  }
  console.log(JSON.stringify(results.map(({ firstErrors: _e, ...r }) => r)));
  if (!args['no-write']) writeResults(results, { loadBefore, loadAfter: os.loadavg()[0] as number, started, profile });
}

const onSignal = () => {
  for (const c of children) c.kill('SIGKILL');
  process.exit(130);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
const LIMIT_MS = (WARMUP + DURATION) * 10_000 + 600_000;
process.env.BENCH_CHILD_MAX_MS = String(LIMIT_MS + 60_000);
setTimeout(() => {
  console.error('bench:realtime: overall time limit reached');
  onSignal();
}, LIMIT_MS).unref();

main().then(
  () => process.exit(0),
  async (e) => {
    console.error(e);
    await stopAll();
    process.exit(1);
  },
);
