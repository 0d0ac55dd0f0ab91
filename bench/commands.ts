// bench:commands: issue 12's benchmark, in one run and one bench/RESULTS.md section.
//   (a) burst: a fleet job (`sendSiteCommand`, no rollout limit) over BENCH_DEVICES street lights that answer
//       at once, from the request to the last SUCCEEDED → commands/s; baseline in the same run: the same number
//       of commands as bare mqtt.js QoS 1 publishes to the same kind of devices, until every `succeeded` reply
//       (run right before and right after the job, the faster counted: on a shared machine the load moves);
//   (b) fixed rate: a fleet job over the same devices with `rolloutPerMinute` BENCH_RATE × 60, p50/p99 of
//       send → SUCCEEDED per command, "send" being the rollout's grant (the command's `created_at`: the tick that
//       released it), not the broker's PUBACK; baseline: bare mqtt.js at the same fixed rate (latency from the
//       scheduled publish to the `succeeded` reply);
//   (c) queue depth over both jobs (QUEUED incl. unreleased targets / in flight SENT+DELIVERED / SUCCEEDED /
//       BullMQ `commands` jobs waiting) and the RSS of every process (bench, ingest, workers);
//   secondary: BENCH_API single `sendCommand` mutations through the gateway (BENCH_CONCURRENCY in flight):
//       requests/s and request → SUCCEEDED.
// Processes: ingest and workers as `rulr start <role>` children; the gateway and its subgraphs in this process.
// Devices: test/support/command-fleet.ts (one mqtt.js connection subscribed to `devices/+/commands`, answering
// `received` then `succeeded` on each device's reply topic), the same code for the platform and the baseline.
// Env: BENCH_COMMANDS_SHORT=1 (smoke: 2,000 devices, 500/s, 300 API requests), BENCH_DEVICES, BENCH_RATE,
// BENCH_API, BENCH_CONCURRENCY, BENCH_CPU_PROF=<dir> (CPU profiles of ingest and workers), BENCH_ROLE_ARGS (more node arguments for them), BENCH_WRITE=1 (write the section; a full-size run writes it unless BENCH_WRITE=0), BENCH_COMMANDS_ONLY=burst (only (a) and its baselines, nothing written: for A/Bs).

import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { Queue } from 'bullmq';
import { sql } from 'kysely';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { startRoles } from '../cli/roles.js';
import { seedDemo } from '../cli/seed.js';
import { type Broker, freePort, startNoDropBroker } from '../ingest/testing/broker.js';
import { issueToken } from '../lib/auth.js';
import { loadConfig } from '../lib/config.js';
import { COMMANDS_QUEUE, deviceCommandTopic, encodeCommandMessage, parseCommandReply } from '../lib/contracts/commands.js';
import { statusKey } from '../lib/contracts/device-state.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import type { Db } from '../lib/db.js';
import { createRedis } from '../lib/redis.js';
import { portVar, SUBGRAPH_NAMES } from '../lib/subgraphs.js';
import { TestFleet } from '../test/support/command-fleet.js';
import { REDIS_URL } from '../test/support/env.js';
import { startRoleProcess } from '../test/support/role-process.js';
import { benchDatabase } from './database.js';

const SHORT = process.env.BENCH_COMMANDS_SHORT === '1';
const DEVICES = Number(process.env.BENCH_DEVICES ?? (SHORT ? 2000 : 10_000));
const RATE = Number(process.env.BENCH_RATE ?? (SHORT ? 500 : 1000));
const API = Number(process.env.BENCH_API ?? (SHORT ? 300 : 1000));
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
const WRITE = process.env.BENCH_WRITE === '1' || (!SHORT && process.env.BENCH_WRITE !== '0');
const DB_NAME = 'rulr_bench_commands';
const SIZE_VARS = ['BENCH_COMMANDS_SHORT', 'BENCH_DEVICES', 'BENCH_RATE', 'BENCH_API', 'BENCH_CONCURRENCY'];
/** The command line of this run, as the results section names it. */
const COMMAND = [...SIZE_VARS.filter((v) => process.env[v]).map((v) => `${v}=${process.env[v]}`), 'npm run bench:commands'].join(' ');
const FULL_SIZE = DEVICES >= 10_000 && RATE >= 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const pct = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
const log = (l: string) => console.log(`[bench:commands] ${l}`);
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}×` : 'n/a');

/** Resident set of a process, MB (Linux /proc). */
function rssMb(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid ?? process.pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds (user + system) a process used so far (Linux /proc; clock ticks of 10 ms). */
function cpuS(pid: number | undefined): number {
  try {
    const f =
      readFileSync(`/proc/${pid ?? process.pid}/stat`, 'utf8')
        .split(') ')[1]
        ?.split(' ') ?? [];
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU seconds used during a run by ingest, workers and the PostgreSQL backends of the bench's database: the work
 * per command, much less sensitive to a shared machine than the times. Backends are read at every sample (the
 * pools close idle ones), each counted from its first sample.
 */
class CpuMeter {
  private readonly start: { ingest: number; workers: number };
  private readonly backends = new Map<number, { first: number; last: number }>();
  constructor(
    private readonly db: Db,
    private readonly pids: () => { ingest: number | undefined; workers: number | undefined },
  ) {
    const p = pids();
    this.start = { ingest: cpuS(p.ingest), workers: cpuS(p.workers) };
  }
  async sample(): Promise<void> {
    const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = ${DB_NAME}`.execute(this.db);
    for (const { pid } of rows) {
      const now = cpuS(pid);
      if (!Number.isFinite(now)) continue;
      const b = this.backends.get(pid);
      if (b) b.last = now;
      else this.backends.set(pid, { first: now, last: now });
    }
  }
  async total(): Promise<Cpu> {
    await this.sample();
    const p = this.pids();
    let pg = 0;
    for (const b of this.backends.values()) pg += b.last - b.first;
    return { ingest: cpuS(p.ingest) - this.start.ingest, workers: cpuS(p.workers) - this.start.workers, postgres: pg };
  }
}

export interface Cpu {
  ingest: number;
  workers: number;
  postgres: number;
}

/** Row writes to `commands` so far (cumulative statistics; an idle backend reports its own up to 10 s late). */
interface RowWrites {
  ins: number;
  upd: number;
  hot: number;
}

async function rowWrites(db: Db): Promise<RowWrites> {
  const { rows } = await sql<RowWrites>`
    select n_tup_ins::int as ins, n_tup_upd::int as upd, n_tup_hot_upd::int as hot from pg_stat_user_tables where relname = 'commands'`.execute(
    db,
  );
  return rows[0] ?? { ins: 0, upd: 0, hot: 0 };
}

export interface DepthSample {
  /** seconds since the request */
  s: number;
  /** QUEUED, the targets not released yet included */
  queued: number;
  /** SENT + DELIVERED */
  inFlight: number;
  succeeded: number;
  /** `commands` BullMQ jobs waiting (waiting + prioritized) */
  waitingJobs: number;
  rss: { bench: number; ingest: number; workers: number };
}

interface Stages {
  granted: [number, number];
  sent: [number, number];
  delivered: [number, number];
}

interface JobRun {
  ms: number;
  perS: number;
  succeeded: number;
  samples: DepthSample[];
  stages: Stages;
  /** grant → SUCCEEDED per command, sorted, ms */
  latencies: number[];
  /** commands granted per second (first to last grant) */
  grantedPerS: number;
  cpu: Cpu;
  writes: Writes;
}

/** Row writes to `commands` per command of a job, and how many commands had DELIVERED and their result in one update. */
interface Writes {
  updates: number;
  hot: number;
  inserts: number;
  pairs: number;
}

const writesText = (w: Writes, n: number) =>
  `${w.inserts.toFixed(2)} inserts, ${w.updates.toFixed(2)} updates (${w.hot.toFixed(2)} of them HOT); DELIVERED and the result in one update for ${fmt(w.pairs)} of ${fmt(n)}`;

interface BareRun {
  ms: number;
  perS: number;
  latencies: number[];
}

/** Where each command's time went: grant (created) → SENT (PUBACK), SENT → DELIVERED, DELIVERED → SUCCEEDED; p50 and p99, ms. */
async function stageTimes(db: Db, jobId: string): Promise<Stages> {
  const { rows } = await sql<Record<string, number>>`
    select percentile_cont(0.5) within group (order by extract(epoch from sent_at - created_at)) * 1000 as g50,
           percentile_cont(0.99) within group (order by extract(epoch from sent_at - created_at)) * 1000 as g99,
           percentile_cont(0.5) within group (order by extract(epoch from delivered_at - sent_at)) * 1000 as s50,
           percentile_cont(0.99) within group (order by extract(epoch from delivered_at - sent_at)) * 1000 as s99,
           percentile_cont(0.5) within group (order by extract(epoch from completed_at - delivered_at)) * 1000 as d50,
           percentile_cont(0.99) within group (order by extract(epoch from completed_at - delivered_at)) * 1000 as d99
    from commands where job_id = ${jobId} and status = 'SUCCEEDED'`.execute(db);
  const r = rows[0] ?? {};
  const n = (k: string) => Math.round(Number(r[k] ?? Number.NaN));
  return { granted: [n('g50'), n('g99')], sent: [n('s50'), n('s99')], delivered: [n('d50'), n('d99')] };
}

/**
 * When a job's work happened, ms from the request: the job row committed, then each release (commands share their
 * slice's `created_at`) with its size and its commands' SENT (first / median / last), and the last SUCCEEDED.
 */
async function timeline(db: Db, jobId: string, t0: number): Promise<string> {
  const { rows } = await sql<{ created: Date; n: number; s0: Date; s50: Date; s1: Date; d1: Date }>`
    select created_at as created, count(*)::int as n, min(sent_at) as s0, max(completed_at) as d1,
           percentile_disc(0.5) within group (order by sent_at) as s50, max(sent_at) as s1
    from commands where job_id = ${jobId} group by created_at order by created_at`.execute(db);
  const job = (await sql<{ at: Date }>`select created_at as at from command_jobs where id = ${jobId}`.execute(db)).rows[0];
  const ms = (d: Date | undefined) => (d ? String(d.getTime() - t0) : '?');
  const slices =
    rows.length > 12
      ? `${rows.length} releases`
      : rows.map((r) => `${ms(r.created)}+${r.n} sent ${ms(r.s0)}/${ms(r.s50)}/${ms(r.s1)}`).join('; ');
  return `job ${ms(job?.at)}; ${slices}; last SUCCEEDED ${ms(new Date(Math.max(...rows.map((r) => r.d1.getTime()))))}`;
}

const cpuText = (c: Cpu, n: number) =>
  `ingest ${c.ingest.toFixed(1)} s, workers ${c.workers.toFixed(1)} s, PostgreSQL ${c.postgres.toFixed(1)} s (${((1e6 * (c.ingest + c.workers + c.postgres)) / n).toFixed(0)} µs a command)`;

const stagesText = (s: Stages) =>
  `grant → SENT ${fmt(s.granted[0])} / ${fmt(s.granted[1])}, SENT → DELIVERED ${fmt(s.sent[0])} / ${fmt(s.sent[1])}, DELIVERED → SUCCEEDED ${fmt(s.delivered[0])} / ${fmt(s.delivered[1])}`;

/**
 * The baseline: `n` commands as bare mqtt.js QoS 1 publishes to a {@link TestFleet} on a broker of its own, every
 * `succeeded` reply back. `rate` null: all at once (the burst); otherwise `rate` publishes a second on schedule,
 * each latency counted from its scheduled time.
 */
export async function bareRoundTrip(n: number, rate: number | null): Promise<BareRun> {
  const broker = await startNoDropBroker();
  const ids = Array.from({ length: n }, () => randomUUID());
  const fleet = await new TestFleet(ids, broker.url).connect();
  const pub = await mqtt.connectAsync(broker.url, { clientId: `bare-${randomUUID()}`, protocolVersion: 5 });
  const scheduled = new Map<string, number>();
  const latencies: number[] = [];
  let last = 0;
  try {
    pub.on('message', (_topic, payload) => {
      const r = parseCommandReply(payload);
      const at = scheduled.get(r.id);
      if (r.status !== 'succeeded' || at === undefined) return;
      scheduled.delete(r.id);
      last = performance.now();
      latencies.push(last - at);
    });
    await pub.subscribeAsync('devices/+/commands/reply', { qos: 1 });
    const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
    const send = (i: number, at: number) => {
      const id = randomUUID();
      scheduled.set(id, at);
      pub.publish(deviceCommandTopic(ids[i] as string), encodeCommandMessage({ id, name: 'setDim', params: { level: 50 }, expiresAt }), {
        qos: 1,
      });
    };
    const t0 = performance.now();
    if (rate === null) for (let i = 0; i < n; i++) send(i, t0);
    else
      for (let i = 0; i < n; ) {
        const due = Math.min(n, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
        for (; i < due; i++) send(i, t0 + (i * 1000) / rate);
        await sleep(2);
      }
    const end = Date.now() + 300_000;
    while (latencies.length < n && Date.now() < end) await sleep(5);
    const ms = last - t0;
    return { ms, perS: (latencies.length / ms) * 1000, latencies: latencies.sort((a, b) => a - b) };
  } finally {
    await pub.endAsync();
    await fleet.close();
    await broker.stop();
  }
}

interface Setup {
  db: Db;
  env: Record<string, string>;
  broker: Broker;
  orgId: string;
  city: string;
  profile: string;
  lamps: string[];
  url: string;
  token: string;
  queue: Queue;
  pids: () => { ingest: number | undefined; workers: number | undefined };
  close(): Promise<void>;
}

/** The platform: seeded database, ingest and workers children, gateway and subgraphs here, the fleet online. */
async function setUp(): Promise<Setup> {
  const t = await benchDatabase(DB_NAME);
  const broker = await startNoDropBroker();
  const tag = randomBytes(4).toString('hex');
  const env: Record<string, string> = {
    DATABASE_URL: t.url,
    MQTT_URL: broker.url,
    REDIS_URL,
    REDIS_PREFIX: `bc${tag}:`,
    INGEST_GROUP: `g${tag}`,
    INGEST_CLIENT_ID: `ingest-${tag}`,
    GATEWAY_PORT: String(await freePort()),
    ...Object.fromEntries(SUBGRAPH_NAMES.map((n) => [portVar(n), '0'])),
    GATEWAY_RATE_LIMIT: '100000000',
    LOG_LEVEL: 'warn',
  };
  const cfg = loadConfig({ ...process.env, ...env });
  const seeded = await seedDemo(cfg, { devices: DEVICES, db: t.db, quiet: true });
  const orgId = seeded.orgId;
  // Nothing but the bench's commands: no lighting program pushing desired levels, no rules; every lamp a
  // direct device (a concentrator's children would be answered on gateways/{id}/commands).
  await sql`delete from program_assignments where org_id = ${orgId}`.execute(t.db);
  await sql`delete from rules where org_id = ${orgId}`.execute(t.db);
  await sql`update devices set parent_id = null where org_id = ${orgId} and parent_id is not null`.execute(t.db);
  const profile = (
    await sql<{ id: string }>`select id from device_profiles where org_id = ${orgId} and name = 'Street-light controller'`.execute(t.db)
  ).rows[0]?.id as string;
  const city = (await sql<{ id: string }>`select id from sites where org_id = ${orgId} and parent_id is null`.execute(t.db)).rows[0]
    ?.id as string;
  const lamps = (await sql<{ id: string }>`select id from devices where profile_id = ${profile} order by serial`.execute(t.db)).rows.map(
    (r) => r.id,
  );
  log(`${fmt(lamps.length)} lamps seeded; starting ingest, workers, the gateway with its subgraphs, the devices`);
  const prof = [
    ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []),
    ...(process.env.BENCH_ROLE_ARGS?.split(' ').filter(Boolean) ?? []),
  ];
  const ingest = await startRoleProcess('ingest', 'INGEST_PORT', env, prof);
  const workers = await startRoleProcess('workers', 'WORKERS_PORT', env, prof);
  const api = await startRoles(cfg, pino({ level: 'warn' }), ['gateway', ...SUBGRAPH_NAMES]);
  const fleet = await new TestFleet(lamps, broker.url).connect();
  const redis = createRedis(REDIS_URL);
  const queue = new Queue(COMMANDS_QUEUE, { connection: redis, prefix: queuePrefix(env.REDIS_PREFIX as string) });
  for (let i = 0; i < lamps.length; i += 1000) await fleet.announce(lamps.slice(i, i + 1000));
  const warm = Date.now();
  for (;;) {
    const p = redis.pipeline();
    for (const id of lamps) p.hget(statusKey(env.REDIS_PREFIX as string, id), 'online');
    const online = ((await p.exec()) ?? []).filter(([, v]) => v === '1').length;
    if (online >= lamps.length) break;
    if (Date.now() - warm > 120_000) throw new Error(`only ${online} of ${lamps.length} devices online`);
    await sleep(500);
  }
  // the workers' answers to the status messages (`online` jobs) are not part of the runs
  for (let i = 0; i < 600 && (await queue.getWaitingCount()) + (await queue.getActiveCount()) > 0; i++) await sleep(500);
  log(`devices online after ${((Date.now() - warm) / 1000).toFixed(1)} s`);
  const token = await issueToken(
    { userId: 'service:bench', orgId, role: 'operator' },
    { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 7200 },
  );
  return {
    db: t.db,
    env,
    broker,
    orgId,
    city,
    profile,
    lamps,
    url: `http://127.0.0.1:${env.GATEWAY_PORT}/graphql`,
    token,
    queue,
    pids: () => ({ ingest: ingest.child.pid, workers: workers.child.pid }),
    async close() {
      await fleet.close();
      await queue.close();
      redis.disconnect();
      await api.close();
      await workers.kill('SIGTERM');
      await ingest.kill('SIGTERM');
      await broker.stop();
      await t.drop();
    },
  };
}

async function gql<T>(s: Setup, query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await fetch(s.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
    body: JSON.stringify({ query, variables }),
  });
  const b = (await res.json()) as { data?: T; errors?: unknown };
  if (!b.data) throw new Error(JSON.stringify(b.errors));
  return b.data;
}

/** A fleet job over every lamp, sampled every 250 ms until every command SUCCEEDED. */
async function fleetJob(s: Setup, rolloutPerMinute: number | null): Promise<JobRun> {
  const samples: DepthSample[] = [];
  let jobId: string | undefined;
  const cpu = new CpuMeter(s.db, s.pids);
  await cpu.sample();
  const writes0 = await rowWrites(s.db);
  const t0 = Date.now();
  log(`request at ${t0}`);
  const sample = async () => {
    await cpu.sample();
    const counts: Record<string, number> = {};
    if (jobId)
      for (const r of (
        await sql<{ status: string; n: number }>`
          select status, count(*)::int as n from commands where job_id = ${jobId} group by status`.execute(s.db)
      ).rows)
        counts[r.status] = r.n;
    const released = Object.values(counts).reduce((a, b) => a + b, 0);
    const jobs = await s.queue.getJobCounts('waiting', 'prioritized');
    const pids = s.pids();
    samples.push({
      s: Math.round((Date.now() - t0) / 100) / 10,
      queued: (counts.QUEUED ?? 0) + (jobId ? s.lamps.length - released : 0),
      inFlight: (counts.SENT ?? 0) + (counts.DELIVERED ?? 0),
      succeeded: counts.SUCCEEDED ?? 0,
      waitingJobs: (jobs.waiting ?? 0) + (jobs.prioritized ?? 0),
      rss: { bench: rssMb(process.pid), ingest: rssMb(pids.ingest), workers: rssMb(pids.workers) },
    });
    return counts;
  };
  const input: Record<string, unknown> = {
    siteId: s.city,
    profileId: s.profile,
    name: 'setDim',
    params: { level: rolloutPerMinute ? 60 : 40 },
    timeoutSeconds: 300,
  };
  if (rolloutPerMinute) input.rolloutPerMinute = rolloutPerMinute;
  const r = await gql<{ sendSiteCommand: { id: string; progress: { total: number } } }>(
    s,
    'mutation($i: SendSiteCommandInput!) { sendSiteCommand(input: $i) { id progress { total } } }',
    { i: input },
  );
  jobId = r.sendSiteCommand.id;
  if (r.sendSiteCommand.progress.total !== s.lamps.length) throw new Error(`job covers ${r.sendSiteCommand.progress.total} devices`);
  const deadline = Date.now() + 900_000;
  for (;;) {
    const c = await sample();
    if ((c.SUCCEEDED ?? 0) >= s.lamps.length) break;
    const ended = (c.FAILED ?? 0) + (c.EXPIRED ?? 0) + (c.CANCELED ?? 0);
    if (ended) throw new Error(`job ${jobId}: ${JSON.stringify(c)} (not every command SUCCEEDED)`);
    if (Date.now() > deadline) throw new Error(`job ${jobId} not done in 15 min: ${JSON.stringify(c)}`);
    await sleep(250);
  }
  const { rows } = await sql<{ grant: Date; done: Date }>`
    select created_at as grant, completed_at as done from commands where job_id = ${jobId}`.execute(s.db);
  const lastDone = Math.max(...rows.map((x) => x.done.getTime()));
  const grants = rows.map((x) => x.grant.getTime());
  const grantSpan = (Math.max(...grants) - Math.min(...grants)) / 1000;
  const ms = lastDone - t0;
  const used = await cpu.total();
  // idle backends report their statistics up to 10 s late (PostgreSQL 15)
  await sleep(11_000);
  const writes1 = await rowWrites(s.db);
  const { rows: pairRows } = await sql<{ n: number }>`
    select count(*)::int as n from commands where job_id = ${jobId} and history->-2->>'status' = 'DELIVERED' and history->-2->>'at' = history->-1->>'at'`.execute(
    s.db,
  );
  const writes = {
    updates: (writes1.upd - writes0.upd) / rows.length,
    hot: (writes1.hot - writes0.hot) / rows.length,
    inserts: (writes1.ins - writes0.ins) / rows.length,
    pairs: pairRows[0]?.n ?? 0,
  };
  log(`commands rows per command: ${writesText(writes, rows.length)}`);
  log(`timeline (ms from the request): ${await timeline(s.db, jobId, t0)}`);
  return {
    writes,
    cpu: used,
    ms,
    perS: (rows.length / ms) * 1000,
    succeeded: rows.length,
    samples,
    stages: await stageTimes(s.db, jobId),
    latencies: rows.map((x) => x.done.getTime() - x.grant.getTime()).sort((a, b) => a - b),
    grantedPerS: grantSpan > 0 ? rows.length / grantSpan : Number.NaN,
  };
}

/** The secondary row: `n` single sendCommand mutations through the gateway, `CONCURRENCY` in flight. */
async function apiBurst(s: Setup, n: number): Promise<{ requestsPerS: number; succeededPerS: number; succeeded: number }> {
  const since = new Date(Date.now() - 1);
  const t0 = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        const i = next++;
        await gql(s, 'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }', {
          i: { deviceId: s.lamps[i % s.lamps.length], name: 'setDim', params: { level: (i % 100) + 1 } },
        });
      }
    }),
  );
  const requestsS = (Date.now() - t0) / 1000;
  const count = async () =>
    (
      await sql<{ done: number; succeeded: number; last: Date | null }>`
        select count(*) filter (where status in ('SUCCEEDED','FAILED','EXPIRED','CANCELED'))::int as done,
               count(*) filter (where status = 'SUCCEEDED')::int as succeeded, max(completed_at) as last
        from commands where created_at >= ${since} and job_id is null`.execute(s.db)
    ).rows[0] as { done: number; succeeded: number; last: Date | null };
  for (let i = 0; i < 1200 && (await count()).done < n; i++) await sleep(250);
  const c = await count();
  const secs = ((c.last?.getTime() ?? Date.now()) - t0) / 1000;
  return { requestsPerS: n / requestsS, succeededPerS: c.succeeded / secs, succeeded: c.succeeded };
}

interface Result {
  started: Date;
  load: number[];
  bareBurst: BareRun;
  /** the two bare bursts, before and after the job, ms */
  bareMs: [number, number];
  burst: JobRun;
  rated: JobRun;
  bareRated: BareRun;
  api: { requestsPerS: number; succeededPerS: number; succeeded: number };
  loads: { burst: number; rated: number; api: number };
}

async function main(): Promise<void> {
  const started = new Date();
  const load0 = loadavg()[0] ?? 0;
  log(`${COMMAND}: ${fmt(DEVICES)} devices, ${fmt(RATE)}/s, ${fmt(API)} API requests; load average ${load0.toFixed(2)}`);
  const s = await setUp();
  try {
    // the baseline right before and right after the job, the faster counted: on a shared machine the load moves
    const bareBefore = await bareRoundTrip(DEVICES, null);
    const burst = await fleetJob(s, null);
    const bareAfter = await bareRoundTrip(DEVICES, null);
    const bareBurst = bareBefore.ms <= bareAfter.ms ? bareBefore : bareAfter;
    log(`bare burst: ${fmt(bareBefore.ms)} ms before the job, ${fmt(bareAfter.ms)} ms after: ${fmt(bareBurst.perS)}/s counted`);
    const lBurst = loadavg()[0] ?? 0;
    log(`job burst: ${fmt(burst.ms)} ms, ${fmt(burst.perS)}/s (${ratio(burst.perS, bareBurst.perS)}); ${stagesText(burst.stages)}`);
    log(`job burst CPU: ${cpuText(burst.cpu, burst.succeeded)}`);
    log(
      `depth over the burst: ${burst.samples.map((x) => `${x.s}s q${x.queued} f${x.inFlight} ok${x.succeeded} w${x.waitingJobs}`).join(', ')}`,
    );
    if (process.env.BENCH_COMMANDS_ONLY === 'burst') return;
    await sleep(2000);
    const rated = await fleetJob(s, RATE * 60);
    const lRated = loadavg()[0] ?? 0;
    log(
      `job at ${fmt(RATE)}/s: granted ${fmt(rated.grantedPerS)}/s, grant → SUCCEEDED p50 ${fmt(pct(rated.latencies, 50))} ms, p99 ${fmt(pct(rated.latencies, 99))} ms; ${stagesText(rated.stages)}`,
    );
    log(`job at ${fmt(RATE)}/s CPU: ${cpuText(rated.cpu, rated.succeeded)}`);
    const bareRated = await bareRoundTrip(DEVICES, RATE);
    log(`bare at ${fmt(RATE)}/s: p50 ${fmt(pct(bareRated.latencies, 50))} ms, p99 ${fmt(pct(bareRated.latencies, 99))} ms`);
    const api = await apiBurst(s, API);
    const lApi = loadavg()[0] ?? 0;
    log(`API: ${fmt(api.requestsPerS)} sendCommand/s, ${fmt(api.succeededPerS)} SUCCEEDED/s`);
    const r: Result = {
      started,
      load: [load0, loadavg()[0] ?? 0],
      bareBurst,
      bareMs: [bareBefore.ms, bareAfter.ms],
      burst,
      rated,
      bareRated,
      api,
      loads: { burst: lBurst, rated: lRated, api: lApi },
    };
    console.log(
      JSON.stringify({
        ...r,
        bareBurst: { ms: Math.round(bareBurst.ms) },
        bareRated: { p50: pct(bareRated.latencies, 50), p99: pct(bareRated.latencies, 99) },
        burst: { ms: burst.ms, perS: burst.perS, samples: burst.samples.length, stages: burst.stages },
        rated: { p50: pct(rated.latencies, 50), p99: pct(rated.latencies, 99), stages: rated.stages, samples: rated.samples.length },
        peakRss: peakRss([...burst.samples, ...rated.samples]),
      }),
    );
    if (WRITE) writeSection(r);
    else log('bench/RESULTS.md left as it is (BENCH_WRITE=1 writes it)');
  } finally {
    await s.close();
  }
}

const peakRss = (samples: readonly DepthSample[]) => ({
  bench: Math.max(...samples.map((x) => x.rss.bench)),
  ingest: Math.max(...samples.map((x) => x.rss.ingest)),
  workers: Math.max(...samples.map((x) => x.rss.workers)),
});

function depthTable(samples: readonly DepthSample[]): string[] {
  const every = Math.max(1, Math.ceil(samples.length / 14));
  const shown = samples.filter((_, i) => i % every === 0 || i === samples.length - 1);
  return [
    '| s | queued | in flight | succeeded | waiting jobs | RSS MB bench / ingest / workers |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...shown.map(
      (x) =>
        `| ${x.s} | ${fmt(x.queued)} | ${fmt(x.inFlight)} | ${fmt(x.succeeded)} | ${fmt(x.waitingJobs)} | ${x.rss.bench} / ${x.rss.ingest} / ${x.rss.workers} |`,
    ),
  ];
}

function writeSection(r: Result): void {
  const b = r.burst;
  const q = r.rated;
  const p = (l: number[], n: number) => pct(l, n);
  const peak = peakRss([...b.samples, ...q.samples]);
  const bareNote = `the faster of two, right before and right after the job: ${fmt(r.bareMs[0])} / ${fmt(r.bareMs[1])} ms`;
  const section = [
    '<!-- commands:start -->',
    '## Commands (`npm run bench:commands`)',
    '',
    `${r.started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}; 1-minute load average ${r.load[0]?.toFixed(1)} at the start, ${r.loads.burst.toFixed(1)} after the burst job, ${r.loads.rated.toFixed(1)} after the fixed-rate job, ${r.load[1]?.toFixed(1)} at the end${r.load[0] !== undefined && r.load[0] > 1.5 ? '; **the machine was shared with other work, so the figures are pessimistic**' : ''}. Command: \`${COMMAND}\` (bench/commands.ts)${FULL_SIZE ? '' : ', **smaller than the issue asks** (10,000 devices, 1,000 commands/s)'}.`,
    `Setup: own database \`${DB_NAME}\`, the demo organization with ${fmt(DEVICES)} street lights (all direct devices, no program, no rules); ingest and workers as \`rulr start <role>\` children (default settings), the gateway and subgraphs in the bench process, one Mosquitto (\`max_queued_messages 0\`), PostgreSQL and Redis, all on this machine. Devices: test/support/command-fleet.ts, one mqtt.js connection subscribed to \`devices/+/commands\` answering \`received\` and \`succeeded\` at once, all online and the \`commands\` queue idle before each run. Baselines, in the same run: the same devices' code on a broker of its own, bare mqtt.js QoS 1 publishes of the same count, until every \`succeeded\` reply (no storage, queue or evidence).`,
    '',
    '| measure | RULR (sendSiteCommand → job runner → dispatcher → MQTT → device → ingest → workers) | bare mqtt.js (same run) | ratio | target |',
    '| --- | ---: | ---: | ---: | --- |',
    `| (a) ${fmt(DEVICES)}-device site job, request → all SUCCEEDED | ${fmt(b.ms)} ms, **${fmt(b.perS)} commands/s** | ${fmt(r.bareBurst.ms)} ms, ${fmt(r.bareBurst.perS)}/s (${bareNote}) | **${ratio(b.perS, r.bareBurst.perS)}** | ≥ 0.50× |`,
    `| (b) fixed rate (\`rolloutPerMinute\` ${fmt(RATE * 60)}, granted ${fmt(q.grantedPerS)}/s): p50 grant → SUCCEEDED | ${fmt(p(q.latencies, 50))} ms | ${fmt(p(r.bareRated.latencies, 50))} ms (publish on schedule → succeeded) | ${ratio(p(q.latencies, 50), p(r.bareRated.latencies, 50))} | |`,
    `| (b) same: p99 (max) | **${fmt(p(q.latencies, 99))} ms** (${fmt(q.latencies.at(-1) ?? Number.NaN)}) | ${fmt(p(r.bareRated.latencies, 99))} ms (${fmt(r.bareRated.latencies.at(-1) ?? Number.NaN)}) | ${ratio(p(q.latencies, 99), p(r.bareRated.latencies, 99))} | p99 < 1,000 ms |`,
    `| where (a)'s time went, p50 / p99 ms | ${stagesText(b.stages)} | | | |`,
    `| where (b)'s time went, p50 / p99 ms | ${stagesText(q.stages)} | | | |`,
    `| CPU used by (a) / (b) (the work, less sensitive to a shared machine than the times) | ${cpuText(b.cpu, b.succeeded)} / ${cpuText(q.cpu, q.succeeded)} | | | |`,
    `| row writes to \`commands\` per command (a) / (b) (table statistics; a HOT update writes no index entry) | ${writesText(b.writes, b.succeeded)} / ${writesText(q.writes, q.succeeded)} | | | |`,
    `| (c) peak RSS, MB: bench (gateway, subgraphs, devices) / ingest / workers | ${peak.bench} / ${peak.ingest} / ${peak.workers} | | | bounded |`,
    `| secondary: ${fmt(API)} single \`sendCommand\` through the gateway (${CONCURRENCY} in flight) | ${fmt(r.api.requestsPerS)} requests/s; ${fmt(r.api.succeededPerS)} SUCCEEDED/s (${fmt(r.api.succeeded)} SUCCEEDED; load ${r.loads.api.toFixed(1)}) | | | |`,
    '',
    '(c) Queue depth over (a) (queued: QUEUED and targets not released yet; in flight: SENT or DELIVERED; waiting jobs: the `commands` BullMQ queue, waiting + prioritized):',
    '',
    ...depthTable(b.samples),
    '',
    '(c) Queue depth over (b):',
    '',
    ...depthTable(q.samples),
    '',
    '<!-- commands:analysis -->',
    '<!-- commands:end -->',
  ].join('\n');
  const path = new URL('./RESULTS.md', import.meta.url);
  const md = readFileSync(path, 'utf8');
  // keep the hand-written analysis between the markers across re-runs
  const kept = /<!-- commands:analysis -->([\s\S]*?)<!-- commands:end -->/.exec(md)?.[1] ?? '\n';
  const full = section.replace(
    '<!-- commands:analysis -->\n<!-- commands:end -->',
    `<!-- commands:analysis -->${kept}<!-- commands:end -->`,
  );
  const re = /<!-- commands:start -->[\s\S]*<!-- commands:end -->/;
  writeFileSync(path, re.test(md) ? md.replace(re, full) : `${md.trimEnd()}\n\n${full}\n`);
  log('bench/RESULTS.md updated');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
