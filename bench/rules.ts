// bench:rules — how fast the workers role evaluates rules (`rule-eval` jobs as ingest makes them).
//
// A queue is filled with N jobs of 5,000 readings (1,000 street lights × 5 metrics, ingest's default
// cap per job), then drained by (1) a BullMQ worker that does nothing (the queue's own cost, the
// baseline) and (2) the RuleEvaluator as shipped (`RULE_EVAL_CONCURRENCY` 2), against the demo
// organization with 5 rules. Two loads: steady (1 % of the lights change state per job: a few raises
// and clears, the rest refreshes of the active alarms or nothing) and storm (every light crosses a
// threshold in every job: 1,000 raises, then 1,000 clears). Writes the section of bench/RESULTS.md
// (not with BENCH_WRITE_RESULTS=0).
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { seedDemo } from '../cli/seed.js';
import { loadConfig } from '../lib/config.js';
import { RULE_EVAL_QUEUE, type RuleEvalJob } from '../lib/contracts/rule-eval.js';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import { createDb } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { migrateToLatest } from '../schema/migrate.js';
import { RuleEvaluator } from '../workers/rule-eval.js';

const PG = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DB_NAME = 'rulr_bench_rules';
const STEADY_JOBS = Number(process.env.BENCH_JOBS ?? 300);
const STORM_JOBS = Number(process.env.BENCH_STORM_JOBS ?? 60);
const CONCURRENCY = Number(process.env.RULE_EVAL_CONCURRENCY ?? 2);

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

const fmt = (n: number) => Math.round(n).toLocaleString('en');

async function main(): Promise<void> {
  const started = new Date();
  const loadBefore = os.loadavg()[0] ?? 0;
  const url = await recreate();
  const db = createDb({ url, poolSize: 10 });
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
    `Run ${started.toISOString().slice(0, 16)}Z on ${os.availableParallelism()} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, 1-minute load average ${loadBefore.toFixed(1)} before and ${(os.loadavg()[0] ?? 0).toFixed(1)} after.`,
    'Command: `npm run bench:rules` (env: `BENCH_JOBS`, `BENCH_STORM_JOBS`, `RULE_EVAL_CONCURRENCY`, `BENCH_WRITE_RESULTS=0`).',
    `Setup: own database \`${DB_NAME}\` with the demo organization (1,000 street lights) and ${rules} rules (the demo's lamp failure, over- and undervoltage, plus high power and high current); every job holds 5,000 readings (1,000 lights × voltage, current, power, dim level, fault flag: ingest's cap per job), so a job costs ${rules * 1000} rule × reading comparisons. The queue is filled first, then drained by one process: the baseline is a BullMQ worker that does nothing with each job (the queue's own cost, same concurrency ${CONCURRENCY}); then the RuleEvaluator as shipped (tenant transaction per job, device scope query, newest alarm per device and type, batched inserts/updates, history rows, events and counters in Redis).`,
    '',
    '| load | jobs | readings evaluated/s | no-op worker, readings/s | ratio | alarms raised / cleared | vs ingest live rate |',
    '| --- | ---: | ---: | ---: | ---: | --- | ---: |',
    ...rows,
    '',
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
