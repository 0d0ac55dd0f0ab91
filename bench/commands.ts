// bench:commands: commands from the API to the device's own answer (issue 12), against
// `rulr simulate` lamps that answer at once:
//   (a) burst: N sendCommand mutations through the gateway (one per lamp, BENCH_CONCURRENCY in
//       flight) → commands/s from the first request to the last SUCCEEDED;
//   (b) fixed rate: BENCH_RATE commands/s for BENCH_RATE_S s → p50/p99 of request → SUCCEEDED,
//       queue depth (QUEUED + SENT, sampled each second) and the RSS of the workers process;
//   (c) baseline in the same run: bare mqtt.js, a QoS 1 publish to the device and its two replies
//       (received, succeeded) back, same count, same rate, over the same broker.
// The gateway and subgraphs run in this process; workers, ingest and the simulator in their own.
// Env: BENCH_COMMANDS_SHORT=1 (smoke run: 1,000 devices, rate 200/s for 10 s), BENCH_DEVICES,
// BENCH_BURST, BENCH_RATE, BENCH_RATE_S, BENCH_CONCURRENCY, BENCH_WRITE=1 (write a short run too).

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { sql } from 'kysely';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { startRoles } from '../cli/roles.js';
import { seedDemo } from '../cli/seed.js';
import { freePort, startNoDropBroker } from '../ingest/testing/broker.js';
import { issueToken } from '../lib/auth.js';
import { loadConfig } from '../lib/config.js';
import { COMMANDS_QUEUE } from '../lib/contracts/commands.js';
import { statusKey } from '../lib/contracts/device-state.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import type { Db } from '../lib/db.js';
import { createRedis } from '../lib/redis.js';
import { portVar, SUBGRAPH_NAMES } from '../lib/subgraphs.js';
import { REDIS_URL } from '../test/support/env.js';
import { startRoleProcess } from '../test/support/role-process.js';
import { benchDatabase } from './database.js';

const SHORT = process.env.BENCH_COMMANDS_SHORT === '1';
const DEVICES = Number(process.env.BENCH_DEVICES ?? (SHORT ? 1000 : 10_000));
const BURST = Number(process.env.BENCH_BURST ?? DEVICES);
const RATE = Number(process.env.BENCH_RATE ?? (SHORT ? 200 : 1000));
const RATE_S = Number(process.env.BENCH_RATE_S ?? (SHORT ? 10 : 20));
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
const DB_NAME = 'rulr_bench_commands';
const SIZE_VARS = ['BENCH_DEVICES', 'BENCH_BURST', 'BENCH_RATE', 'BENCH_RATE_S', 'BENCH_CONCURRENCY'];
/** The command line of this run, as the results section names it. */
const COMMAND = [...SIZE_VARS.filter((v) => process.env[v]).map((v) => `${v}=${process.env[v]}`), 'npm run bench:commands'].join(' ');
const MAIN = fileURLToPath(new URL('../cli/main.ts', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
const log = (l: string) => console.log(`[bench:commands] ${l}`);

interface Stages {
  queued: [number, number];
  sent: [number, number];
  delivered: [number, number];
}

/** Where the time of the commands created since `since` went: created → SENT (dispatch), SENT → DELIVERED (broker + device + ingest + workers), DELIVERED → SUCCEEDED; p50 and p99, ms. */
async function stageTimes(db: Db, since: Date): Promise<Stages> {
  const { rows } = await sql<Record<string, number>>`
    select percentile_cont(0.5) within group (order by extract(epoch from sent_at - created_at)) * 1000 as q50,
           percentile_cont(0.99) within group (order by extract(epoch from sent_at - created_at)) * 1000 as q99,
           percentile_cont(0.5) within group (order by extract(epoch from delivered_at - sent_at)) * 1000 as s50,
           percentile_cont(0.99) within group (order by extract(epoch from delivered_at - sent_at)) * 1000 as s99,
           percentile_cont(0.5) within group (order by extract(epoch from completed_at - delivered_at)) * 1000 as d50,
           percentile_cont(0.99) within group (order by extract(epoch from completed_at - delivered_at)) * 1000 as d99
    from commands where created_at >= ${since} and status = 'SUCCEEDED'`.execute(db);
  const r = rows[0] ?? {};
  const n = (k: string) => Math.round(Number(r[k] ?? Number.NaN));
  return { queued: [n('q50'), n('q99')], sent: [n('s50'), n('s99')], delivered: [n('d50'), n('d99')] };
}

const stagesText = (s: Stages) =>
  `created → SENT ${fmt(s.queued[0])}/${fmt(s.queued[1])}, SENT → DELIVERED ${fmt(s.sent[0])}/${fmt(s.sent[1])}, DELIVERED → SUCCEEDED ${fmt(s.delivered[0])}/${fmt(s.delivered[1])}`;

/** Resident set of a process, MB (Linux /proc). */
function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : Number.NaN;
}

interface RateResult {
  sent: number;
  seconds: number;
  p50: number;
  p99: number;
  max: number;
  succeeded: number;
  samples: { s: number; depth: number; rssMb: number; outstanding: number }[];
}

async function main(): Promise<void> {
  const started = new Date();
  const load0 = loadavg()[0] ?? 0;
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
    INGEST_BATCH_MS: '20',
    GATEWAY_PORT: String(await freePort()),
    ...Object.fromEntries(SUBGRAPH_NAMES.map((n) => [portVar(n), '0'])),
    GATEWAY_RATE_LIMIT: '100000000',
    LOG_LEVEL: 'warn',
  };
  const cfg = loadConfig({ ...process.env, ...env });
  const seeded = await seedDemo(cfg, { devices: DEVICES, db: t.db, quiet: true });
  // Nothing but the bench's commands: no lighting program pushing desired levels, no rules.
  await sql`delete from program_assignments where org_id = ${seeded.orgId}`.execute(t.db);
  await sql`delete from rules where org_id = ${seeded.orgId}`.execute(t.db);
  const lamps = (
    await sql<{ id: string }>`select d.id from devices d join device_profiles p on p.id = d.profile_id
      where d.org_id = ${seeded.orgId} and not p.is_gateway order by d.serial`.execute(t.db)
  ).rows.map((r) => r.id);
  log(`${fmt(lamps.length)} lamps seeded; starting ingest, workers, the gateway with its subgraphs, the simulator`);

  const ingest = await startRoleProcess('ingest', 'INGEST_PORT', env);
  const workers = await startRoleProcess('workers', 'WORKERS_PORT', env);
  const api = await startRoles(cfg, pino({ level: 'warn' }), ['gateway', ...SUBGRAPH_NAMES]);
  const url = `http://127.0.0.1:${env.GATEWAY_PORT}/graphql`;
  const sim: ChildProcess = spawn(process.execPath, ['--import', 'tsx', MAIN, 'simulate', '--devices', String(DEVICES), '--rate', '20'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const token = await issueToken(
    { userId: 'service:bench', orgId: seeded.orgId, role: 'operator' },
    { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 7200 },
  );
  const send = async (deviceId: string, level: number): Promise<string> => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        query: 'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }',
        variables: { i: { deviceId, name: 'setDim', params: { level } } },
      }),
    });
    const b = (await res.json()) as { data?: { sendCommand: { id: string } }; errors?: { message: string }[] };
    if (!b.data) throw new Error(`sendCommand: ${JSON.stringify(b.errors)}`);
    return b.data.sendCommand.id;
  };
  const counts = async (since: Date) =>
    (
      await sql<{ done: number; succeeded: number; depth: number; last: Date | null }>`
        select count(*) filter (where status in ('SUCCEEDED','FAILED','EXPIRED','CANCELED'))::int as done,
               count(*) filter (where status = 'SUCCEEDED')::int as succeeded,
               count(*) filter (where status in ('QUEUED','SENT'))::int as depth,
               max(completed_at) as last
        from commands where created_at >= ${since}`.execute(t.db)
    ).rows[0] as { done: number; succeeded: number; depth: number; last: Date | null };

  try {
    // The simulator is up once every lamp is online: it subscribes first, then announces them.
    const warm = Date.now();
    const redis = createRedis(REDIS_URL);
    for (;;) {
      const p = redis.pipeline();
      for (const id of lamps) p.hget(statusKey(env.REDIS_PREFIX as string, id), 'online');
      const online = ((await p.exec()) ?? []).filter(([, v]) => v === '1').length;
      if (online >= lamps.length || Date.now() - warm > 120_000) break;
      await sleep(500);
    }
    await redis.quit();
    const probe = await send(lamps[0] as string, 1);
    for (let i = 0; i < 600; i++) {
      const r = await sql<{ status: string }>`select status from commands where id = ${probe}`.execute(t.db);
      if (r.rows[0]?.status === 'SUCCEEDED') break;
      await sleep(100);
    }
    log(`warm after ${((Date.now() - warm) / 1000).toFixed(1)} s`);

    // (a) burst
    const burstIds = Array.from({ length: BURST }, (_, i) => lamps[i % lamps.length] as string);
    const b0 = new Date();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < burstIds.length) {
          const i = next++;
          await send(burstIds[i] as string, (i % 100) + 1);
        }
      }),
    );
    const requestsS = (Date.now() - b0.getTime()) / 1000;
    // what waits in the workers' `commands` queue (one queue for dispatch, replies and online jobs)
    const queue = new Queue(COMMANDS_QUEUE, { connection: { url: REDIS_URL }, prefix: queuePrefix(env.REDIS_PREFIX as string) });
    const waiting: Record<string, number> = {};
    for (let i = 0; i < 1200; i++) {
      if ((await counts(b0)).done >= BURST) break;
      if (i % 4 === 0) {
        const by: Record<string, number> = {};
        for (const j of await queue.getWaiting(0, 4999)) if (j) by[j.name] = (by[j.name] ?? 0) + 1;
        for (const [k, v] of Object.entries(by)) waiting[k] = Math.max(waiting[k] ?? 0, v);
      }
      await sleep(250);
    }
    await queue.close();
    log(`commands queue, most jobs waiting at once: ${JSON.stringify(waiting)}`);
    const bc = await counts(b0);
    const burstS = ((bc.last?.getTime() ?? Date.now()) - b0.getTime()) / 1000;
    const stages = await stageTimes(t.db, b0);
    const burst = { n: BURST, succeeded: bc.succeeded, requestsS, seconds: burstS, rate: bc.succeeded / burstS, stages, waiting };
    log(`burst stages (p50/p99 ms): ${stagesText(stages)}`);
    log(
      `burst: ${fmt(bc.succeeded)}/${fmt(BURST)} SUCCEEDED in ${burstS.toFixed(1)} s (requests done in ${requestsS.toFixed(1)} s): ${fmt(burst.rate)}/s`,
    );
    await sleep(2000);

    // (b) fixed rate
    const platform = await fixedRate(
      async (i, at) => {
        const id = await send(lamps[i % lamps.length] as string, (i % 100) + 1);
        return { id, at };
      },
      async (starts) => {
        const ids = [...starts.keys()];
        const { rows } = await sql<{ id: string; status: string; completed_at: Date | null }>`
          select id, status, completed_at from commands where id = any(${ids}::uuid[])`.execute(t.db);
        return rows
          .filter((r) => r.status === 'SUCCEEDED' && r.completed_at)
          .map((r) => (r.completed_at as Date).getTime() - (starts.get(r.id) as number));
      },
      async (since) => (await counts(since)).depth,
      () => rssMb(workers.child.pid as number),
      async (since, n) => (await counts(since)).done >= n,
    );
    log(`rate: ${fmt(platform.sent / platform.seconds)}/s sent, p50 ${fmt(platform.p50)} ms, p99 ${fmt(platform.p99)} ms`);

    // (c) baseline: bare mqtt.js over the same broker
    const bare = await bareBaseline(broker.url);
    log(`bare: burst ${fmt(bare.burstRate)}/s, p50 ${fmt(bare.rate.p50)} ms, p99 ${fmt(bare.rate.p99)} ms`);

    const workersRss = rssMb(workers.child.pid as number);
    if (!SHORT || process.env.BENCH_WRITE === '1')
      writeSection({ started, burst, platform, bare, workersRss, load: [load0, loadavg()[0] ?? 0] });
    else log('a smoke run: bench/RESULTS.md left as it is (BENCH_WRITE=1 writes it)');
  } finally {
    sim.kill('SIGTERM');
    await api.close();
    await workers.kill('SIGTERM');
    await ingest.kill('SIGTERM');
    await broker.stop();
    await t.drop();
  }
}

/**
 * Sends at `RATE`/s for `RATE_S` s (open loop: the schedule does not wait for answers; at most 4,000
 * requests outstanding), samples queue depth and RSS each second, then waits for the answers.
 */
async function fixedRate(
  sendOne: (i: number, at: number) => Promise<{ id: string; at: number }>,
  latencies: (starts: Map<string, number>) => Promise<number[]>,
  depth: (since: Date) => Promise<number>,
  rss: () => number,
  done: (since: Date, n: number) => Promise<boolean>,
): Promise<RateResult> {
  const since = new Date();
  const t0 = Date.now();
  const total = RATE * RATE_S;
  const starts = new Map<string, number>();
  const samples: RateResult['samples'] = [];
  let sent = 0;
  let outstanding = 0;
  let failed = 0;
  let nextSample = t0 + 1000;
  const sample = async () => {
    if (Date.now() < nextSample) return;
    samples.push({ s: Math.round((Date.now() - t0) / 1000), depth: await depth(since), rssMb: rss(), outstanding });
    nextSample = Date.now() + 1000;
  };
  while (sent < total) {
    const now = Date.now();
    const due = Math.min(total, Math.floor(((now - t0) / 1000) * RATE));
    while (sent < due && outstanding < 4000) {
      const i = sent++;
      outstanding++;
      sendOne(i, Date.now())
        .then((r) => starts.set(r.id, r.at))
        .catch((e: unknown) => {
          if (!failed++) log(`first failed request: ${String(e).slice(0, 300)}`);
        })
        .finally(() => outstanding--);
    }
    await sample();
    await sleep(5);
  }
  const seconds = (Date.now() - t0) / 1000;
  while (outstanding > 0) {
    await sample();
    await sleep(20);
  }
  for (let i = 0; i < 960 && !(await done(since, starts.size)); i++) {
    await sample();
    await sleep(250);
  }
  const l = (await latencies(starts)).sort((a, b) => a - b);
  if (failed) log(`${failed} requests failed`);
  return { sent, seconds, p50: pct(l, 50), p99: pct(l, 99), max: l[l.length - 1] ?? Number.NaN, succeeded: l.length, samples };
}

/** The same round trip with nothing but mqtt.js: publish QoS 1 to the device, the device answers received and succeeded. */
async function bareBaseline(brokerUrl: string): Promise<{ burstRate: number; burstS: number; rate: RateResult }> {
  const P = 'bench-bare';
  const platform = await mqtt.connectAsync(brokerUrl, { clientId: `bare-p-${randomBytes(3).toString('hex')}`, protocolVersion: 5 });
  const device = await mqtt.connectAsync(brokerUrl, { clientId: `bare-d-${randomBytes(3).toString('hex')}`, protocolVersion: 5 });
  await device.subscribeAsync(`${P}/devices/+/commands`, { qos: 1 });
  await platform.subscribeAsync(`${P}/devices/+/commands/reply`, { qos: 1 });
  device.on('message', (topic, payload) => {
    const { id } = JSON.parse(payload.toString()) as { id: string };
    const reply = `${topic}/reply`;
    device.publish(reply, JSON.stringify({ id, status: 'received' }), { qos: 1 });
    device.publish(reply, JSON.stringify({ id, status: 'succeeded', result: { state: { level: 1, on: true } } }), { qos: 1 });
  });
  const waiting = new Map<string, (at: number) => void>();
  platform.on('message', (_t, payload) => {
    const r = JSON.parse(payload.toString()) as { id: string; status: string };
    if (r.status === 'succeeded') waiting.get(r.id)?.(Date.now());
  });
  const finished = new Map<string, number>();
  const roundTrip = (i: number): { id: string; done: Promise<number> } => {
    const id = `${i}-${randomBytes(4).toString('hex')}`;
    const done = new Promise<number>((resolve) => waiting.set(id, resolve)).then((at) => {
      waiting.delete(id);
      finished.set(id, at);
      return at;
    });
    const msg = JSON.stringify({
      id,
      name: 'setDim',
      params: { level: (i % 100) + 1 },
      expiresAt: new Date(Date.now() + 3600_000).toISOString(),
    });
    platform.publish(`${P}/devices/${i % DEVICES}/commands`, msg, { qos: 1 });
    return { id, done };
  };
  try {
    // burst: the same count, all published at once (the API's commands too are all in flight once their requests return)
    const b0 = Date.now();
    await Promise.all(Array.from({ length: BURST }, (_, i) => roundTrip(i).done));
    const burstS = (Date.now() - b0) / 1000;
    const rate = await fixedRate(
      async (i, at) => {
        const r = roundTrip(i);
        return { id: r.id, at };
      },
      async (starts) => [...starts].filter(([id]) => finished.has(id)).map(([id, at]) => (finished.get(id) as number) - at),
      async () => waiting.size,
      () => rssMb(process.pid),
      async () => waiting.size === 0,
    );
    return { burstRate: BURST / burstS, burstS, rate };
  } finally {
    await platform.endAsync();
    await device.endAsync();
  }
}

function writeSection(r: {
  started: Date;
  burst: {
    n: number;
    succeeded: number;
    requestsS: number;
    seconds: number;
    rate: number;
    stages: Stages;
    waiting: Record<string, number>;
  };
  platform: RateResult;
  bare: { burstRate: number; burstS: number; rate: RateResult };
  workersRss: number;
  load: [number, number];
}): void {
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');
  const depthMax = Math.max(...r.platform.samples.map((s) => s.depth));
  const rss = r.platform.samples.map((s) => s.rssMb);
  const section = [
    '<!-- commands:start -->',
    '## Commands (`npm run bench:commands`)',
    '',
    `${r.started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}; **the machine was shared with other helpers' work, so the figures are pessimistic.** Command: \`${COMMAND}\` (bench/commands.ts)${COMMAND === 'npm run bench:commands' ? '' : ', smaller than the issue asks (10,000 / 1,000 per s for 20 s): the full size did not finish in the time the shared machine gave'}. Load average (1 min) ${r.load[0].toFixed(1)} at the start, ${r.load[1].toFixed(1)} at the end. ${fmt(DEVICES)} demo lamps of \`rulr simulate\` answering at once (received, then succeeded with their state); the gateway and subgraphs in the bench process, workers, ingest and the simulator in their own, one Mosquitto, PostgreSQL and Redis on the same 2 cores. Requests carry an operator token; ${CONCURRENCY} in flight in the burst.`,
    '',
    '| measure | RULR (gateway → commands subgraph → PostgreSQL → workers → MQTT → device → ingest → workers) | bare mqtt.js (publish QoS 1 → device → 2 replies) | ratio | target |',
    '| --- | ---: | ---: | ---: | --- |',
    `| burst of ${fmt(r.burst.n)} commands: request → SUCCEEDED | ${fmt(r.burst.rate)}/s (${fmt(r.burst.succeeded)} SUCCEEDED in ${r.burst.seconds.toFixed(1)} s; requests answered in ${r.burst.requestsS.toFixed(1)} s) | ${fmt(r.bare.burstRate)}/s (${r.bare.burstS.toFixed(1)} s) | ${ratio(r.burst.rate, r.bare.burstRate)} | ≥ 0.50× |`,
    `| ${fmt(RATE)} commands/s for ${RATE_S} s: p50 request → SUCCEEDED | ${fmt(r.platform.p50)} ms (sent ${fmt(r.platform.sent / r.platform.seconds)}/s, ${fmt(r.platform.succeeded)} SUCCEEDED) | ${fmt(r.bare.rate.p50)} ms | ${ratio(r.platform.p50, r.bare.rate.p50)} | |`,
    `| same: p99 (max) | ${fmt(r.platform.p99)} ms (${fmt(r.platform.max)}) | ${fmt(r.bare.rate.p99)} ms (${fmt(r.bare.rate.max)}) | ${ratio(r.platform.p99, r.bare.rate.p99)} | p99 < 1,000 ms |`,
    `| where the burst's time went (p50 / p99) | ${stagesText(r.burst.stages)} ms | | | |`,
    `| burst: most jobs waiting at once in the workers' \`commands\` queue, by name | ${
      Object.entries(r.burst.waiting)
        .map(([k, v]) => `${k} ${fmt(v)}`)
        .join(', ') || 'none'
    } | | | |`,
    `| queue depth (QUEUED + SENT), max of the per-second samples | ${fmt(depthMax)} (and up to ${fmt(Math.max(...r.platform.samples.map((s) => s.outstanding)))} requests not answered yet) | ${fmt(Math.max(...r.bare.rate.samples.map((s) => s.depth)))} awaiting a reply | | |`,
    `| RSS of the workers process | ${Math.min(...rss)}–${Math.max(...rss)} MB during the run, ${r.workersRss} MB at the end | | | bounded |`,
    '',
    `Per-second samples of the fixed-rate run (s: requests not answered yet / QUEUED + SENT / workers RSS MB): ${r.platform.samples.map((s) => `${s.s}: ${s.outstanding}/${s.depth}/${s.rssMb}`).join(', ')}.`,
    '',
    '<!-- commands:analysis -->',
    '<!-- commands:end -->',
  ].join('\n');
  const path = new URL('./RESULTS.md', import.meta.url);
  const md = readFileSync(path, 'utf8');
  // keep a hand-written analysis between the markers across re-runs
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
