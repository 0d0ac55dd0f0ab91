// `npm run bench:ingest`: 1,000,000 readings (100,000 QoS 1 messages × 10 values, 1,000 devices)
// through a private no-drop Mosquitto (deploy/mosquitto/mosquitto-no-drop.conf on port 18830) into
// one ingest process; then psql COPY of the same rows into an identical table; then publish→commit
// latency at half the measured rate. Env: BENCH_MESSAGES, BENCH_DEVICES, BENCH_PUBLISHERS (live-phase connections, default 4), BENCH_COPY_RUNS (default 3), BENCH_PORT, TEST_PG_URL;
// BENCH_PHASES (default `listened,backlog,latency`: the optional phases besides live + COPY) for quick loops;
// BENCH_LATENCY_RATE (readings/s, default half the live rate);
// BENCH_CPU_PROF=1 writes a V8 CPU profile of each ingest child (`node --cpu-prof`) to BENCH_CPU_PROF_DIR.
// BENCH_INGEST_ENTRY=<file.mjs> runs that prebuilt ingest bundle instead of building ingest/testing/run-ingest.ts.
// BENCH_TIMESCALE=1 converts the fresh database to TimescaleDB storage (TEST_PG_URL must name a TimescaleDB server).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Kysely, PostgresDialect } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { startNoDropBroker } from '../ingest/testing/broker.js';
import { seedFleet } from '../ingest/testing/fixtures.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { applyTimescale } from '../lib/telemetry/timescale/apply.js';
import { copyText, type Row } from '../lib/telemetry/writer.js';
import { migrateToLatest } from '../schema/migrate.js';
import { adminUrl, dbUrl } from '../test/support/env.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 100_000);
const DEVICES = Number(process.env.BENCH_DEVICES ?? 1000);
const VALUES = 10;
const PORT = Number(process.env.BENCH_PORT ?? 18830);
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 20);
/**
 * Seconds of traffic at the latency rate sent to the fresh ingest before measuring (not counted): the
 * latency phase is about the steady state, not the process start (JIT, device cache, Lua scripts).
 */
const LATENCY_WARMUP_SECONDS = Number(process.env.BENCH_LATENCY_WARMUP_SECONDS ?? 5);
/** Node flags of the ingest process, as deploy/k8s/ingest.yaml sets them (ingest/README.md). */
const PUBLISHERS = Number(process.env.BENCH_PUBLISHERS ?? 4);
/** raw COPY runs; the median is the baseline */
const COPY_RUNS = Number(process.env.BENCH_COPY_RUNS ?? 3);
const INGEST_NODE_FLAGS = (process.env.BENCH_INGEST_NODE_FLAGS ?? '--max-old-space-size=256 --max-semi-space-size=16')
  .split(' ')
  .filter(Boolean);
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF === '1' ? (process.env.BENCH_CPU_PROF_DIR ?? `${os.tmpdir()}/rulr-ingest-prof`) : undefined;
if (CPU_PROF_DIR) INGEST_NODE_FLAGS.push('--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`);
const PHASES = new Set((process.env.BENCH_PHASES ?? 'listened,backlog,latency').split(',').map((p) => p.trim()));
const METRICS = ['power', 'voltage', 'current', 'temp', 'lux', 'dim', 'pf', 'freq', 'rssi', 'energy'];

const log = (...a: unknown[]) => console.log(new Date().toISOString().slice(11, 19), ...a);

function rssPeakMb(pid: number): number {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0) / 1024;
}

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds of the PostgreSQL backends serving `db` (by pid), with their application names. */
async function backendCpu(sql: pg.Client, db: string): Promise<Map<number, { app: string; cpu: number }>> {
  const r = await sql.query<{ pid: number; app: string }>('select pid, application_name as app from pg_stat_activity where datname = $1', [
    db,
  ]);
  return new Map(r.rows.map((x) => [x.pid, { app: x.app || 'other', cpu: cpuSeconds(x.pid) }]));
}

async function readingsCommitted(port: number): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  const m = /^rulr_ingest_readings_total (\d+)/m.exec(await r.text());
  return Number(m?.[1] ?? 0);
}

/**
 * The ingest child runs compiled JavaScript, as in production (`rulr start ingest` runs dist/): the
 * entry is bundled once into bench/out/ (esbuild, packages external). Under `node --import tsx` the
 * TypeScript loader's own thread and caches added about 45 MB to the child's RSS (168 MB idle vs
 * 123 MB compiled). BENCH_INGEST_RUNNER=tsx runs the sources through tsx instead.
 */
let entry: string[] | undefined;
async function ingestEntry(): Promise<string[]> {
  if (entry) return entry;
  if (process.env.BENCH_INGEST_ENTRY) {
    // A prebuilt bundle (e.g. of an earlier version, for interleaved A/B runs).
    entry = [process.env.BENCH_INGEST_ENTRY];
    return entry;
  }
  if (process.env.BENCH_INGEST_RUNNER === 'tsx') {
    entry = ['--import', 'tsx', 'ingest/testing/run-ingest.ts'];
    return entry;
  }
  const { build } = await import('esbuild');
  const outfile = `${ROOT}bench/out/run-ingest.mjs`;
  await build({
    entryPoints: [`${ROOT}ingest/testing/run-ingest.ts`],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });
  // No --enable-source-maps: with it the child used about 25% more CPU (stack traces taken in the hot path).
  entry = [outfile];
  return entry;
}

async function startIngestChild(env: Record<string, string>): Promise<{ child: ChildProcess; port: number; lines: string[] }> {
  // node itself (not npx): the pid we measure is the ingest process itself.
  const child = spawn(process.execPath, [...INGEST_NODE_FLAGS, ...(await ingestEntry())], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  return await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
      let i = buf.indexOf('\n');
      while (i >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        if ((process.env.BENCH_LOG_LEVEL && line.startsWith('{')) || (process.env.BENCH_CHILD_STDOUT === '1' && !line.startsWith('{')))
          process.stderr.write(`${line}\n`);
        const m = /^ready (\d+)/.exec(line);
        if (m) resolve({ child, port: Number(m[1]), lines });
        i = buf.indexOf('\n');
      }
    });
    child.once('exit', (code) => reject(new Error(`ingest exited (${code})`)));
  });
}

async function connectPublisher(url: string): Promise<MqttClient> {
  const c = mqtt.connect(url, { clientId: `bench-pub-${randomBytes(3).toString('hex')}`, protocolVersion: 5, reconnectPeriod: 0 });
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

function payload(ts: number, i: number): string {
  const v: Record<string, number> = {};
  for (let k = 0; k < VALUES; k++) v[METRICS[k] as string] = k === 9 ? i / 100 : Math.round(((i * 31 + k * 17) % 1000) * 10) / 10;
  return JSON.stringify({ ts, values: v });
}

async function main(): Promise<void> {
  const dbName = `rulr_bench_ingest_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const url = dbUrl(dbName);
  const kdb = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
  await migrateToLatest(kdb);
  if (process.env.BENCH_TIMESCALE === '1') log((await applyTimescale(kdb)).join('; '));
  await kdb.destroy();
  const fleet = await seedFleet(url, {
    devices: DEVICES,
    metrics: METRICS.map((name) => (name === 'energy' ? { name, type: 'number', counter: true } : { name, type: 'number' })),
  });
  const broker = await startNoDropBroker(PORT);
  const prefix = `bench${randomBytes(3).toString('hex')}:`;
  const env = {
    DATABASE_URL: url,
    MQTT_URL: broker.url,
    REDIS_PREFIX: prefix,
    // Own group per run: a stale session of an earlier run would keep taking its share of a shared subscription.
    INGEST_GROUP: `bench${randomBytes(3).toString('hex')}`,
    INGEST_CLIENT_ID: `bench-ingest-${randomBytes(3).toString('hex')}`,
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
  };
  const sql = new pg.Client({ connectionString: url });
  await sql.connect();
  const loadBefore = os.loadavg()[0] as number;
  let ingest: Awaited<ReturnType<typeof startIngestChild>> | undefined;
  try {
    ingest = await startIngestChild(env);
    await sql.query('checkpoint'); // the live phase, like each raw COPY, starts with no write-back pending
    const pub = await connectPublisher(broker.url);
    // BENCH_PUBLISHERS: MQTT connections the live phase publishes over (a device always on the same
    // one). A fleet never shares one connection; with one, the publisher capped the live rate.
    const pubs = [pub];
    for (let k = 1; k < PUBLISHERS; k++) pubs.push(await connectPublisher(broker.url));
    const t0 = Date.now() - 7_200_000;
    const expected = MESSAGES * VALUES;
    const child = ingest.child;
    const port = ingest.port;

    /**
     * Publishes MESSAGES at QoS 1 as fast as the broker takes them (readings stamped from `tBase`)
     * and waits until ingest has committed `until` readings in all; where the 2 cores went meanwhile.
     */
    const live = async (tBase: number, until: number) => {
      const cpu0 = { ingest: cpuSeconds(child.pid as number), pub: process.cpuUsage(), pg: await backendCpu(sql, dbName) };
      const start = performance.now();
      const window: Promise<unknown>[] = [];
      for (let i = 0; i < MESSAGES; i++) {
        const d = i % DEVICES;
        const ts = tBase + Math.floor(i / DEVICES) * 10;
        window.push(
          (pubs[d % pubs.length] as MqttClient).publishAsync(`devices/${fleet.deviceIds[d]}/telemetry`, payload(ts, i), { qos: 1 }),
        );
        // a sliding window of 2,000 unacknowledged messages (not stop-and-wait per 2,000)
        if (window.length >= 2000) await window.shift();
      }
      await Promise.all(window);
      const published = performance.now();
      while ((await readingsCommitted(port)) < until) {
        if (performance.now() - start > 600_000) throw new Error('ingest did not finish within 10 minutes');
        await new Promise((r) => setTimeout(r, 100));
      }
      const done = performance.now();
      const seconds = (done - start) / 1000;
      // Where the 2 cores went during the live phase (bench parent = publisher + polling).
      const pgNow = await backendCpu(sql, dbName);
      let pgCpu = 0;
      const byApp = new Map<string, number>();
      for (const [pid, c] of pgNow) {
        const used = c.cpu - (cpu0.pg.get(pid)?.cpu ?? 0);
        pgCpu += used;
        byApp.set(c.app, (byApp.get(c.app) ?? 0) + used);
      }
      const apps = [...byApp]
        .filter(([, c]) => c >= 0.05)
        .sort((x, y) => y[1] - x[1])
        .map(([app, c]) => `${app} ${c.toFixed(1)}`)
        .join(', ');
      const pubCpu = process.cpuUsage(cpu0.pub);
      const cpuLive = `ingest ${(cpuSeconds(child.pid as number) - cpu0.ingest).toFixed(1)} s, publisher ${((pubCpu.user + pubCpu.system) / 1e6).toFixed(1)} s, PostgreSQL backends ${pgCpu.toFixed(1)} s (${apps})`;
      log(`cpu during the live phase (${seconds.toFixed(1)} s wall): ${cpuLive}; load ${os.loadavg()[0]?.toFixed(1)}`);
      return { start, published, done, seconds, cpuLive };
    };

    // 1. Throughput: publish everything at QoS 1 as fast as the broker takes it.
    log(`publishing ${MESSAGES} messages × ${VALUES} values from ${DEVICES} devices`);
    const { start, published, done, seconds, cpuLive } = await live(t0, expected);
    const ingestRate = expected / seconds;
    // Rollups: ingest commits deltas; its compactor folds them within seconds. Measure until the last
    // delta is folded, and check that the rollups then count every reading exactly once.
    while (Number((await sql.query('select count(*) n from metrics_rollup_deltas')).rows[0].n) > 0) {
      if (performance.now() - done > 120_000) throw new Error('rollup deltas not compacted within 2 minutes');
      await new Promise((r) => setTimeout(r, 100));
    }
    const compactedSeconds = (performance.now() - start) / 1000;
    const hwm = rssPeakMb(ingest.child.pid as number);
    const stored = Number((await sql.query('select count(*) n from device_metrics')).rows[0].n);
    const rolled = (
      await sql.query('select (select sum(count) from metrics_hourly)::bigint h, (select sum(count) from metrics_daily)::bigint d')
    ).rows[0];
    if (Number(rolled.h) !== expected || Number(rolled.d) !== expected)
      throw new Error(`rollups count ${rolled.h} / ${rolled.d} readings, expected ${expected}`);
    log(
      `ingest: ${expected} readings in ${seconds.toFixed(2)} s = ${Math.round(ingestRate)} readings/s (publish took ${((published - start) / 1000).toFixed(2)} s); stored ${stored}; rollups compacted after ${compactedSeconds.toFixed(2)} s; peak RSS ${hwm.toFixed(0)} MB`,
    );

    // 1b. The same with a real-time listener on the organization's channel, as a gateway with
    // subscribers would be: ingest then builds and publishes the events it skips when nobody listens.
    let listened: { rate: number; events: number; cpuLive: string } | undefined;
    if (PHASES.has('listened')) {
      const { createRedis } = await import('../lib/redis.js');
      const listener = createRedis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
      let events = 0;
      const marker = Buffer.from('"field":"telemetryUpdated"');
      listener.on('messageBuffer', (_c: Buffer, m: Buffer) => {
        for (let i = m.indexOf(marker); i >= 0; i = m.indexOf(marker, i + marker.length)) events++;
      });
      await listener.subscribe(eventsChannel(prefix, fleet.orgId));
      await sql.query('checkpoint'); // like the first live phase: no write-back of the first one pending
      log('publishing the same volume again with a real-time listener subscribed');
      const l = await live(t0 + 1_800_000, 2 * expected);
      await new Promise((r) => setTimeout(r, 200));
      await listener.quit();
      if (events === 0) throw new Error('listened phase: no telemetry event reached the listener');
      const stored2 = Number((await sql.query('select count(*) n from device_metrics')).rows[0].n);
      if (stored2 !== 2 * expected) throw new Error(`listened phase: ${stored2} readings stored, expected ${2 * expected}`);
      listened = { rate: expected / l.seconds, events, cpuLive: l.cpuLive };
      log(
        `ingest with a listener: ${expected} readings in ${l.seconds.toFixed(2)} s = ${Math.round(listened.rate)} readings/s; ${events} device events received`,
      );
    }

    // 2. Raw psql COPY of the same rows into an identical table.
    await sql.query(`create table bench_raw (like device_metrics) partition by range (time);
      create unique index on bench_raw (device_id, metric, time);
      create table bench_raw_default partition of bench_raw default;
      select rulr_ensure_partitions('bench_raw', 'day', 7);`);
    const rows: Row[] = [];
    const file = `${os.tmpdir()}/${dbName}.tsv`;
    writeFileSync(file, '');
    for (let i = 0; i < MESSAGES; i++) {
      const ts = t0 + Math.floor(i / DEVICES) * 10;
      const doc = JSON.parse(payload(ts, i)) as { values: Record<string, number> };
      for (const [metric, value] of Object.entries(doc.values)) {
        rows.push({ ts, orgId: fleet.orgId, deviceId: fleet.deviceIds[i % DEVICES] as string, metric, value, text: null, counter: false });
      }
      if (rows.length >= 100_000) writeFileSync(file, tsv(rows.splice(0)), { flag: 'a' });
    }
    writeFileSync(file, tsv(rows.splice(0)), { flag: 'a' });
    // COPY_RUNS runs, each into the emptied table after a checkpoint (the first would otherwise pay
    // for the live phase's write-back); the median is the baseline. One run varied 133k–207k rows/s.
    const copyRuns: number[] = [];
    for (let k = 0; k < COPY_RUNS; k++) {
      await sql.query('truncate bench_raw; checkpoint');
      const c0 = performance.now();
      const r = spawnSync(
        'psql',
        [url, '-v', 'ON_ERROR_STOP=1', '-c', `\\copy bench_raw (time, org_id, device_id, metric, value, text) from '${file}'`],
        { encoding: 'utf8' },
      );
      if (r.status !== 0) throw new Error(`psql COPY failed: ${r.stderr}`);
      copyRuns.push((performance.now() - c0) / 1000);
    }
    const copySeconds = [...copyRuns].sort((a, b) => a - b)[Math.floor(copyRuns.length / 2)] as number;
    const copyRate = expected / copySeconds;
    const copyRange = copyRuns.map((x) => Math.round(expected / x));
    rmSync(file, { force: true });
    // The raw COPY left ~1M rows of dirty pages and WAL: drop the table (its dirty buffers go with it)
    // and checkpoint, so the phases after it do not pay for its write-back (the latency phase's first
    // commits waited seconds on it).
    await sql.query('drop table bench_raw; checkpoint');
    log(
      `psql COPY (median of ${COPY_RUNS}: ${copyRange.join(', ')} rows/s): ${expected} rows in ${copySeconds.toFixed(2)} s = ${Math.round(copyRate)} rows/s; ingest/COPY = ${((100 * ingestRate) / copyRate).toFixed(1)}%`,
    );

    // 3. Backlog: the same volume queued by the broker while ingest is stopped (same session),
    // then drained: ingest's own rate without the publisher competing for the CPU.
    let drainRate = Number.NaN;
    if (PHASES.has('backlog')) {
      ingest.child.kill('SIGTERM');
      await new Promise((r) => ingest?.child.once('exit', r));
      const t1 = t0 + 3_600_000;
      const window: Promise<unknown>[] = [];
      for (let i = 0; i < MESSAGES; i++) {
        const ts = t1 + Math.floor(i / DEVICES) * 10;
        window.push(pub.publishAsync(`devices/${fleet.deviceIds[i % DEVICES]}/telemetry`, payload(ts, i), { qos: 1 }));
        if (window.length >= 2000) await Promise.all(window.splice(0));
      }
      await Promise.all(window);
      const d0 = performance.now();
      ingest = await startIngestChild(env);
      while ((await readingsCommitted(ingest.port)) < expected) {
        if (performance.now() - d0 > 600_000) throw new Error('backlog phase: not every reading committed within 10 minutes');
        await new Promise((r) => setTimeout(r, 100));
      }
      const drainSeconds = (performance.now() - d0) / 1000;
      drainRate = expected / drainSeconds;
      log(
        `backlog drain: ${expected} readings in ${drainSeconds.toFixed(2)} s = ${Math.round(drainRate)} readings/s (${((100 * drainRate) / copyRate).toFixed(1)}% of COPY)`,
      );
    }

    // 4. Latency at half the measured rate: a fresh ingest with latency recording.
    const msgRate = Number(process.env.BENCH_LATENCY_RATE ?? ingestRate / 2) / VALUES;
    let stats = { n: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
    let warmup = stats;
    if (PHASES.has('latency')) {
      ingest.child.kill('SIGTERM');
      await new Promise((r) => ingest?.child.once('exit', r));
      ingest = await startIngestChild({ ...env, RULR_BENCH_LATENCY: '1' });
      const child = ingest;
      const warm = Math.round(msgRate * LATENCY_WARMUP_SECONDS);
      const total = Math.round(msgRate * LATENCY_SECONDS);
      let sent = 0;
      /** publishes `count` messages at `msgRate`, waits for their commit and returns ingest's latency summary (which it resets) */
      const paced = async (count: number) => {
        const l0 = performance.now();
        const inflight: Promise<unknown>[] = [];
        for (let i = 0; i < count; i++, sent++) {
          const due = l0 + (i / msgRate) * 1000;
          const wait = due - performance.now();
          if (wait > 2) await new Promise((r) => setTimeout(r, wait));
          inflight.push(pub.publishAsync(`devices/${fleet.deviceIds[sent % DEVICES]}/telemetry`, payload(Date.now(), sent), { qos: 1 }));
          if (inflight.length > 5000) await Promise.all(inflight.splice(0, 2500));
        }
        await Promise.all(inflight);
        const l1 = performance.now();
        while ((await readingsCommitted(child.port)) < sent * VALUES) {
          if (performance.now() - l1 > 120_000) throw new Error('latency phase: not every reading committed within 2 minutes');
          await new Promise((r) => setTimeout(r, 100));
        }
        // The counter moves at commit; latencies are recorded after the Redis stage that follows it.
        await new Promise((r) => setTimeout(r, 2000));
        const seen = child.lines.length;
        child.child.stdin?.write('stats\n');
        let line: string | undefined;
        for (;;) {
          line = child.lines.slice(seen).find((l) => l.startsWith('stats '));
          if (line) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        return JSON.parse(line.slice(6)) as typeof stats;
      };
      if (warm > 0) {
        log(`latency warm-up (not counted): ${warm} messages at ${Math.round(msgRate)} msg/s for ${LATENCY_WARMUP_SECONDS} s`);
        const w = await paced(warm);
        warmup = w;
        log(`  warm-up publish→committed: p50 ${w.p50} ms, p99 ${w.p99} ms, max ${w.max} ms`);
      }
      log(
        `latency: ${total} messages at ${Math.round(msgRate)} msg/s (${Math.round(msgRate * VALUES)} readings/s) for ${LATENCY_SECONDS} s`,
      );
      stats = await paced(total);
      log(`latency publish→committed: p50 ${stats.p50} ms, p99 ${stats.p99} ms, max ${stats.max} ms over ${stats.n} messages`);
    }
    for (const p of pubs) await p.endAsync();

    const cpu = os.cpus();
    const result = {
      machine: `${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GB RAM, Node ${process.version}, PostgreSQL ${(await sql.query('show server_version')).rows[0].server_version}, Mosquitto 2.0.11`,
      readings: expected,
      ingestSeconds: Number(seconds.toFixed(2)),
      ingestReadingsPerSecond: Math.round(ingestRate),
      compactedSeconds: Number(compactedSeconds.toFixed(2)),
      compactedReadingsPerSecond: Math.round(expected / compactedSeconds),
      settings: ['INGEST_BATCH_SIZE', 'INGEST_BATCH_MS', 'INGEST_WRITERS', 'INGEST_MAX_PENDING']
        .filter((k) => process.env[k])
        .map((k) => `${k}=${process.env[k]}`)
        .join(' '),
      copySeconds: Number(copySeconds.toFixed(2)),
      copyRowsPerSecond: Math.round(copyRate),
      copyRuns: copyRange.join(', '),
      ratioPercent: Number(((100 * ingestRate) / copyRate).toFixed(1)),
      listenedReadingsPerSecond: Math.round(listened?.rate ?? Number.NaN),
      listenedRatioPercent: Number(((100 * (listened?.rate ?? Number.NaN)) / copyRate).toFixed(1)),
      listenedEvents: listened?.events,
      cpuListened: listened?.cpuLive,
      backlogDrainReadingsPerSecond: Math.round(drainRate),
      backlogRatioPercent: Number(((100 * drainRate) / copyRate).toFixed(1)),
      ingestPeakRssMb: Math.round(hwm),
      cpuLive,
      latencyRateReadingsPerSecond: Math.round(msgRate * VALUES),
      latencyP50Ms: stats.p50,
      latencyP99Ms: stats.p99,
      latencyWarmupP50Ms: warmup.p50,
      latencyWarmupP99Ms: warmup.p99,
    };
    console.log(JSON.stringify(result));
    if (process.env.BENCH_WRITE_RESULTS !== '0') {
      if (PHASES.has('listened') && PHASES.has('backlog') && PHASES.has('latency') && !CPU_PROF_DIR) writeResults(result, loadBefore);
      else log('RESULTS.md not written: only a full run without profiling is reported there');
    }
  } finally {
    ingest?.child.kill('SIGTERM');
    await sql.end();
    await broker.stop();
    const redis = (await import('../lib/redis.js')).createRedis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
    const keys = await redis.keys(`${prefix}*`);
    for (let i = 0; i < keys.length; i += 1000) await redis.del(...keys.slice(i, i + 1000));
    await redis.quit();
    await new Promise((r) => setTimeout(r, 500));
    await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
}

/** Replaces the ingest section of bench/RESULTS.md (between its markers; appended when absent). */
function writeResults(r: Record<string, unknown>, loadBefore: number): void {
  const file = `${ROOT}bench/RESULTS.md`;
  const pct = (v: unknown) => `${v}%`;
  const n = (v: unknown) => Number(v).toLocaleString('en-US');
  const section = [
    '<!-- bench:ingest:start -->',
    '## Ingest (`npm run bench:ingest`)',
    '',
    `Run ${new Date().toISOString().slice(0, 16)}Z on ${r.machine}. 1-minute load average ${loadBefore.toFixed(1)} before and ${os.loadavg()[0]?.toFixed(1)} after (the host is shared: absolute rates are pessimistic and vary from run to run).`,
    `Command: \`npm run bench:ingest\` (env: \`BENCH_MESSAGES\`, \`BENCH_DEVICES\`, \`BENCH_PUBLISHERS\`, \`BENCH_COPY_RUNS\`, \`BENCH_PORT\`, \`BENCH_LATENCY_SECONDS\`, \`BENCH_LATENCY_WARMUP_SECONDS\`, \`BENCH_WRITE_RESULTS=0\`, \`BENCH_PHASES\`, \`BENCH_CPU_PROF=1\`, \`BENCH_INGEST_RUNNER=tsx\`).`,
    `Setup: ${n(MESSAGES)} QoS 1 messages × ${VALUES} values from ${n(DEVICES)} devices (\`{"ts","values"}\`), live phase published by ${PUBLISHERS} mqtt.js connections (a device always on the same one; at most 2,000 unacknowledged), the other phases by one, a private Mosquitto 2.0.11 on port ${PORT} with \`deploy/mosquitto/mosquitto-no-drop.conf\`, one ingest process (child: compiled JavaScript as in production, bundled by esbuild into bench/out/, ${r.settings ? `\`${r.settings}\`` : 'default settings'}, \`node ${INGEST_NODE_FLAGS.filter((f) => !f.startsWith('--cpu-prof')).join(' ')}\`), PostgreSQL 15 with default settings on the same host.`,
    '',
    '| measure | result | target |',
    '| --- | ---: | --- |',
    `| ingest, live: readings committed end to end (first publish → last commit) | ${n(r.ingestReadingsPerSecond)} readings/s (${r.ingestSeconds} s) | ≥ 150,000 |`,
    `| ingest, live, until the last rollup delta was compacted into \`metrics_hourly\`/\`metrics_daily\` | ${n(r.compactedReadingsPerSecond)} readings/s (${r.compactedSeconds} s) | |`,
    `| raw \`psql \\copy\` of the same rows into an identical partitioned table (median of ${COPY_RUNS} runs, each into the emptied table after a checkpoint: ${r.copyRuns} rows/s) | ${n(r.copyRowsPerSecond)} rows/s (${r.copySeconds} s) | |`,
    `| ratio ingest / COPY | ${pct(r.ratioPercent)} | ≥ 50% |`,
    `| ingest, live, with a real-time listener subscribed to the organization's event channel (ingest then builds and publishes the events: ${n(r.listenedEvents)} device events received) | ${n(r.listenedReadingsPerSecond)} readings/s (${pct(r.listenedRatioPercent)} of COPY) | |`,
    `| ingest, backlog: the same volume queued while ingest was stopped, then drained (includes process start) | ${n(r.backlogDrainReadingsPerSecond)} readings/s (${pct(r.backlogRatioPercent)} of COPY) | |`,
    `| ingest peak RSS (VmHWM) | ${r.ingestPeakRssMb} MB | < 300 MB |`,
    `| CPU time during the live phase (2 cores shared by all) | ${r.cpuLive}; with the listener: ${r.cpuListened} | |`,
    `| publish → committed latency at ${n(r.latencyRateReadingsPerSecond)} readings/s (half the live rate; after ${LATENCY_WARMUP_SECONDS} s of warm-up at that rate, not counted), p50 / p99 | ${r.latencyP50Ms} ms / ${r.latencyP99Ms} ms (warm-up of a fresh process: ${r.latencyWarmupP50Ms} ms / ${r.latencyWarmupP99Ms} ms) | |`,
    '',
    "Every reading is written once into `device_metrics` (counter metrics also into `energy_readings`) and, in the same transaction, one partial aggregate per device, metric and hour of the batch is COPYed into the append-only `metrics_rollup_deltas`; ingest's compactor folds the deltas into `metrics_hourly`/`metrics_daily` about once a second, less often while compactions take long (the bench waits for it and checks that the rollups count every reading exactly once). The raw COPY writes only the rows. Ingest builds real-time events only for organizations whose Redis channel has a subscriber (a gateway with live subscriptions); the first live phase has none, the second has one.",
    '<!-- bench:ingest:end -->',
  ].join('\n');
  const text = readFileSync(file, 'utf8');
  const re = /<!-- bench:ingest:start -->[\s\S]*?<!-- bench:ingest:end -->/;
  writeFileSync(file, re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`);
}

function tsv(rows: Row[]): string {
  if (!rows.length) return '';
  // The table's columns: time, org_id, device_id, metric, value, text.
  return copyText(rows)
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [ts, org, dev, metric, value, text] = l.split('\t');
      return `${new Date(Number(ts)).toISOString()}\t${org}\t${dev}\t${metric}\t${value}\t${text}`;
    })
    .join('\n')
    .concat('\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
