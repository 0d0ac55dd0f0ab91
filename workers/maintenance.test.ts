import { randomBytes } from 'node:crypto';
import { type Job, QueueEvents } from 'bullmq';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../lib/logger.js';
import { registry } from '../lib/metrics.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { insertDevice, insertOrg, insertReadings } from '../test/support/telemetry-fixtures.js';
import {
  applyRetention,
  ensurePartitions,
  listPartitions,
  Maintenance,
  MaintenanceJob,
  readJobRuns,
  recomputeRollups,
  runTimescaleJobs,
} from './maintenance.js';

let tdb: TestDatabase;
let org: string;
let dev: string;
const DAY = 86_400_000;
const ymd = (t: number) => new Date(t).toISOString().slice(0, 10).replaceAll('-', '');

beforeAll(async () => {
  tdb = await createTestDatabase();
  org = await insertOrg(tdb.db, `m-${randomBytes(3).toString('hex')}`);
  dev = await insertDevice(tdb.db, org, 'M-1', null);
});

afterAll(async () => {
  await tdb.drop();
});

const exists = async (name: string) =>
  (await sql<{ r: string | null }>`select to_regclass(${name})::text as r`.execute(tdb.db)).rows[0]?.r !== null;

describe('maintenance: partitions', () => {
  it('creates the coming days of raw partitions and the coming months of energy partitions', async () => {
    const inFiveDays = `device_metrics_${ymd(Date.now() + 5 * DAY)}`;
    await sql`drop table ${sql.table(inFiveDays)}`.execute(tdb.db);
    expect(await exists(inFiveDays)).toBe(false);
    expect(await ensurePartitions(tdb.db)).toBe(1);
    expect(await exists(inFiveDays)).toBe(true);
    expect(await exists(`device_metrics_${ymd(Date.now() + 7 * DAY)}`)).toBe(true);
    const month = new Date();
    month.setUTCMonth(month.getUTCMonth() + 2, 1);
    expect(await exists(`energy_readings_${month.toISOString().slice(0, 7).replace('-', '')}`)).toBe(true);
    expect(await ensurePartitions(tdb.db)).toBe(0);
  });

  it('drops whole partitions past retention, keeps recent ones, and clears expired rollups, dead letters and default rows', async () => {
    const now = Date.now();
    const old = Date.UTC(2020, 0, 1);
    await sql`create table device_metrics_20200101 partition of device_metrics for values from ('2020-01-01') to ('2020-01-02')`.execute(
      tdb.db,
    );
    await sql`create table energy_readings_202001 partition of energy_readings for values from ('2020-01-01') to ('2020-02-01')`.execute(
      tdb.db,
    );
    await insertReadings(tdb.db, org, [
      { time: new Date(old + 3600_000), deviceId: dev, metric: 'power', value: 1 },
      { time: new Date(Date.UTC(2019, 5, 1)), deviceId: dev, metric: 'power', value: 2 }, // lands in the default partition
      { time: new Date(now - 10 * DAY), deviceId: dev, metric: 'power', value: 3 },
      { time: new Date(now), deviceId: dev, metric: 'power', value: 4 },
    ]);
    await recomputeRollups(tdb.db, { from: new Date(Date.UTC(2019, 0, 1)), to: new Date(now + DAY) });
    await sql`insert into metrics_hourly (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
      values ('2015-01-01', ${org}, ${dev}, 'power', 1, 1, 1, 1, 1, '2015-01-01'),
             (${new Date(now - 3 * 365 * DAY)}, ${org}, ${dev}, 'power', 1, 1, 1, 1, 1, ${new Date(now - 3 * 365 * DAY)})`.execute(tdb.db);
    await sql`insert into dead_letters (received_at, org_id, topic, reason) values (now() - interval '40 days', ${org}, 't', 'old'), (now(), ${org}, 't', 'new')`.execute(
      tdb.db,
    );

    const r = await applyRetention(tdb.db, { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 }, now);

    expect(r.droppedPartitions.sort()).toEqual(['device_metrics_20200101', 'energy_readings_202001']);
    expect(await exists('device_metrics_20200101')).toBe(false);
    expect((await listPartitions(tdb.db, 'device_metrics')).some((p) => p.name === `device_metrics_${ymd(now)}`)).toBe(true);
    expect(r.deletedRows.device_metrics_default).toBe(1);
    const raw = await sql<{ value: number }>`select value from device_metrics where device_id = ${dev} order by time`.execute(tdb.db);
    expect(raw.rows.map((x) => x.value)).toEqual([3, 4]);
    const hourly = await sql<{ bucket: Date }>`select bucket from metrics_hourly where device_id = ${dev} order by bucket`.execute(tdb.db);
    // 5-year rollups: the 3-year-old row stays; 2015, 2019 and 2020 go
    expect(hourly.rows[0]?.bucket.getTime()).toBe(new Date(now - 3 * 365 * DAY).getTime());
    expect(hourly.rows).toHaveLength(3);
    const dl = await sql<{ reason: string }>`select reason from dead_letters`.execute(tdb.db);
    expect(dl.rows.map((x) => x.reason)).toEqual(['new']);
  });

  it('deletes cleared alarms with their history and rule executions past the alarm retention, and keeps active alarms of any age', async () => {
    const now = Date.now();
    const old = new Date(now - 400 * DAY);
    const rule = (
      await sql<{ id: string }>`insert into rules (org_id, name, metric, operator, threshold, severity, alarm_type, created_by)
        values (${org}, ${`r-${randomBytes(3).toString('hex')}`}, 'power', 'gt', 1, 'major', 't', 'test') returning id`.execute(tdb.db)
    ).rows[0]?.id as string;
    const alarm = async (type: string, raisedAt: Date, clearedAt: Date | null) =>
      (
        await sql<{ id: string }>`insert into alarms (org_id, device_id, type, severity, raised_by, raised_at, cleared_at)
          values (${org}, ${dev}, ${type}, 'major', 'test', ${raisedAt}, ${clearedAt}) returning id`.execute(tdb.db)
      ).rows[0]?.id as string;
    const oldCleared = await alarm('old-cleared', old, new Date(old.getTime() + DAY));
    const oldActive = await alarm('old-active', old, null);
    const recentCleared = await alarm('recent-cleared', new Date(now - 10 * DAY), new Date(now - 9 * DAY));
    await sql`insert into alarm_events (org_id, alarm_id, kind, actor) values (${org}, ${oldCleared}, 'raised', 'test'), (${org}, ${recentCleared}, 'raised', 'test')`.execute(
      tdb.db,
    );
    await sql`insert into rule_executions (org_id, rule_id, at, readings, matched, raised, cleared)
      values (${org}, ${rule}, ${old}, 1, 1, 1, 0), (${org}, ${rule}, now(), 1, 1, 1, 0)`.execute(tdb.db);

    const r = await applyRetention(tdb.db, { rawDays: 365, rollupDays: 1825, deadLetterDays: 30, alarmDays: 365 }, now);

    expect(r.deletedRows.alarms).toBe(1);
    const left = await sql<{
      id: string;
    }>`select id from alarms where id in (${oldCleared}, ${oldActive}, ${recentCleared}) order by raised_at`.execute(tdb.db);
    expect(left.rows.map((x) => x.id)).toEqual([oldActive, recentCleared]);
    const history = await sql<{
      alarm_id: string;
    }>`select alarm_id from alarm_events where alarm_id in (${oldCleared}, ${recentCleared})`.execute(tdb.db);
    expect(history.rows.map((x) => x.alarm_id)).toEqual([recentCleared]);
    const executions = await sql<{ n: number }>`select count(*)::int as n from rule_executions where rule_id = ${rule}`.execute(tdb.db);
    expect(executions.rows[0]?.n).toBe(1);
  });
});

describe('maintenance: energy rollup retention', () => {
  const HOUR = 3_600_000;
  const energyRow = (device: string, bucket: Date) => sql`(${bucket}, ${org}, ${device}, ${bucket}, 1, ${bucket}, 2, 1, 2)`;
  const energyBuckets = async (table: string, device: string) =>
    (
      await sql<{ bucket: Date }>`select bucket from ${sql.table(table)} where device_id = ${device} order by bucket`.execute(tdb.db)
    ).rows.map((x) => x.bucket.getTime());

  it('deletes energy_hourly rows and pending energy partials older than the rollup retention and keeps the rest', async () => {
    const d = await insertDevice(tdb.db, org, 'M-ER', null);
    const now = Date.UTC(2026, 10, 27, 12);
    const old = new Date(now - 1826 * DAY);
    const kept = new Date(now - 1824 * DAY);
    const recent = new Date(now - 2 * HOUR);
    for (const table of ['energy_hourly', 'energy_hourly_deltas'])
      await sql`insert into ${sql.table(table)} (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
        values ${sql.join([energyRow(d, old), energyRow(d, kept), energyRow(d, recent)])}`.execute(tdb.db);

    const r = await applyRetention(tdb.db, { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 }, now);

    expect(await energyBuckets('energy_hourly', d)).toEqual([kept.getTime(), recent.getTime()]);
    expect(await energyBuckets('energy_hourly_deltas', d)).toEqual([kept.getTime(), recent.getTime()]);
    expect(r.deletedRows).toMatchObject({ energy_hourly: 1, energy_hourly_deltas: 1 });
  });

  it('in TimescaleDB mode with policies leaves raw chunks and aggregates to TimescaleDB but still trims the energy rollup', async () => {
    const d = await insertDevice(tdb.db, org, 'M-ET', null);
    const now = Date.UTC(2026, 10, 27, 12);
    const old = new Date(now - 1826 * DAY);
    await sql`create table energy_readings_201001 partition of energy_readings for values from ('2010-01-01') to ('2010-02-01')`.execute(
      tdb.db,
    );
    await sql`insert into energy_hourly (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
      values ${energyRow(d, old)}`.execute(tdb.db);
    await sql`insert into metrics_hourly (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
      values (${old}, ${org}, ${d}, 'power', 1, 1, 1, 1, 1, ${old})`.execute(tdb.db);
    // simulated: on plain PostgreSQL the tables are still tables, so anything touched would show
    const r = await applyRetention(tdb.db, { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 }, now, {
      mode: 'timescale',
      continuousAggregates: true,
      policies: true,
    });
    expect(r.droppedPartitions).toEqual([]);
    expect(await exists('energy_readings_201001')).toBe(true);
    expect(Object.keys(r.deletedRows).sort()).toEqual([
      'alarms',
      'dead_letters',
      'energy_hourly',
      'energy_hourly_deltas',
      'rule_executions',
    ]);
    expect(await energyBuckets('energy_hourly', d)).toEqual([]);
    expect(await energyBuckets('metrics_hourly', d)).toEqual([old.getTime()]);
    await sql`drop table energy_readings_201001`.execute(tdb.db);
  });
});

describe('maintenance: rollup repair', () => {
  it('recomputes hourly and daily rollups of a range from raw rows, replacing wrong ones', async () => {
    const t0 = Date.UTC(2026, 2, 3);
    await insertReadings(
      tdb.db,
      org,
      Array.from({ length: 180 }, (_, i) => ({ time: new Date(t0 + i * 60_000), deviceId: dev, metric: 'temp', value: i })),
    );
    await sql`insert into metrics_hourly (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
      values (${new Date(t0)}, ${org}, ${dev}, 'temp', -1, -1, -1, 999, -1, ${new Date(t0)})`.execute(tdb.db);
    const r = await recomputeRollups(tdb.db, { from: new Date(t0 + 30 * 60_000), to: new Date(t0 + 60 * 60_000), orgId: org });
    expect(r).toEqual({ hourly: 3, daily: 1, energyHourly: 0 });
    const h = await sql<{ min: number; max: number; sum: number; count: number; last: number }>`
      select min, max, sum, count, last from metrics_hourly where device_id = ${dev} and metric = 'temp' order by bucket`.execute(tdb.db);
    expect(h.rows[0]).toEqual({ min: 0, max: 59, sum: 1770, count: 60, last: 59 });
    expect(h.rows).toHaveLength(3);
    const d = await sql<{ sum: number; count: number; last: number }>`
      select sum, count, last from metrics_daily where device_id = ${dev} and metric = 'temp'`.execute(tdb.db);
    expect(d.rows).toEqual([{ sum: (179 * 180) / 2, count: 180, last: 179 }]);
  });
});

describe('maintenance: BullMQ queue', () => {
  it('registers the repeatable jobs once and runs a rollup repair requested on the queue', async () => {
    const queueName = `maintenance-${randomBytes(4).toString('hex')}`;
    const prefix = `t${randomBytes(4).toString('hex')}:bull`;
    const opts = {
      db: tdb.db,
      redisUrl: REDIS_URL,
      prefix,
      queueName,
      retention: { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 },
      logger: createLogger('silent'),
    };
    const a = new Maintenance(opts);
    const b = new Maintenance(opts);
    const events = new QueueEvents(queueName, { connection: { url: REDIS_URL }, prefix });
    try {
      await Promise.all([a.start(), b.start()]);
      const schedulers = await a.queue.getJobSchedulers();
      expect(schedulers.map((s) => s.key).sort()).toEqual([MaintenanceJob.EnsurePartitions, MaintenanceJob.Retention]);
      await events.waitUntilReady();
      const job = await a.recompute({ from: '2026-03-03T00:00:00Z', to: '2026-03-04T00:00:00Z', orgId: org });
      expect(await job.waitUntilFinished(events, 20_000)).toEqual({ hourly: 3, daily: 1, energyHourly: 0 });
    } finally {
      await a.queue.obliterate({ force: true });
      await events.close();
      await a.close();
      await b.close();
    }
  });

  it("records each periodic job's last success, failure and duration, and exports them as gauges", async () => {
    const base = {
      db: tdb.db,
      redisUrl: REDIS_URL,
      prefix: `t${randomBytes(4).toString('hex')}:bull`,
      queueName: `maintenance-${randomBytes(4).toString('hex')}`,
      logger: createLogger('silent'),
      partitionEveryMs: 3_600_000,
      retentionEveryMs: 6 * 3_600_000,
    };
    const ok = new Maintenance({ ...base, retention: { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 } });
    // a retention that cannot be computed: its runs fail
    const broken = new Maintenance({ ...base, retention: { rawDays: Number.NaN, rollupDays: 1825, deadLetterDays: 30 } });
    // the runs below are the test's own: the scheduled ones stay queued
    await Promise.all([ok.worker.pause(true), broken.worker.pause(true)]);
    try {
      await sql`delete from maintenance_job_runs`.execute(tdb.db); // left by the test above
      await ok.start();
      // known from the start, with their intervals: the staleness alert counts from registration
      expect(await readJobRuns(tdb.db)).toEqual([
        expect.objectContaining({ name: 'ensure-partitions', intervalS: 3600, lastStartedAt: null, lastSucceededAt: null }),
        expect.objectContaining({ name: 'retention', intervalS: 21_600, lastStartedAt: null, lastFailedAt: null }),
      ]);
      const job = (name: string) => ({ name, data: {} }) as Job;
      await ok.process(job(MaintenanceJob.Retention));
      await broken.start();
      await expect(broken.process(job(MaintenanceJob.Retention))).rejects.toThrow();
      await ok.process(job(MaintenanceJob.EnsurePartitions));
      // an on-demand repair is not a periodic job
      await ok.process({
        name: MaintenanceJob.RecomputeRollups,
        data: { from: '2026-03-03T00:00:00Z', to: '2026-03-04T00:00:00Z' },
      } as Job);
      const runs = await readJobRuns(tdb.db);
      expect(runs.map((r) => r.name)).toEqual(['ensure-partitions', 'retention']);
      const [partitions, retention] = runs;
      expect(partitions).toMatchObject({ lastError: null, lastFailedAt: null });
      expect(partitions?.lastSucceededAt).toBeInstanceOf(Date);
      expect(retention?.lastSucceededAt).toBeInstanceOf(Date);
      expect(retention?.lastFailedAt?.getTime()).toBeGreaterThanOrEqual(retention?.lastSucceededAt?.getTime() ?? Number.NaN);
      expect(retention?.lastError).toMatch(/./);
      const text = await registry.metrics();
      const value = (metric: string, job: string) =>
        Number(new RegExp(`^${metric}\\{job_name="${job}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
      expect(value('rulr_maintenance_job_interval_seconds', 'retention')).toBe(21_600);
      expect(value('rulr_maintenance_job_last_success_timestamp_seconds', 'retention')).toBe(
        (retention?.lastSucceededAt?.getTime() ?? 0) / 1000,
      );
      expect(value('rulr_maintenance_job_last_failure_timestamp_seconds', 'retention')).toBe(
        (retention?.lastFailedAt?.getTime() ?? 0) / 1000,
      );
      expect(value('rulr_maintenance_job_last_duration_seconds', 'ensure-partitions')).toBeGreaterThanOrEqual(0);
      expect(value('rulr_maintenance_job_registered_timestamp_seconds', 'ensure-partitions')).toBeGreaterThan(Date.now() / 1000 - 60);
      // never failed: no failure sample at all (not a zero that would read as 1970)
      expect(text).not.toMatch(/rulr_maintenance_job_last_failure_timestamp_seconds\{job_name="ensure-partitions"\}/);
      // plain PostgreSQL: no TimescaleDB jobs to run
      expect(await runTimescaleJobs(tdb.db)).toEqual({ ran: [], failed: [] });
    } finally {
      await ok.queue.obliterate({ force: true });
      await ok.close();
      await broken.close();
    }
  });
});
