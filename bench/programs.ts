// bench:programs — 100,000 lamps on one program at one site, end to end: the time from the sunset
// switch point to every lamp's level recorded (the firing), handed to the desired state (the push:
// `desiredStateSink`, one `setState` command per lamp), every command SENT (the real
// CommandDispatcher publishing at QoS 1 to a Mosquitto of the bench's own) and every command
// SUCCEEDED (simulated lamps answer `received` + `succeeded` at once; the replies go through a real
// ingest process back to the dispatcher's `commands` queue).
//
// Processes: this one is the workers process (ProgramScheduler as shipped with its clock set to just
// after sunset, CommandDispatcher as `rulr start workers` builds it, config defaults); ingest runs
// in a child (ingest/testing/run-ingest.ts), the lamps in another (bench/programs-devices.ts). The
// broker is a Mosquitto started here on a free port with deploy/mosquitto/mosquitto-no-drop.conf
// (max_queued_messages 0, no maximum): the system broker's 1000 would drop QoS 1 messages queued
// for a lagging subscriber (ingest, the lamps) and the run would never finish.
//
// Baseline, same run: the transport alone — this process publishes one command per lamp straight to
// the broker (QoS 1) and waits for every `succeeded` reply, no database, no ingest, no workers.
//
// Full run: `npm run bench:programs`; smoke: `BENCH_PROGRAM_LAMPS=20000 npm run bench:programs`.
// BENCH_PUSH_BATCH, BENCH_PUSH_CONCURRENCY override the scheduler's push defaults. The push alone
// (its SQL, no broker): `npm run bench:programs:push` (bench/programs-push.ts).
// BENCH_WRITE_RESULTS=1 writes the section of bench/RESULTS.md; BENCH_CPU_PROF=1 writes a CPU
// profile of this process's timed phase to bench/out/programs.cpuprofile.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Kysely, PostgresDialect, sql } from 'kysely';
import mqtt from 'mqtt';
import pg from 'pg';
import { startNoDropBroker } from '../ingest/testing/broker.js';
import { ingestEnv } from '../ingest/testing/fixtures.js';
import { loadConfig } from '../lib/config.js';
import { deviceCommandTopic, encodeCommandMessage, parseCommandReply } from '../lib/contracts/commands.js';
import { createDb } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { solarDay } from '../lib/solar.js';
import { migrateToLatest } from '../schema/migrate.js';
import { CommandDispatcher } from '../workers/commands.js';
import {
  type DesiredLevelSink,
  desiredStateSink,
  PUSH_BATCH as PROGRAMS_PUSH_BATCH,
  PUSH_CONCURRENCY as PROGRAMS_PUSH_CONCURRENCY,
  ProgramScheduler,
} from '../workers/programs.js';
import { loadNote } from './load-note.js';
import { assignStreetLighting, BENCH_CITY, BENCH_SITE, benchDeviceId, seedBenchCity } from './programs-ids.js';

const ROOT = new URL('../', import.meta.url).pathname;
const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DB_NAME = 'rulr_bench_programs';
const LAMPS = Number(process.env.BENCH_PROGRAM_LAMPS ?? 100_000);
/** levels per push transaction and push transactions at a time; unset: the scheduler's defaults */
const PUSH_BATCH = Number(process.env.BENCH_PUSH_BATCH ?? PROGRAMS_PUSH_BATCH);
const PUSH_CONCURRENCY = Number(process.env.BENCH_PUSH_CONCURRENCY ?? PROGRAMS_PUSH_CONCURRENCY);
const SIM_CLIENTS = Number(process.env.BENCH_SIM_CLIENTS ?? 4);
const TIMEOUT_S = Number(process.env.BENCH_TIMEOUT_S ?? 600);
/** the commands' timeout; unset: COMMANDS_DEFAULT_TIMEOUT_S as shipped */
const COMMAND_TIMEOUT_S = process.env.BENCH_COMMAND_TIMEOUT_S;
const TARGET_S = 60;
const TZ = BENCH_CITY.timeZone;
const CITY = BENCH_CITY;
const DATE = '2027-01-15';

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

/** CPU seconds (user + system) of a process, from /proc; 0 when it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ
  } catch {
    return 0;
  }
}
/** Busy and total jiffies of the whole machine (/proc/stat). */
function machineJiffies(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total };
}
/**
 * CPU seconds of each PostgreSQL backend connected to the bench database (workers, ingest, this
 * process), by pid: what the platform cost PostgreSQL, whatever else loads the machine.
 */
async function backendCpu(db: import('../lib/db.js').Db): Promise<Map<number, number>> {
  const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = ${DB_NAME}`.execute(db);
  return new Map(rows.map((r) => [r.pid, cpuSeconds(r.pid)]));
}
/** Peak RSS (VmHWM) of a process in MB. */
function peakRssMb(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Math.round(Number(m?.[1] ?? 0) / 1024);
  } catch {
    return 0;
  }
}

/** A child that prints `ready…` when it is; its stdout lines are handed to `onLine`. */
async function startChild(args: string[], env: Record<string, string>, what: string) {
  const proc = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  let buf = '';
  proc.stdout?.on('data', (b: Buffer) => {
    buf += b.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.findIndex((x) => x.re.test(line));
      if (w >= 0) waiters.splice(w, 1)[0]?.resolve(line);
    }
  });
  const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`${what} exited (${code})`))));
  exited.catch(() => undefined);
  const expect = (re: RegExp) => Promise.race([new Promise<string>((resolve) => waiters.push({ re, resolve })), exited]);
  const child = { proc, expect, send: (l: string) => proc.stdin?.write(`${l}\n`) };
  await expect(/^ready/);
  return child;
}
async function stopChild(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

/** The transport alone: one command per lamp published straight to the broker, until every `succeeded` reply is back. */
async function transportBaseline(url: string, tag: string): Promise<{ seconds: number }> {
  const c = await mqtt.connectAsync(url, { clientId: `bench-baseline-${tag}`, protocolVersion: 5, properties: { receiveMaximum: 65535 } });
  let done = 0;
  const finished = new Promise<void>((resolve) => {
    c.on('message', (_t, payload) => {
      if (parseCommandReply(payload).status === 'succeeded' && ++done === LAMPS) resolve();
    });
  });
  await c.subscribeAsync('devices/+/commands/reply', { qos: 1 });
  const expiresAt = new Date(Date.now() + 3600_000).toISOString();
  const t0 = performance.now();
  const inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < LAMPS; i++) {
    const msg = encodeCommandMessage({ id: randomUUID(), name: 'setState', params: { desired: { level: 100 }, version: 2 }, expiresAt });
    inFlight.push(c.publishAsync(deviceCommandTopic(benchDeviceId(tag, i)), msg, { qos: 1 }));
    if (inFlight.length >= 1000) await Promise.all(inFlight.splice(0));
  }
  await Promise.all(inFlight);
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  await c.endAsync();
  return { seconds };
}

async function main() {
  const started = new Date();
  const loadBefore = os.loadavg()[0] ?? 0;
  const tag = randomBytes(4).toString('hex');
  const prefix = `rulr-bench-programs-${tag}:`;
  const url = await recreate();
  const db = createDb({ url, poolSize: 4 });
  // lamps spread over about 5 km, all in one location cell; ids carry the run's tag (bench/programs-ids.ts)
  const orgId = await seedBenchCity(db, tag, LAMPS);
  await sql`analyze devices`.execute(db);
  await assignStreetLighting(db, orgId, BENCH_SITE);

  const broker = await startNoDropBroker();
  const env = { DATABASE_URL: url, MQTT_URL: broker.url, REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'warn' };
  const cfg = loadConfig({ ...process.env, ...env, ...(COMMAND_TIMEOUT_S ? { COMMANDS_DEFAULT_TIMEOUT_S: COMMAND_TIMEOUT_S } : {}) });
  const sim = await startChild(
    ['--import', 'tsx', 'bench/programs-devices.ts'],
    { BENCH_SIM_URL: broker.url, BENCH_SIM_TAG: tag, BENCH_PROGRAM_LAMPS: String(LAMPS), BENCH_SIM_CLIENTS: String(SIM_CLIENTS) },
    'simulated lamps',
  );
  console.log(`baseline: ${fmt(LAMPS)} commands straight through the broker to the lamps and back…`);
  const baseline = await transportBaseline(broker.url, tag);
  console.log(`  ${baseline.seconds.toFixed(1)} s`);

  const ingest = await startChild(
    ['--import', 'tsx', 'ingest/testing/run-ingest.ts'],
    // the batch window as shipped (the test fixture's is shorter)
    ingestEnv({
      dbUrl: url,
      mqttUrl: broker.url,
      prefix,
      extra: { REDIS_URL, LOG_LEVEL: 'warn', INGEST_BATCH_MS: String(cfg.INGEST_BATCH_MS) },
    }),
    'ingest',
  );
  // the workers' connections, as `rulr start workers` opens them (DATABASE_POOL_SIZE, one Redis client)
  const logger = createLogger('warn');
  const ctx = new RoleContext(cfg, logger);
  const redis = ctx.redis;
  const workersMqtt = await mqtt.connectAsync(broker.url, {
    clientId: `rulr-workers-bench-${tag}`,
    protocolVersion: 5,
    reconnectPeriod: 1000,
    keepalive: 30,
  });
  const dispatcher = new CommandDispatcher({
    db: ctx.db,
    redis,
    redisUrl: REDIS_URL,
    prefix,
    mqtt: workersMqtt,
    logger,
    concurrency: cfg.COMMANDS_CONCURRENCY,
    sweepMs: cfg.COMMANDS_SWEEP_MS,
    leaseS: cfg.COMMANDS_LEASE_S,
    timeoutS: cfg.COMMANDS_DEFAULT_TIMEOUT_S,
    expiryS: cfg.COMMANDS_DEFAULT_EXPIRY_S,
  }).start();

  // the lamps come online through ingest with their state (level 0): the workers store it
  console.log(`${fmt(LAMPS)} lamps announce themselves online…`);
  const announceStart = performance.now();
  sim.send('announce');
  await sim.expect(/^announced/);
  for (;;) {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from device_states where reported ? 'level'`.execute(db);
    if ((rows[0]?.n ?? 0) >= LAMPS) break;
    if (performance.now() - announceStart > TIMEOUT_S * 1000) throw new Error(`only ${rows[0]?.n} lamps online`);
    await sleep(500);
  }
  console.log(`  online in ${((performance.now() - announceStart) / 1000).toFixed(1)} s`);

  // the real sink, timed: the first push is when every level of the firing is recorded
  const real = desiredStateSink({ timeoutS: cfg.COMMANDS_DEFAULT_TIMEOUT_S, expiryS: cfg.COMMANDS_DEFAULT_EXPIRY_S });
  let firstPush: number | undefined;
  const sink: DesiredLevelSink = {
    name: real.name,
    push: async (tx, orgId, items, actor) => {
      firstPush ??= performance.now();
      await real.push(tx, orgId, items, actor);
    },
  };
  const sunset = solarDay(CITY.lat, CITY.lng, DATE, TZ).sunset as number;
  // a minute before sunset: within PROGRAMS_REPLAN_S, so the sunset tick fires with the plan made here
  // (as in production, where the replan timer and the switch point rarely coincide)
  let now = sunset - 60_000;
  const scheduler = new ProgramScheduler({
    db: ctx.db,
    redis,
    prefix,
    logger,
    sink,
    clock: () => now,
    pushBatch: PUSH_BATCH,
    pushConcurrency: PUSH_CONCURRENCY,
  });
  // before sunset: plan, the catch-up (all off: what the lamps report, so no command)
  await scheduler.tick();
  firstPush = undefined;
  const before = await sql<{ n: number }>`select count(*)::int as n from commands`.execute(db);
  if (before.rows[0]?.n !== 0) throw new Error(`${before.rows[0]?.n} commands before sunset`);

  // memoryUsage.rss(), not memoryUsage(): that one also gathers heap statistics (2 s of the workers profile at 50 ms)
  let peakRss = process.memoryUsage.rss();
  const rssTimer = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 50);
  const prof = process.env.BENCH_CPU_PROF === '1' ? new Session() : undefined;
  if (prof) {
    prof.connect();
    await prof.post('Profiler.enable');
    await prof.post('Profiler.start');
  }
  const cpu0 = process.cpuUsage();
  const machine0 = machineJiffies();
  const child0 = { ingest: cpuSeconds(ingest.proc.pid as number), sim: cpuSeconds(sim.proc.pid as number) };
  const pg0 = await backendCpu(db);

  now = sunset + 1;
  const start = performance.now();
  const fired = await scheduler.tick();
  const pushedAt = performance.now();
  let sentAt: number | undefined;
  let succeededAt: number | undefined;
  let finalAt: number | undefined;
  const progress: { s: number; sent: number; succeeded: number; ended: number }[] = [];
  for (;;) {
    const { rows } = await sql<{ sent: number; succeeded: number; ended: number }>`
      select count(sent_at)::int as sent, count(*) filter (where status = 'SUCCEEDED')::int as succeeded,
             count(*) filter (where status in ('FAILED', 'EXPIRED', 'CANCELED'))::int as ended from commands`.execute(db);
    const r = rows[0] as { sent: number; succeeded: number; ended: number };
    const t = performance.now();
    progress.push({ s: Math.round((t - start) / 100) / 10, ...r });
    if (sentAt === undefined && r.sent >= LAMPS) sentAt = t;
    if (succeededAt === undefined && r.succeeded >= LAMPS) succeededAt = t;
    // every command final (SUCCEEDED, or FAILED by its timeout when the replies lag), or given up
    if (r.succeeded + r.ended >= LAMPS) {
      finalAt = t;
      break;
    }
    if (t - start > TIMEOUT_S * 1000) break;
    await sleep(500);
  }
  const cpu = process.cpuUsage(cpu0);
  const machine1 = machineJiffies();
  const child1 = { ingest: cpuSeconds(ingest.proc.pid as number), sim: cpuSeconds(sim.proc.pid as number) };
  const pg1 = await backendCpu(db);
  let pushPgS = 0;
  for (const [pid, s] of pg1) pushPgS += s - (pg0.get(pid) ?? 0);
  if (prof) {
    const { profile } = await prof.post('Profiler.stop');
    mkdirSync(`${ROOT}bench/out`, { recursive: true });
    writeFileSync(`${ROOT}bench/out/programs.cpuprofile`, JSON.stringify(profile));
    prof.disconnect();
  }
  clearInterval(rssTimer);

  const check = (
    await sql<{ levels: number; pushed: number; commands: number; succeeded: number; failed: number; attempts: number }>`
    select (select count(*)::int from program_device_levels where level = 100) as levels,
           (select count(pushed_at)::int from program_device_levels where level = 100) as pushed,
           (select count(*)::int from commands) as commands,
           (select count(*)::int from commands where status = 'SUCCEEDED') as succeeded,
           (select count(*)::int from commands where status <> 'SUCCEEDED') as failed,
           (select coalesce(sum(attempts), 0)::int from commands) as attempts`.execute(db)
  ).rows[0] as { levels: number; pushed: number; commands: number; succeeded: number; failed: number; attempts: number };
  const deadRows = (
    await sql<{ reason: string; n: number }>`select reason, count(*)::int as n from dead_letters group by 1 order by 2 desc`.execute(db)
  ).rows;
  const dead = Object.fromEntries(deadRows.map((d) => [d.reason, d.n]));
  const endedWhy = Object.fromEntries(
    (
      await sql<{ why: string; n: number }>`
      select status || ': ' || coalesce(regexp_replace(error, '[0-9]+', 'N'), '') as why, count(*)::int as n
      from commands where status <> 'SUCCEEDED' group by 1 order by 2 desc`.execute(db)
    ).rows.map((r) => [r.why, r.n]),
  );
  sim.send('stats');
  const simStats = JSON.parse((await sim.expect(/^stats /)).slice(6)) as Record<string, number>;

  const ms = (t: number | undefined) => (t === undefined ? null : Math.round(t - start));
  const elapsedS = ((succeededAt ?? finalAt ?? performance.now()) - start) / 1000;
  const result = {
    lamps: LAMPS,
    firings: fired.fired,
    levelsRecordedMs: ms(firstPush),
    levelsPushedMs: ms(pushedAt),
    allSentMs: ms(sentAt),
    allSucceededMs: ms(succeededAt),
    allFinalMs: ms(finalAt),
    commandTimeoutS: cfg.COMMANDS_DEFAULT_TIMEOUT_S,
    endedWhy,
    commandsPerS: Math.round(check.succeeded / elapsedS),
    sentPerS: sentAt === undefined ? null : Math.round(LAMPS / ((sentAt - start) / 1000)),
    baselineS: Math.round(baseline.seconds * 10) / 10,
    workersPeakRssMb: Math.round(Math.max(peakRss, process.resourceUsage().maxRSS * 1024) / 1048576),
    ingestPeakRssMb: peakRssMb(ingest.proc.pid as number),
    simPeakRssMb: simStats.rssMb,
    cpuS: {
      workers: Math.round(((cpu.user + cpu.system) / 1e6) * 10) / 10,
      ingest: Math.round((child1.ingest - child0.ingest) * 10) / 10,
      lamps: Math.round((child1.sim - child0.sim) * 10) / 10,
      postgres: Math.round(pushPgS * 10) / 10,
      machineBusyPct: Math.round(((machine1.busy - machine0.busy) / (machine1.total - machine0.total)) * 100),
    },
    check,
    deadLetters: dead,
    sim: simStats,
    pushBatch: PUSH_BATCH,
    pushConcurrency: PUSH_CONCURRENCY,
    sweepMs: cfg.COMMANDS_SWEEP_MS,
    concurrency: cfg.COMMANDS_CONCURRENCY,
    cpus: os.availableParallelism(),
    progress: progress.filter((_, i) => i % 20 === 0 || i === progress.length - 1),
  };
  console.log(JSON.stringify(result));

  await scheduler.close();
  await dispatcher.close();
  await workersMqtt.endAsync();
  await stopChild(ingest.proc);
  await stopChild(sim.proc);
  await broker.stop();
  // the run's Redis keys (a status hash per lamp, the queue)
  for (let cursor = '0'; ; ) {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 5000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
    if (cursor === '0') break;
  }
  await ctx.close();
  await db.destroy();
  // a lagging machine may fail commands by their timeout (reported); levels and commands must all be there
  if (check.levels !== LAMPS || check.pushed !== LAMPS || check.commands !== LAMPS) {
    throw new Error(`expected ${LAMPS} lamps on, pushed and one command each, got ${JSON.stringify(check)}`);
  }
  if (process.env.BENCH_WRITE_RESULTS === '1') writeResults(result, started, loadBefore);
  else console.log('(bench/RESULTS.md left as it is; BENCH_WRITE_RESULTS=1 writes it)');
}

function writeResults(
  r: Record<string, unknown> & { cpuS: Record<string, number>; check: Record<string, number> },
  started: Date,
  loadBefore: number,
) {
  const file = new URL('./RESULTS.md', import.meta.url);
  const text = readFileSync(file, 'utf8');
  const s = (v: unknown) => (v === null ? 'not reached' : `${(Number(v) / 1000).toFixed(1)} s`);
  const met = r.allSucceededMs !== null && Number(r.allSucceededMs) <= TARGET_S * 1000;
  const ended = Object.entries(r.endedWhy as Record<string, number>).map(([why, n]) => `${fmt(n)} ${why}`);
  const dead = Object.entries(r.deadLetters as Record<string, number>).map(([why, n]) => `${fmt(n)} ${why}`);
  const ratioOf = (v: unknown) => (v === null ? '–' : `${(Number(v) / 1000 / Number(r.baselineS)).toFixed(1)}×`);
  const section = [
    '<!-- bench:programs:start -->',
    '## Lighting programs (`npm run bench:programs`)',
    '',
    `Run ${started.toISOString().slice(0, 16)}Z on ${r.cpus} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${loadNote(loadBefore, os.loadavg()[0] ?? 0)}.`,
    `Command: \`BENCH_WRITE_RESULTS=1 npm run bench:programs\` (env: \`BENCH_PROGRAM_LAMPS=${r.lamps}\`, \`BENCH_PUSH_BATCH=${r.pushBatch}\`, \`BENCH_PUSH_CONCURRENCY=${r.pushConcurrency}\`, \`BENCH_SIM_CLIENTS=${SIM_CLIENTS}\`${COMMAND_TIMEOUT_S ? `, \`BENCH_COMMAND_TIMEOUT_S=${COMMAND_TIMEOUT_S}\`` : ''}; commands time out after ${r.commandTimeoutS} s).`,
    `Setup: own database \`${DB_NAME}\`, ${fmt(Number(r.lamps))} lamps at one site (Europe/Amsterdam) on one program (on at sunset, off at sunrise), online and reporting level 0. One workers process (this one): the ProgramScheduler as shipped with its clock set to sunset + 1 ms, the real \`desiredStateSink\` (setDesiredLevels: one \`setState\` command per lamp), the real CommandDispatcher with the config defaults (sweep ${r.sweepMs} ms, ${r.concurrency} concurrent jobs) publishing QoS 1. Ingest in a child process (the replies path: MQTT → ingest → \`commands\` queue → dispatcher); the lamps in another (${SIM_CLIENTS} mqtt.js clients on a shared subscription of \`devices/+/commands\`, answering \`received\` and \`succeeded\` at once). The broker is a Mosquitto 2.0.11 started by the bench on a free port with \`deploy/mosquitto/mosquitto-no-drop.conf\` (\`max_queued_messages 0\`: the default 1000 drops QoS 1 messages for a lagging subscriber). PostgreSQL and Redis are the machine's.`,
    `Baseline (same run): the transport alone, ${fmt(Number(r.lamps))} commands published straight to the broker and every \`succeeded\` reply back, no database, ingest or workers: ${r.baselineS} s.`,
    '',
    '| lamps | sunset → levels recorded | → handed to desired state | → all SENT | → all SUCCEEDED | → every command final | SUCCEEDED | SUCCEEDED/s | transport baseline | ratio (final / baseline) | workers peak RSS |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${fmt(Number(r.lamps))} | ${s(r.levelsRecordedMs)} | ${s(r.levelsPushedMs)} | ${s(r.allSentMs)} | ${s(r.allSucceededMs)} | ${s(r.allFinalMs)} | ${fmt(r.check.succeeded as number)} | ${fmt(Number(r.commandsPerS))} | ${r.baselineS} s | ${ratioOf(r.allFinalMs)} | ${r.workersPeakRssMb} MB |`,
    '',
    `Target: ${fmt(Number(r.lamps))} lamps switched (SUCCEEDED) within ${TARGET_S} s on one workers process: ${met ? 'met' : 'missed'}. CPU during the timed phase: workers ${r.cpuS.workers} s, ingest ${r.cpuS.ingest} s, lamps ${r.cpuS.lamps} s, PostgreSQL (the bench database's backends) ${r.cpuS.postgres} s; the machine was ${r.cpuS.machineBusyPct} % busy (both cores, PostgreSQL and Mosquitto included). Peak RSS: ingest ${r.ingestPeakRssMb} MB, lamps ${r.simPeakRssMb} MB. ${r.check.attempts === r.check.commands ? 'Each command was sent once' : 'Some commands were sent more than once'} (${fmt(Number(r.check.attempts))} attempts for ${fmt(Number(r.check.commands))} commands), not SUCCEEDED: ${ended.join(', ') || 'none'}; dead letters: ${dead.join(', ') || 'none'}. Progress (s after sunset: sent / succeeded / ended): ${(r.progress as { s: number; sent: number; succeeded: number; ended: number }[]).map((p) => `${p.s}: ${fmt(p.sent)}/${fmt(p.succeeded)}/${fmt(p.ended)}`).join('; ')}.`,
    '<!-- bench:programs:end -->',
  ].join('\n');
  const re = /<!-- bench:programs:start -->[\s\S]*<!-- bench:programs:end -->/;
  writeFileSync(file, re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
