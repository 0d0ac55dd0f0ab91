// bench:rules — how fast the workers role evaluates rules (`rule-eval` jobs as ingest makes them).
//
// A queue is filled with N jobs of 5,000 readings (1,000 street lights × 5 metrics, ingest's default
// cap per job), then drained by (1) a BullMQ worker that does nothing (the queue's own cost, the
// baseline) and (2) the RuleEvaluator as shipped (`RULE_EVAL_CONCURRENCY` 2), against the demo
// organization with 5 rules. Two loads: steady (1 % of the lights change state per job: a few raises
// and clears, the rest refreshes of the active alarms or nothing) and storm (every light crosses a
// threshold in every job: 1,000 raises, then 1,000 clears). Then (3) the mixed load: 10,000 enabled
// rules of every kind (thresholds, durations, repeats, no data, compound expressions) over 1,000 lights,
// fed at 10,000 readings/s for BENCH_MIXED_S seconds while one RuleEvaluator and its timer loop run:
// evaluations/s, queue depth over time, reading→alarm latency (from the reading's time to the
// `alarmChanged` event). Writes the section of bench/RESULTS.md (not with BENCH_WRITE_RESULTS=0).

import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { seedDemo } from '../cli/seed.js';
import { loadConfig } from '../lib/config.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { RULE_EVAL_QUEUE, type RuleEvalJob, ruleEvalJob } from '../lib/contracts/rule-eval.js';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import { createDb, createPool, type Db } from '../lib/db.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { registry } from '../lib/metrics.js';
import { siteLabel } from '../lib/sites.js';
import type { DB } from '../schema/db.js';
import { migrateToLatest } from '../schema/migrate.js';
import { RuleEvaluator } from '../workers/rule-eval.js';
import { RuleTimers } from '../workers/rule-wait.js';
import { loadNote } from './load-note.js';

const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DB_NAME = 'rulr_bench_rules';
const STEADY_JOBS = Number(process.env.BENCH_JOBS ?? 300);
const STORM_JOBS = Number(process.env.BENCH_STORM_JOBS ?? 60);
const CONCURRENCY = Number(process.env.RULE_EVAL_CONCURRENCY ?? 2);
const MIXED_S = Number(process.env.BENCH_MIXED_S ?? 60);
const MIXED_RATE = Number(process.env.BENCH_MIXED_RATE ?? 10_000);
/** `BENCH_SQL_PROFILE=1`: print the time spent per SQL statement (Kysely's query log) at the end */
const SQL_PROFILE = process.env.BENCH_SQL_PROFILE === '1';
const sqlTimes = new Map<string, { n: number; ms: number }>();
/** The bench's Db with every query's duration added up by statement (its first 90 characters). */
function profiledDb(url: string): Db {
  return new Kysely<DB>({
    dialect: new PostgresDialect({ pool: createPool(url, 10) }),
    log: (e) => {
      const key = e.query.sql.replace(/\s+/g, ' ').slice(0, 90);
      const t = sqlTimes.get(key) ?? { n: 0, ms: 0 };
      t.n++;
      t.ms += e.queryDurationMillis;
      sqlTimes.set(key, t);
    },
  });
}
/** one job per ingest batch interval */
const MIXED_BATCH_MS = 100;

/** Rules added to the demo's three (lamp failure, over- and undervoltage). */
const EXTRA_RULES = [
  { name: 'High power', metric: 'power', operator: 'gt', threshold: 150, clear: 140, severity: 'minor' },
  { name: 'High current', metric: 'current', operator: 'gt', threshold: 1, clear: 0.9, severity: 'warning' },
];

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

/** One job: every light's voltage, current, power, dim level and fault flag at `ts`; `breach(i)` puts light i past the thresholds. */
function makeJob(orgId: string, devices: string[], ts: number, breach: (i: number) => boolean): RuleEvalJob {
  const readings: RuleEvalJob['readings'] = [];
  devices.forEach((deviceId, i) => {
    const bad = breach(i);
    readings.push(
      { deviceId, metric: 'voltage', ts, value: bad ? 258 : 229 + (i % 5) },
      { deviceId, metric: 'current', ts, value: bad ? 1.2 : 0.4 },
      { deviceId, metric: 'power', ts, value: bad ? 180 : 90 },
      { deviceId, metric: 'dimLevel', ts, value: 100 },
      { deviceId, metric: 'lampFault', ts, value: bad ? 1 : 0 },
    );
  });
  return { orgId, readings };
}

interface Drain {
  seconds: number;
  jobs: number;
  readings: number;
  raised: number;
  cleared: number;
}

/** Fills the queue with `jobs`, then times `start()`'s worker until every job completed. */
async function drain(
  prefix: string,
  jobs: RuleEvalJob[],
  start: () => { close(): Promise<void> },
  counts: () => Promise<{ raised: number; cleared: number }>,
): Promise<Drain> {
  const queue = new Queue(RULE_EVAL_QUEUE, { connection: { url: REDIS_URL }, prefix: `${prefix}bull` });
  await queue.obliterate({ force: true });
  for (let i = 0; i < jobs.length; i += 50) {
    await queue.addBulk(
      jobs.slice(i, i + 50).map((data) => ({ name: 'batch', data, opts: { removeOnComplete: true, removeOnFail: 1000 } })),
    );
  }
  const before = await counts();
  const t0 = performance.now();
  const w = start();
  for (;;) {
    const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed');
    if ((c.failed ?? 0) > 0) throw new Error(`${c.failed} jobs failed`);
    if ((c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) === 0) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const seconds = (performance.now() - t0) / 1000;
  await w.close();
  await queue.obliterate({ force: true });
  await queue.close();
  const after = await counts();
  return {
    seconds,
    jobs: jobs.length,
    readings: jobs.reduce((n, j) => n + j.readings.length, 0),
    raised: after.raised - before.raised,
    cleared: after.cleared - before.cleared,
  };
}

/** The 10 rules of each (street, lamp model): every kind, each with its own alarm type. */
const MIXED_RULES = [
  { kind: 'threshold', type: 'Overvoltage', metric: 'voltage', operator: 'gt', threshold: 253, clear: 250, severity: 'critical' },
  { kind: 'threshold', type: 'High power', metric: 'power', operator: 'gt', threshold: 150, clear: 140, severity: 'minor' },
  { kind: 'threshold', type: 'High current', metric: 'current', operator: 'gt', threshold: 1, clear: 0.9, severity: 'warning' },
  { kind: 'threshold', type: 'Lamp failure', metric: 'lampFault', operator: 'eq', threshold: 1, severity: 'major' },
  { kind: 'threshold', type: 'Dark lamp', metric: 'power', operator: 'lt', threshold: 5, forSeconds: 5, severity: 'major' },
  {
    kind: 'threshold',
    type: 'Sustained overvoltage',
    metric: 'voltage',
    operator: 'gt',
    threshold: 253,
    forSeconds: 5,
    severity: 'critical',
  },
  {
    kind: 'threshold',
    type: 'Repeated overvoltage',
    metric: 'voltage',
    operator: 'gt',
    threshold: 253,
    repeat: 3,
    window: 60,
    severity: 'major',
  },
  { kind: 'no_data', type: 'Silent lamp', metric: 'power', noData: 300, severity: 'major' },
  { kind: 'expression', type: 'Overload', metric: 'voltage', expression: 'voltage > 253 and power > 150', severity: 'major' },
  { kind: 'expression', type: 'Supply fault', metric: 'voltage', expression: 'voltage < 207 or current > 1.1', severity: 'minor' },
] as const;
const MIXED_SITES = 100;
const MIXED_MODELS = 10;

/**
 * The mixed load's organization: 100 streets of 10 lights, one of each of 10 lamp models, and 10 rules
 * per street and model (scope: site + profile), so 10,000 rules and every light in the scope of 10.
 */
async function mixedOrg(db: Db): Promise<{ orgId: string; devices: string[]; rules: number }> {
  const org = await db
    .insertInto('organizations')
    .values({ slug: `mixed-${randomBytes(3).toString('hex')}`, name: 'Mixed rules' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const orgId = org.id;
  const sites = Array.from({ length: MIXED_SITES }, (_, i) => ({ id: randomUUID(), name: `Street ${i}` }));
  await db
    .insertInto('sites')
    .values(sites.map((x) => ({ id: x.id, org_id: orgId, name: x.name, path: siteLabel(x.id) })))
    .execute();
  const models = await db
    .insertInto('device_profiles')
    .values(Array.from({ length: MIXED_MODELS }, (_, i) => ({ org_id: orgId, name: `Lamp model ${i}` })))
    .returning('id')
    .execute();
  const devices = Array.from({ length: MIXED_SITES * MIXED_MODELS }, () => randomUUID());
  await db
    .insertInto('devices')
    .values(
      devices.map((id, i) => ({
        id,
        org_id: orgId,
        serial: `MX-${i}`,
        name: `Light ${i}`,
        site_id: sites[Math.floor(i / MIXED_MODELS)]?.id as string,
        profile_id: models[i % MIXED_MODELS]?.id as string,
      })),
    )
    .execute();
  const rows = sites.flatMap((site, si) =>
    models.flatMap((model, mi) =>
      MIXED_RULES.map((r) => ({
        org_id: orgId,
        name: `${r.type} ${si}-${mi}`,
        kind: r.kind,
        metric: r.metric,
        operator: 'operator' in r ? r.operator : null,
        threshold: 'threshold' in r ? r.threshold : null,
        clear_threshold: 'clear' in r ? r.clear : null,
        expression: 'expression' in r ? r.expression : null,
        for_seconds: 'forSeconds' in r ? r.forSeconds : null,
        repeat_count: 'repeat' in r ? r.repeat : null,
        window_seconds: 'window' in r ? r.window : null,
        no_data_seconds: 'noData' in r ? r.noData : null,
        severity: r.severity,
        alarm_type: r.type,
        site_id: site.id,
        profile_id: model.id,
        created_by: 'bench',
      })),
    ),
  );
  for (let i = 0; i < rows.length; i += 1000)
    await db
      .insertInto('rules')
      .values(rows.slice(i, i + 1000))
      .execute();
  return { orgId, devices, rules: rows.length };
}

interface Mixed {
  seconds: number;
  rules: number;
  jobs: number;
  readings: number;
  /** rule × reading comparisons of threshold rules + waiting rules stepped per device */
  evaluations: number;
  raised: number;
  cleared: number;
  timerRaises: number;
  /** waiting-rule states found in the evaluator's memory, read from PostgreSQL, or found stale */
  states: { hit: number; miss: number; stale: number };
  depth: { t: number; depth: number }[];
  latency: { p50: number; p99: number; max: number; n: number };
  drainS: number;
}

const counterValue = async (name: string) => ((await registry.getSingleMetric(name)?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
const stateCounts = async () => {
  const values = (await registry.getSingleMetric('rulr_rule_wait_state_cache_total')?.get())?.values ?? [];
  const of = (outcome: string) => values.filter((v) => v.labels.outcome === outcome).reduce((n, v) => n + v.value, 0);
  return { hit: of('hit'), miss: of('miss'), stale: of('stale') };
};

/**
 * Feeds the mixed organization at `MIXED_RATE` readings/s (one job per 100 ms, newest reading per
 * light and metric as ingest makes them, 5 metrics per light, the lights in turn) while one
 * RuleEvaluator (concurrency `RULE_EVAL_CONCURRENCY`) and the timer loop run in this process. 1 % of
 * the lights are overloaded and 1 % dark at any time, each for 10 s in turn.
 */
async function mixedRun(db: Db, redis: Redis, logger: Logger): Promise<Mixed> {
  const { orgId, devices, rules } = await mixedOrg(db);
  const prefix = `rulr-bench-mixed-${randomBytes(4).toString('hex')}:`;
  await redis.incr(rulesVersionKey(prefix, orgId));
  const queue = new Queue(RULE_EVAL_QUEUE, { connection: { url: REDIS_URL }, prefix: `${prefix}bull` });
  const evaluator = new RuleEvaluator({ db, redis, redisUrl: REDIS_URL, prefix, concurrency: CONCURRENCY, logger });
  const timers = new RuleTimers({ wait: evaluator.wait, logger, tickMs: 1000 });
  const raisedAt = new Map<string, number>();
  const sub = new Redis(REDIS_URL);
  sub.on('message', (_c, msg) => {
    const now = Date.now();
    for (const e of [JSON.parse(msg)].flat() as { field: string; data: { kind: string; alarm: { id: string } } }[])
      if (e.field === 'alarmChanged' && e.data.kind === 'RAISED') raisedAt.set(e.data.alarm.id, now);
  });
  await sub.subscribe(eventsChannel(prefix, orgId));
  // warm the rule caches and seed the NO_DATA timers before the clock starts
  await evaluator.evaluate({ orgId, readings: [] });
  await evaluator.wait.rulesFor(orgId);
  await timers.tick();
  const evalBefore = (await counterValue('rulr_rule_eval_readings_total')) + (await counterValue('rulr_rule_wait_evaluations_total'));
  const statesBefore = await stateCounts();
  evaluator.start();
  timers.start();
  const perJob = Math.max(1, Math.round((MIXED_RATE * MIXED_BATCH_MS) / 1000 / 5));
  const t0 = Date.now();
  const depth: { t: number; depth: number }[] = [];
  let cursor = 0;
  let jobs = 0;
  let readings = 0;
  const sampler = setInterval(() => {
    void queue
      .getJobCounts('waiting', 'active')
      .then((c) => depth.push({ t: (Date.now() - t0) / 1000, depth: (c.waiting ?? 0) + (c.active ?? 0) }));
  }, 1000);
  while (Date.now() - t0 < MIXED_S * 1000) {
    const tick = t0 + jobs * MIXED_BATCH_MS;
    const wait = tick - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const ts = Date.now();
    const phase = Math.floor((ts - t0) / 10_000);
    const job: RuleEvalJob = { orgId, readings: [] };
    for (let k = 0; k < perJob; k++) {
      const i = cursor++ % devices.length;
      const deviceId = devices[i] as string;
      const bad = (i + phase) % 100 === 0;
      const dark = (i + phase) % 100 === 50;
      job.readings.push(
        { deviceId, metric: 'voltage', ts, value: bad ? 258 : 229 + (i % 5) },
        { deviceId, metric: 'current', ts, value: bad ? 1.2 : 0.4 },
        { deviceId, metric: 'power', ts, value: bad ? 180 : dark ? 2 : 90 },
        { deviceId, metric: 'dimLevel', ts, value: 100 },
        { deviceId, metric: 'lampFault', ts, value: bad ? 1 : 0 },
      );
    }
    const { name, data, opts } = ruleEvalJob(job);
    await queue.add(name, data, { ...opts, removeOnComplete: true });
    jobs++;
    readings += job.readings.length;
  }
  const fed = (Date.now() - t0) / 1000;
  for (;;) {
    const c = await queue.getJobCounts('waiting', 'active', 'delayed');
    if ((c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const seconds = (Date.now() - t0) / 1000;
  clearInterval(sampler);
  await new Promise((r) => setTimeout(r, 300)); // the last events
  await timers.close();
  await evaluator.close();
  await sub.quit();
  await queue.obliterate({ force: true });
  await queue.close();
  const evaluations =
    (await counterValue('rulr_rule_eval_readings_total')) + (await counterValue('rulr_rule_wait_evaluations_total')) - evalBefore;
  const statesAfter = await stateCounts();
  const states = {
    hit: statesAfter.hit - statesBefore.hit,
    miss: statesAfter.miss - statesBefore.miss,
    stale: statesAfter.stale - statesBefore.stale,
  };
  // an alarm is raised at the time of the reading that decided (a timer's: its due time), so the
  // latency is the event's arrival minus `raised_at`
  const { rows } = await sql<{ id: string; raised_at: Date; by_timer: boolean; cleared: boolean }>`
    select a.id, a.raised_at, a.cleared_at is not null as cleared,
           exists (select 1 from rule_timer_firings f where f.rule_id = a.rule_id and f.device_id = a.device_id and f.outcome = 'raised') as by_timer
    from alarms a where a.org_id = ${orgId}`.execute(db);
  const lat: number[] = [];
  let timerRaises = 0;
  for (const r of rows) {
    const at = raisedAt.get(r.id);
    if (at === undefined) continue;
    if (r.by_timer) timerRaises++;
    lat.push(at - r.raised_at.getTime());
  }
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0;
  return {
    seconds: fed,
    rules,
    jobs,
    readings,
    evaluations,
    raised: rows.length,
    cleared: rows.filter((r) => r.cleared).length,
    timerRaises,
    states,
    depth,
    latency: { p50: q(0.5), p99: q(0.99), max: lat.at(-1) ?? 0, n: lat.length },
    drainS: seconds - fed,
  };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en');

async function main(): Promise<void> {
  const started = new Date();
  const loadBefore = os.loadavg()[0] ?? 0;
  const url = await recreate();
  const db = SQL_PROFILE ? profiledDb(url) : createDb({ url, poolSize: 10 });
  const cfg = { ...loadConfig({ LOG_LEVEL: 'silent' }), DATABASE_URL: url };
  const demo = await seedDemo(cfg, { devices: 1000, db, password: 'bench-rules', quiet: true });
  for (const r of EXTRA_RULES) {
    await sql`insert into rules (org_id, name, metric, operator, threshold, clear_threshold, severity, alarm_type, created_by)
              values (${demo.orgId}, ${r.name}, ${r.metric}, ${r.operator}, ${r.threshold}, ${r.clear}, ${r.severity}, ${r.name}, 'bench')`.execute(
      db,
    );
  }
  const rules = Number(
    (await sql<{ n: number }>`select count(*)::int as n from rules where org_id = ${demo.orgId}`.execute(db)).rows[0]?.n,
  );
  const devices = (
    await sql<{
      id: string;
    }>`select id from devices where org_id = ${demo.orgId} and serial like 'SL-%' order by serial limit 1000`.execute(db)
  ).rows.map((r) => r.id);
  const prefix = `rulr-bench-${randomBytes(4).toString('hex')}:`;
  const redis = new Redis(REDIS_URL);
  await redis.incr(rulesVersionKey(prefix, demo.orgId));
  const logger = createLogger('warn');
  const counts = async () => {
    const r = (
      await sql<{ raised: number; cleared: number }>`
        select count(*)::int as raised, count(cleared_at)::int as cleared from alarms where org_id = ${demo.orgId}`.execute(db)
    ).rows[0];
    return { raised: r?.raised ?? 0, cleared: r?.cleared ?? 0 };
  };

  let ts = Date.now() - 3_600_000;
  // steady: light i breaches while (i + job/10) falls in a window covering 1 % of the fleet, so each job
  // a few lights start and a few stop breaching
  const steady = Array.from({ length: STEADY_JOBS }, (_, j) =>
    makeJob(demo.orgId, devices, ++ts, (i) => (i + Math.floor(j / 2)) % 100 === 0),
  );
  const storm = Array.from({ length: STORM_JOBS }, (_, j) => makeJob(demo.orgId, devices, ++ts, () => j % 2 === 0));

  const noop = () =>
    new Worker(RULE_EVAL_QUEUE, async () => undefined, {
      connection: { url: REDIS_URL, maxRetriesPerRequest: null },
      prefix: `${prefix}bull`,
      concurrency: CONCURRENCY,
    });
  const evaluator = () => new RuleEvaluator({ db, redis, redisUrl: REDIS_URL, prefix, concurrency: CONCURRENCY, logger }).start();

  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const results: { name: string; base: Drain; run: Drain }[] = [];
  for (const [name, jobs] of [
    ['steady', steady],
    ['storm', storm],
  ] as const) {
    const base = await drain(prefix, jobs, noop, counts);
    const run = await drain(prefix, jobs, evaluator, counts);
    results.push({ name, base, run });
    console.log(name, {
      base: `${fmt(base.readings / base.seconds)} readings/s`,
      run: `${fmt(run.readings / run.seconds)} readings/s`,
      raised: run.raised,
      cleared: run.cleared,
    });
  }
  const mixed = MIXED_S > 0 ? await mixedRun(db, redis, logger) : null;
  if (mixed) console.log('mixed', { ...mixed, depth: mixed.depth.map((d) => d.depth).join(' ') });
  if (SQL_PROFILE)
    for (const [q, t] of [...sqlTimes].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25))
      console.log(`${t.ms.toFixed(0).padStart(8)} ms ${String(t.n).padStart(6)} × ${(t.ms / t.n).toFixed(2).padStart(7)} ms  ${q}`);
  gc?.();
  const heapAfter = process.memoryUsage().heapUsed;
  const peakRss = process.resourceUsage().maxRSS * 1024;
  const alarmRows = await counts();
  await redis.quit();
  await db.destroy();

  const ingest = ingestRate();
  const rows = results.map(({ name, base, run }) => {
    const rate = run.readings / run.seconds;
    return `| ${name === 'steady' ? 'steady: 1 % of the lights change state per job' : 'storm: every light crosses a threshold in every job'} | ${fmt(run.jobs)} × 5,000 | ${fmt(rate)} (${fmt(run.jobs / run.seconds)} jobs/s) | ${fmt(base.readings / base.seconds)} | ${(rate / (base.readings / base.seconds)).toFixed(2)}× | ${fmt(run.raised)} / ${fmt(run.cleared)} (${fmt((run.raised + run.cleared) / run.seconds)} alarm changes/s) | ${ingest ? `${(rate / ingest).toFixed(2)}×` : '–'} |`;
  });
  const section = [
    '<!-- bench:rules:start -->',
    '## Rule evaluation (`npm run bench:rules`)',
    '',
    `Run ${started.toISOString().slice(0, 16)}Z on ${os.availableParallelism()} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ${loadNote(loadBefore, os.loadavg()[0] ?? 0)}.`,
    'Command: `npm run bench:rules` (env: `BENCH_JOBS`, `BENCH_STORM_JOBS`, `BENCH_MIXED_S`, `BENCH_MIXED_RATE`, `RULE_EVAL_CONCURRENCY`, `BENCH_WRITE_RESULTS=0`, `BENCH_SQL_PROFILE=1` prints the time per SQL statement).',
    `Setup: own database \`${DB_NAME}\` with the demo organization (1,000 street lights) and ${rules} rules (the demo's lamp failure, over- and undervoltage, plus high power and high current); every job holds 5,000 readings (1,000 lights × voltage, current, power, dim level, fault flag: ingest's cap per job), so a job costs ${rules * 1000} rule × reading comparisons. The queue is filled first, then drained by one process: the baseline is a BullMQ worker that does nothing with each job (the queue's own cost, same concurrency ${CONCURRENCY}); then the RuleEvaluator as shipped (tenant transaction per job, device scope query, newest alarm per device and type, batched inserts/updates, history rows, events and counters in Redis).`,
    '',
    '| load | jobs | readings evaluated/s | no-op worker, readings/s | ratio | alarms raised / cleared | vs ingest live rate |',
    '| --- | ---: | ---: | ---: | ---: | --- | ---: |',
    ...rows,
    '',
    ...mixedSection(mixed),
    `JS heap after a full GC: ${Math.round(heapBefore / 2 ** 20)} MB before the runs (the ${fmt(STEADY_JOBS + STORM_JOBS)} prepared jobs included), ${Math.round(heapAfter / 2 ** 20)} MB after (nothing retained by the evaluator); peak RSS of the one process holding generator, queue client and evaluator ${Math.round(peakRss / 2 ** 20)} MB. ${fmt(alarmRows.raised)} alarm rows written in all. "vs ingest live rate" divides by ingest's live rate in the Ingest section (${ingest ? `${fmt(ingest)} readings/s` : 'not found'}): ingest puts only the newest reading per device and metric of a batch into a job, so a job never holds more readings than the batch committed, and a ratio above 1 means one worker process keeps up with one ingest process even when every committed reading reaches a job.`,
    '<!-- bench:rules:end -->',
  ].join('\n');
  console.log(section);
  if (process.env.BENCH_WRITE_RESULTS === '0') return;
  const path = new URL('./RESULTS.md', import.meta.url);
  const md = readFileSync(path, 'utf8');
  const re = /<!-- bench:rules:start -->[\s\S]*<!-- bench:rules:end -->/;
  writeFileSync(path, re.test(md) ? md.replace(re, section) : `${md.trimEnd()}\n\n${section}\n`);
}

/** The mixed load's part of the section. */
function mixedSection(m: Mixed | null): string[] {
  if (!m) return ['Mixed load: not run (`BENCH_MIXED_S=0`).', ''];
  const depths = m.depth.map((d) => d.depth);
  const every = Math.max(1, Math.ceil(depths.length / 30));
  const series = depths.filter((_, i) => i % every === 0).join(' ');
  const perDevice = MIXED_RULES.length;
  return [
    `**Mixed rules** (\`BENCH_MIXED_S\`=${MIXED_S}, \`BENCH_MIXED_RATE\`=${fmt(MIXED_RATE)}): a second organization with ${fmt(m.rules)} enabled rules, 100 streets × 10 lamp models (1,000 lights), ${perDevice} rules per street and model, so every light is in the scope of ${perDevice}: 4 thresholds, 2 durations (\`power LT 5\` and \`voltage GT 253\` for 5 s), 1 repeating (3 times in 60 s), 1 no-data (300 s), 2 compound expressions. A job every ${MIXED_BATCH_MS} ms (as ingest's batches) holds the newest of 5 metrics of ${fmt(MIXED_RATE / 50)} lights in turn; 1 % of the lights are overloaded and 1 % dark at any time, each for 10 s. One RuleEvaluator (concurrency ${CONCURRENCY}) and the timer loop run in the bench process, which also generates the load and listens to \`alarmChanged\`.`,
    '',
    '| fed | readings | readings/s | evaluations/s (rule × reading, waiting rules per device) | alarms raised / cleared | reading→alarm (`alarmChanged` received) p50 / p99 / max | drain after the feed stopped |',
    '| ---: | ---: | ---: | ---: | --- | --- | ---: |',
    `| ${m.seconds.toFixed(0)} s, ${fmt(m.jobs)} jobs | ${fmt(m.readings)} | ${fmt(m.readings / m.seconds)} | ${fmt(m.evaluations / (m.seconds + m.drainS))} | ${fmt(m.raised)} / ${fmt(m.cleared)} | ${fmt(m.latency.p50)} / ${fmt(m.latency.p99)} / ${fmt(m.latency.max)} ms (${fmt(m.latency.n)} raises, ${fmt(m.timerRaises)} of them by timers) | ${m.drainS.toFixed(1)} s |`,
    '',
    `Queue depth (waiting + active jobs), sampled each ${every} s: ${series || '–'} (max ${Math.max(0, ...depths)}).`,
    '',
    `Waiting-rule states (rule × device) per job step: ${fmt(m.states.hit)} from the evaluator's memory, ${fmt(m.states.miss)} read from PostgreSQL (first sight), ${fmt(m.states.stale)} found changed by another writer (the timer sweep) and read again.`,
    '',
  ];
}

/** Ingest's live rate from the Ingest section of RESULTS.md, for the comparison column. */
function ingestRate(): number | null {
  const md = readFileSync(new URL('./RESULTS.md', import.meta.url), 'utf8');
  const m = /ingest, live: readings committed end to end[^|]*\| ([\d,]+) readings\/s/.exec(md);
  return m?.[1] ? Number(m[1].replaceAll(',', '')) : null;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
