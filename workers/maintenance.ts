import { type Job, Queue, Worker } from 'bullmq';
import { sql } from 'kysely';
import type { Config } from '../lib/config.js';
import type { Db } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter, gauge } from '../lib/metrics.js';
import { COMPACTION_LOCK } from '../lib/telemetry/compactor.js';
import { energyPartialsSql } from '../lib/telemetry/energy.js';
import { runTimescaleJob, timescaleJobs, unscheduleTimescaleJobs } from '../lib/telemetry/timescale/jobs.js';
import { metricRollupTables, rawTables, type StorageInfo, storageInfo, TIMESCALE_SCHEMA } from '../lib/telemetry/timescale/mode.js';

/**
 * Storage upkeep on plain PostgreSQL: partitions created ahead, whole partitions dropped past
 * retention, and rollups recomputed from raw rows on demand (repair after a backfill or a bug).
 * Runs as BullMQ jobs on the `maintenance` queue so exactly one worker replica does each run.
 * In TimescaleDB mode (`storageInfo`) it leaves to TimescaleDB what TimescaleDB does (chunks,
 * policies, continuous aggregates) and keeps the hourly energy rollup, a plain table in every mode;
 * it runs TimescaleDB's policy jobs itself (`timescale-jobs`, see {@link runTimescaleJobs}). Each
 * periodic job's last run is kept in `maintenance_job_runs` and exported as gauges.
 */

export const MAINTENANCE_QUEUE = 'maintenance';

/** Job names on the maintenance queue. */
export const MaintenanceJob = {
  EnsurePartitions: 'ensure-partitions',
  Retention: 'retention',
  RecomputeRollups: 'recompute-rollups',
  /** TimescaleDB mode: runs the TimescaleDB jobs that are due (`runTimescaleJobs`) */
  TimescaleJobs: 'timescale-jobs',
} as const;

/**
 * Daily raw partitions kept ready ahead of time.
 * @default 7
 */
export const PARTITION_DAYS_AHEAD = 7;
/**
 * Monthly energy/audit partitions kept ready ahead of time.
 * @default 2
 */
export const PARTITION_MONTHS_AHEAD = 2;

const DAY = 86_400_000;
const jobRuns = counter('rulr_maintenance_runs_total', 'Maintenance job runs by job and outcome', ['job', 'outcome']);

export interface Retention {
  rawDays: number;
  rollupDays: number;
  deadLetterDays: number;
  /** Cleared alarms (with their history) and rule executions older than this go. @default 365 */
  alarmDays?: number;
}

export function retentionFromConfig(cfg: Config): Retention {
  return {
    rawDays: cfg.RETENTION_RAW_DAYS,
    rollupDays: cfg.RETENTION_ROLLUP_DAYS,
    deadLetterDays: cfg.RETENTION_DEAD_LETTER_DAYS,
    alarmDays: cfg.RETENTION_ALARM_DAYS,
  };
}

/** Creates the partitions of the coming days/months that do not exist yet; returns how many were made. */
export async function ensurePartitions(db: Db): Promise<number> {
  const { rows } = await sql<{ made: number }>`
    select rulr_ensure_partitions('device_metrics', 'day', ${PARTITION_DAYS_AHEAD})
         + rulr_ensure_partitions('energy_readings', 'month', ${PARTITION_MONTHS_AHEAD}) as made`.execute(db);
  await sql`select rulr_ensure_monthly_partitions('audit_logs', ${PARTITION_MONTHS_AHEAD})`.execute(db);
  return rows[0]?.made ?? 0;
}

/** Partitions of `parent` with their upper bound (the default partition has none). */
export async function listPartitions(db: Db, parent: string): Promise<{ name: string; to: Date | null }[]> {
  const { rows } = await sql<{ name: string; to: Date | null }>`
    select c.relname as name,
           substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \\(''([^'']+)''\\)')::timestamptz as "to"
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    join pg_class p on p.oid = i.inhparent
    where p.relname = ${parent} and p.relnamespace = 'public'::regnamespace
    order by 2 nulls last`.execute(db);
  return rows;
}

export interface RetentionResult {
  droppedPartitions: string[];
  deletedRows: Record<string, number>;
}

/**
 * Drops every raw partition whose whole range is older than its retention (bounds read from the
 * catalog, so partition names do not matter), clears expired rows that landed in the default
 * partitions, and deletes expired rollup rows (`metrics_hourly`, `metrics_daily`, `energy_hourly`,
 * and their pending deltas, which would only bring expired hours back) and dead letters (those
 * tables are not partitioned). In TimescaleDB mode raw data goes by `drop_chunks`, or is left to the
 * retention policies together with the continuous aggregates when those exist; the energy rollup and
 * dead letters are always deleted here. `info` defaults to the database's `storageInfo`.
 */
export async function applyRetention(db: Db, r: Retention, now = Date.now(), info?: StorageInfo): Promise<RetentionResult> {
  const mode = info ?? (await storageInfo(db));
  const rawCutoff = new Date(now - r.rawDays * DAY);
  const rollupCutoff = new Date(now - r.rollupDays * DAY);
  const dlCutoff = new Date(now - r.deadLetterDays * DAY);
  const droppedPartitions: string[] = [];
  // with retention policies TimescaleDB drops the chunks itself
  const raw = mode.mode === 'timescale' ? await rawTables(db) : undefined;
  for (const parent of mode.policies ? [] : ['device_metrics', 'energy_readings']) {
    if (raw) {
      const hypertable = parent === 'device_metrics' ? raw.deviceMetrics : raw.energyReadings;
      const { rows } = await sql<{ name: string }>`
        select drop_chunks(${hypertable}::regclass, older_than => ${rawCutoff}::timestamptz)::text as name`.execute(db);
      droppedPartitions.push(...rows.map((x) => x.name));
      continue;
    }
    for (const p of await listPartitions(db, parent)) {
      if (p.to && p.to.getTime() <= rawCutoff.getTime()) {
        await sql`drop table if exists ${sql.table(p.name)}`.execute(db);
        droppedPartitions.push(p.name);
      }
    }
  }
  const deletedRows: Record<string, number> = {};
  const del = async (name: string, q: ReturnType<typeof sql>) => {
    const res = await q.execute(db);
    deletedRows[name] = Number(res.numAffectedRows ?? 0);
  };
  if (mode.mode === 'native') {
    await del('device_metrics_default', sql`delete from device_metrics_default where time < ${rawCutoff}`);
    await del('energy_readings_default', sql`delete from energy_readings_default where time < ${rawCutoff}`);
  }
  if (metricRollupTables(mode)) {
    await del('metrics_rollup_deltas', sql`delete from metrics_rollup_deltas where bucket < ${rollupCutoff}`);
    await del('metrics_hourly', sql`delete from metrics_hourly where bucket < ${rollupCutoff}`);
    await del('metrics_daily', sql`delete from metrics_daily where bucket < ${rollupCutoff}`);
  }
  await del('energy_hourly_deltas', sql`delete from energy_hourly_deltas where bucket < ${rollupCutoff}`);
  await del('energy_hourly', sql`delete from energy_hourly where bucket < ${rollupCutoff}`);
  await del('dead_letters', sql`delete from dead_letters where received_at < ${dlCutoff}`);
  // Alarms still active are kept whatever their age; a cleared alarm's history goes with it (cascade).
  const alarmCutoff = new Date(now - (r.alarmDays ?? 365) * DAY);
  await del('alarms', sql`delete from alarms where cleared_at < ${alarmCutoff}`);
  await del('rule_executions', sql`delete from rule_executions where at < ${alarmCutoff}`);
  return { droppedPartitions, deletedRows };
}

export interface RecomputeResult {
  /** `metrics_hourly` / `metrics_daily` rows rebuilt (0 where continuous aggregates were refreshed instead) */
  hourly: number;
  daily: number;
  /** `energy_hourly` rows rebuilt */
  energyHourly: number;
}

/**
 * Rebuilds the rollups of [from, to) (widened to whole UTC days) from raw rows: hourly from
 * `device_metrics` (numeric readings only: booleans, stored with a `text`, are left out as ingest
 * does), daily from those hourly rows, and `energy_hourly` from `energy_readings` (`energyPartialsSql`,
 * the definition ingest and the compactor use), replacing the rollup rows and pending deltas of the
 * range. Optionally limited to one organization.
 *
 * One repeatable-read transaction holding the compaction lock (the compactor skips its turns
 * meanwhile): deltas and raw rows are read from one snapshot, so a batch that ingest commits during
 * the repair is neither lost nor counted twice (its deltas stay pending and are folded afterwards).
 * A serialization failure (a compaction that committed just before the lock was taken) is retried.
 * With TimescaleDB continuous aggregates the metric rollups are refreshed by
 * `refresh_continuous_aggregate` (after the transaction: it refuses to run inside one) instead.
 */
export async function recomputeRollups(
  db: Db,
  o: { from: Date; to: Date; orgId?: string | undefined },
  info?: StorageInfo,
): Promise<RecomputeResult> {
  const metrics = metricRollupTables(info ?? (await storageInfo(db)));
  const from = new Date(Math.floor(o.from.getTime() / DAY) * DAY);
  const to = new Date(Math.ceil(o.to.getTime() / DAY) * DAY);
  const org = o.orgId ? sql`and org_id = ${o.orgId}` : sql``;
  const rebuild = () =>
    db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (tx): Promise<RecomputeResult> => {
        await sql`select pg_advisory_xact_lock(${COMPACTION_LOCK})`.execute(tx);
        let hourly = 0;
        let daily = 0;
        if (metrics) {
          await sql`delete from metrics_rollup_deltas where bucket >= ${from} and bucket < ${to} ${org}`.execute(tx);
          await sql`delete from metrics_hourly where bucket >= ${from} and bucket < ${to} ${org}`.execute(tx);
          await sql`delete from metrics_daily where bucket >= ${from} and bucket < ${to} ${org}`.execute(tx);
          const h = await sql`
            insert into metrics_hourly (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
            select date_bin('1 hour', time, '1970-01-01 00:00:00+00'), org_id, device_id, metric,
                   min(value), max(value), sum(value), count(*), (array_agg(value order by time desc))[1], max(time)
            from device_metrics
            where time >= ${from} and time < ${to} and value is not null and text is null ${org}
            group by 1, 2, 3, 4`.execute(tx);
          const d = await sql`
            insert into metrics_daily (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
            select date_bin('1 day', bucket, '1970-01-01 00:00:00+00'), org_id, device_id, metric,
                   min(min), max(max), sum(sum), sum(count), (array_agg(last order by last_time desc))[1], max(last_time)
            from metrics_hourly
            where bucket >= ${from} and bucket < ${to} ${org}
            group by 1, 2, 3, 4`.execute(tx);
          hourly = Number(h.numAffectedRows ?? 0);
          daily = Number(d.numAffectedRows ?? 0);
        }
        await sql`delete from energy_hourly_deltas where bucket >= ${from} and bucket < ${to} ${org}`.execute(tx);
        await sql`delete from energy_hourly where bucket >= ${from} and bucket < ${to} ${org}`.execute(tx);
        const e = await sql`
          with energy_src as (
            select time, org_id, device_id, counter_kwh from energy_readings where time >= ${from} and time < ${to} ${org}
          )
          insert into energy_hourly (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
          ${sql.raw(energyPartialsSql('energy_src'))}`.execute(tx);
        return { hourly, daily, energyHourly: Number(e.numAffectedRows ?? 0) };
      });
  let result: RecomputeResult;
  for (let attempt = 1; ; attempt++) {
    try {
      result = await rebuild();
      break;
    } catch (e) {
      if ((e as { code?: string }).code !== '40001' || attempt >= 5) throw e;
    }
  }
  if (!metrics) {
    for (const cagg of ['metrics_hourly_cagg', 'metrics_daily_cagg'])
      await sql`call refresh_continuous_aggregate(${sql.lit(`${TIMESCALE_SCHEMA}.${cagg}`)}, ${sql.lit(from.toISOString())}::timestamptz, ${sql.lit(to.toISOString())}::timestamptz)`.execute(
        db,
      );
  }
  return result;
}

/** The last run of one periodic job, as `maintenance_job_runs` keeps it. */
export interface JobRun {
  name: string;
  intervalS: number;
  registeredAt: Date;
  lastStartedAt: Date | null;
  lastSucceededAt: Date | null;
  lastFailedAt: Date | null;
  lastDurationS: number | null;
  lastError: string | null;
}

/** Makes a periodic job known (its interval counts for the staleness alert from now on). */
export async function registerJob(db: Db, name: string, intervalMs: number): Promise<void> {
  await sql`insert into maintenance_job_runs (name, interval_s) values (${name}, ${intervalMs / 1000})
            on conflict (name) do update set interval_s = excluded.interval_s`.execute(db);
}

/** Records one run of a periodic job: its start, duration and error (null: it succeeded). */
export async function recordJobRun(
  db: Db,
  run: { name: string; intervalMs: number; startedAt: Date; durationS: number; error: string | null },
): Promise<void> {
  const ended = new Date(run.startedAt.getTime() + run.durationS * 1000);
  const ok = run.error === null;
  await sql`
    insert into maintenance_job_runs as r (name, interval_s, last_started_at, last_succeeded_at, last_failed_at, last_duration_s, last_error)
    values (${run.name}, ${run.intervalMs / 1000}, ${run.startedAt}, ${ok ? ended : null}, ${ok ? null : ended}, ${run.durationS}, ${run.error})
    on conflict (name) do update set
      interval_s = excluded.interval_s, last_started_at = excluded.last_started_at,
      last_succeeded_at = coalesce(excluded.last_succeeded_at, r.last_succeeded_at),
      last_failed_at = coalesce(excluded.last_failed_at, r.last_failed_at),
      last_duration_s = excluded.last_duration_s, last_error = excluded.last_error`.execute(db);
}

/** Every periodic job's last run. */
export async function readJobRuns(db: Db): Promise<JobRun[]> {
  const { rows } = await sql<JobRun>`
    select name, interval_s as "intervalS", registered_at as "registeredAt", last_started_at as "lastStartedAt",
           last_succeeded_at as "lastSucceededAt", last_failed_at as "lastFailedAt", last_duration_s as "lastDurationS",
           last_error as "lastError"
    from maintenance_job_runs order by name`.execute(db);
  return rows;
}

/** Runs `fn` as one run of the periodic job `name` and records it; rethrows its error. */
async function recorded<T>(db: Db, name: string, intervalMs: number, fn: () => Promise<T>): Promise<T> {
  const startedAt = new Date();
  const t0 = performance.now();
  try {
    const result = await fn();
    await recordJobRun(db, { name, intervalMs, startedAt, durationS: (performance.now() - t0) / 1000, error: null });
    return result;
  } catch (e) {
    const error = (e as Error).message || String(e);
    await recordJobRun(db, { name, intervalMs, startedAt, durationS: (performance.now() - t0) / 1000, error });
    throw e;
  }
}

/**
 * A TimescaleDB job whose last run failed is tried again after this long (or its interval, if shorter).
 * @default 5 minutes
 */
export const TIMESCALE_JOB_RETRY_MS = 300_000;

export interface TimescaleJobsResult {
  ran: string[];
  failed: { name: string; error: string }[];
}

/**
 * TimescaleDB mode: runs each TimescaleDB job (`lib/telemetry/timescale/jobs.ts`) whose interval has passed
 * since its last start (a failed one again after {@link TIMESCALE_JOB_RETRY_MS}) by `CALL run_job`,
 * recording each run like the other periodic jobs, under the job's name. Takes jobs off TimescaleDB's
 * own scheduler first (whose runs fail on PostgreSQL 15.20 although their work is done). One job's
 * failure does not stop the others. Only with TimescaleDB's policies (`StorageInfo.policies`): the
 * Apache-licensed build has none, and refuses `run_job` and `alter_job`.
 */
export async function runTimescaleJobs(db: Db, now = Date.now(), info?: StorageInfo): Promise<TimescaleJobsResult> {
  const result: TimescaleJobsResult = { ran: [], failed: [] };
  if (!(info ?? (await storageInfo(db))).policies) return result;
  await unscheduleTimescaleJobs(db);
  const last = new Map((await readJobRuns(db)).map((r) => [r.name, r]));
  for (const job of await timescaleJobs(db)) {
    const r = last.get(job.name);
    const started = r?.lastStartedAt?.getTime();
    const failedLast = !!r?.lastFailedAt && (!r.lastSucceededAt || r.lastFailedAt > r.lastSucceededAt);
    const wait = failedLast ? Math.min(job.intervalMs, TIMESCALE_JOB_RETRY_MS) : job.intervalMs;
    if (started !== undefined && now - started < wait) {
      if (!r || r.intervalS * 1000 !== job.intervalMs) await registerJob(db, job.name, job.intervalMs);
      continue;
    }
    try {
      await recorded(db, job.name, job.intervalMs, () => runTimescaleJob(db, job.id));
      result.ran.push(job.name);
    } catch (e) {
      result.failed.push({ name: job.name, error: (e as Error).message });
    }
  }
  return result;
}

/** The database the `rulr_maintenance_job_*` gauges read (the running Maintenance's). */
let runsSource: Db | undefined;
let runsSnapshot: { at: number; runs: Promise<JobRun[]> } | undefined;
/** One read of `maintenance_job_runs` per scrape, shared by the gauges. */
function scrapedRuns(): Promise<JobRun[]> {
  const db = runsSource;
  if (!db) return Promise.resolve([]);
  if (!runsSnapshot || Date.now() - runsSnapshot.at > 1000) runsSnapshot = { at: Date.now(), runs: readJobRuns(db).catch(() => []) };
  return runsSnapshot.runs;
}
const seconds = (d: Date | null) => (d ? d.getTime() / 1000 : null);
for (const [name, help, value] of [
  ['rulr_maintenance_job_interval_seconds', 'Interval of a periodic maintenance job', (r: JobRun) => r.intervalS],
  [
    'rulr_maintenance_job_registered_timestamp_seconds',
    'When a periodic maintenance job became known (stands in for its last success until it has one)',
    (r: JobRun) => seconds(r.registeredAt),
  ],
  ['rulr_maintenance_job_last_success_timestamp_seconds', 'End of the last successful run', (r: JobRun) => seconds(r.lastSucceededAt)],
  ['rulr_maintenance_job_last_failure_timestamp_seconds', 'End of the last failed run', (r: JobRun) => seconds(r.lastFailedAt)],
  ['rulr_maintenance_job_last_duration_seconds', 'Duration of the last run, successful or not', (r: JobRun) => r.lastDurationS],
] as const) {
  gauge(name, `${help} (maintenance_job_runs; TimescaleDB jobs by their name)`, ['job_name'], async function () {
    const runs = await scrapedRuns();
    this.reset();
    for (const r of runs) {
      const v = value(r);
      if (v !== null) this.set({ job_name: r.name }, v);
    }
  });
}

export interface MaintenanceOptions {
  db: Db;
  /** BullMQ connection options (ioredis URL); each Queue/Worker opens its own connection. */
  redisUrl: string;
  /** `REDIS_PREFIX + 'bull'` */
  prefix: string;
  retention: Retention;
  logger: Logger;
  /** Queue name override (tests). @default 'maintenance' */
  queueName?: string;
  /** @default 1 hour */
  partitionEveryMs?: number;
  /** @default 6 hours */
  retentionEveryMs?: number;
  /** How often due TimescaleDB jobs are looked for (timescale mode). @default 1 minute */
  timescaleJobsEveryMs?: number;
}

export interface RecomputeRequest {
  from: string;
  to: string;
  orgId?: string;
}

/**
 * The maintenance queue and its worker: repeatable partition and retention jobs (job schedulers,
 * so several replicas starting at once register them once), plus on-demand rollup repair.
 */
export class Maintenance {
  readonly queue: Queue;
  readonly worker: Worker;

  constructor(private readonly o: MaintenanceOptions) {
    const connection = { url: o.redisUrl, maxRetriesPerRequest: null };
    const name = o.queueName ?? MAINTENANCE_QUEUE;
    this.queue = new Queue(name, { connection, prefix: o.prefix });
    this.worker = new Worker(name, (job) => this.process(job), { connection, prefix: o.prefix, concurrency: 1 });
    this.worker.on('failed', (job, err) => o.logger.error({ job: job?.name, err: err.message }, 'maintenance job failed'));
  }

  /** The periodic jobs and their intervals (the TimescaleDB runner only in timescale mode, see `start`). */
  private periodic = new Map<string, number>();

  /**
   * Registers the schedules (and the periodic jobs in `maintenance_job_runs`), runs partition
   * creation once now (a fresh install needs today's) and makes the gauges read this database.
   */
  async start(): Promise<void> {
    await ensurePartitions(this.o.db);
    this.periodic.set(MaintenanceJob.EnsurePartitions, this.o.partitionEveryMs ?? 3_600_000);
    this.periodic.set(MaintenanceJob.Retention, this.o.retentionEveryMs ?? 6 * 3_600_000);
    if ((await storageInfo(this.o.db)).policies) this.periodic.set(MaintenanceJob.TimescaleJobs, this.o.timescaleJobsEveryMs ?? 60_000);
    else await this.queue.removeJobScheduler(MaintenanceJob.TimescaleJobs);
    for (const [name, every] of this.periodic) {
      await registerJob(this.o.db, name, every);
      await this.queue.upsertJobScheduler(name, { every }, { name, opts: { removeOnComplete: 100, removeOnFail: 100 } });
    }
    runsSource = this.o.db;
  }

  /** Queues a rollup repair for [from, to). */
  recompute(req: RecomputeRequest): Promise<Job> {
    return this.queue.add(MaintenanceJob.RecomputeRollups, req, { removeOnComplete: 100, removeOnFail: 100 });
  }

  async process(job: Job): Promise<unknown> {
    try {
      let result: unknown;
      const every = this.periodic.get(job.name);
      const periodic = <T>(fn: () => Promise<T>) => (every ? recorded(this.o.db, job.name, every, fn) : fn());
      switch (job.name) {
        case MaintenanceJob.EnsurePartitions:
          result = { made: await periodic(() => ensurePartitions(this.o.db)) };
          break;
        case MaintenanceJob.Retention:
          result = await periodic(() => applyRetention(this.o.db, this.o.retention));
          break;
        case MaintenanceJob.TimescaleJobs: {
          const r = await periodic(() => runTimescaleJobs(this.o.db));
          for (const f of r.failed) this.o.logger.warn({ job: f.name, err: f.error }, 'TimescaleDB job failed');
          result = r;
          break;
        }
        case MaintenanceJob.RecomputeRollups: {
          const d = job.data as RecomputeRequest;
          result = await recomputeRollups(this.o.db, { from: new Date(d.from), to: new Date(d.to), orgId: d.orgId });
          break;
        }
        default:
          throw new Error(`unknown maintenance job ${job.name}`);
      }
      jobRuns.inc({ job: job.name, outcome: 'ok' });
      // the TimescaleDB runner looks every minute and mostly finds nothing due
      const idle = job.name === MaintenanceJob.TimescaleJobs && !(result as TimescaleJobsResult).ran.length;
      this.o.logger[idle ? 'debug' : 'info']({ job: job.name, result }, 'maintenance job done');
      return result;
    } catch (e) {
      jobRuns.inc({ job: job.name, outcome: 'error' });
      throw e;
    }
  }

  async close(): Promise<void> {
    if (runsSource === this.o.db) runsSource = undefined;
    await this.worker.close();
    await this.queue.close();
  }
}
