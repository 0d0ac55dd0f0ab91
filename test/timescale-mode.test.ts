import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type Db } from '../lib/db.js';
import { ConflictError } from '../lib/errors.js';
import type { Redis } from '../lib/redis.js';
import { RollupCompactor } from '../lib/telemetry/compactor.js';
import { applyTimescale, migrateTimescale, timescaleAvailability } from '../lib/telemetry/timescale/apply.js';
import { storageInfo, storageMode } from '../lib/telemetry/timescale/mode.js';
import { BatchWriter, type Row } from '../lib/telemetry/writer.js';
import { migrateToLatest } from '../schema/migrate.js';
import { DAYS, DEVICES, FROM, loadSample, ORG } from '../scripts/timescale/sample.js';
import { MetricsRepository } from '../subgraphs/metrics/repository.js';
import { AGGREGATES, planSeries } from '../subgraphs/metrics/series.js';
import { applyRetention, recomputeRollups } from '../workers/maintenance.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

describe('storage mode on plain PostgreSQL', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('reports native storage', async () => {
    expect(await storageMode(t.db)).toBe('native');
    expect(await storageInfo(t.db)).toEqual({ mode: 'native', continuousAggregates: false, policies: false });
  });

  it('says the timescaledb extension is not available and why', async () => {
    // a machine that built TimescaleDB for the hand check has it installed but not preloaded
    const a = await timescaleAvailability(t.db);
    expect(a.available).toBe(false);
    expect(a.reason).toMatch(
      /^(the timescaledb extension is not installed on this server|timescaledb is installed but not in shared_preload_libraries)$/,
    );
  });

  it('refuses to apply the timescale path with a clear error and leaves the tables partitioned', async () => {
    const err = await applyTimescale(t.db).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as Error).message).toBe(`TimescaleDB storage is not possible here: ${(await timescaleAvailability(t.db)).reason}`);
    const { rows } = await sql<{ n: number }>`
      select count(*)::int as n from pg_partitioned_table
      where partrelid in ('device_metrics'::regclass, 'energy_readings'::regclass)`.execute(t.db);
    expect(rows[0]?.n).toBe(2);
    expect(await storageMode(t.db)).toBe('native');
  });

  it('makes `rulr migrate` skip the timescale path silently but `--timescale` fail', async () => {
    expect(await migrateTimescale(t.url)).toEqual([]);
    await expect(migrateTimescale(t.url, { explicit: true })).rejects.toThrow(/^TimescaleDB storage is not possible here: /);
  });
});

const TIMESCALE_URL = process.env.TEST_TIMESCALE_URL;
if (!TIMESCALE_URL) console.info('timescale-mode: TEST_TIMESCALE_URL is not set, skipping the TimescaleDB checks');

describe.skipIf(!TIMESCALE_URL)('storage mode on TimescaleDB (TEST_TIMESCALE_URL)', () => {
  const name = `rulr_tstest_${randomBytes(4).toString('hex')}`;
  let db: Db;
  let dbUrl: string;
  let applied: string[];
  const admin = async (q: string) => {
    const c = new pg.Client({ connectionString: TIMESCALE_URL });
    await c.connect();
    try {
      await c.query(q);
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    await admin(`create database ${name}`);
    const url = new URL(TIMESCALE_URL as string);
    url.pathname = `/${name}`;
    dbUrl = url.toString();
    db = createDb({ url: dbUrl, poolSize: 3 });
    await migrateToLatest(db as unknown as Kysely<unknown>);
    applied = await applyTimescale(db);
  }, 120_000);
  afterAll(async () => {
    await db?.destroy();
    await admin(`drop database if exists ${name} with (force)`);
  });

  it('converts the telemetry tables to hypertables with the documented chunk intervals', async () => {
    const { rows } = await sql<{ table: string; interval: string }>`
      select hypertable_name as table, time_interval::text as interval from timescaledb_information.dimensions
      where hypertable_schema = 'public' order by 1`.execute(db);
    expect(rows).toEqual([
      { table: 'audit_logs', interval: '30 days' },
      { table: 'device_metrics', interval: '1 day' },
      { table: 'energy_readings', interval: '30 days' },
    ]);
    expect(await storageMode(db)).toBe('timescale');
    expect(await sql`select rulr_ensure_partitions('device_metrics', 'day', 7) as n`.execute(db)).toMatchObject({ rows: [{ n: 0 }] });
  });

  it('is idempotent', async () => {
    expect(applied.length).toBeGreaterThan(1);
    expect(await applyTimescale(db)).toEqual(['timescale: already applied']);
  });

  it('schedules compression, retention and aggregate refresh jobs when the build has them', async () => {
    const info = await storageInfo(db);
    const { rows } = await sql<{ proc: string; table: string }>`
      select proc_name as proc, coalesce(hypertable_name, '') as table from timescaledb_information.jobs
      where hypertable_name is not null order by 1, 2`.execute(db);
    if (!info.policies) {
      console.info('timescale-mode: Apache-only TimescaleDB build, no policies to check');
      expect(rows).toEqual([]);
      return;
    }
    const procs = rows.map((r) => r.proc);
    expect(procs.filter((p) => p === 'policy_compression')).toHaveLength(2);
    expect(procs.filter((p) => p === 'policy_retention')).toHaveLength(4);
    expect(procs.filter((p) => p === 'policy_refresh_continuous_aggregate')).toHaveLength(2);
  });

  it('answers series from rollups exactly as from raw rows, and energy per day as the sum of its hours', async () => {
    await loadSample(db);
    const repo = new MetricsRepository(db, undefined as unknown as Redis, 'rulr:');
    const to = new Date(FROM.getTime() + DAYS * 86_400_000);
    for (const iv of ['1h', '1d']) {
      const plan = planSeries(FROM, to, iv);
      for (const agg of AGGREGATES) {
        const fromRollups = await repo.series(ORG, DEVICES[0] as string, 'power', plan, agg);
        const fromRaw = await repo.seriesFromRaw(ORG, DEVICES[0] as string, 'power', plan, agg);
        expect(fromRollups.map((p) => p.ts)).toEqual(fromRaw.map((p) => p.ts));
        for (const [i, p] of fromRollups.entries()) expect(Number(p.value)).toBeCloseTo(Number(fromRaw[i]?.value), 9);
      }
    }
    const hours = await repo.energy(ORG, DEVICES[0] as string, FROM.getTime(), to.getTime(), 3_600_000);
    const days = await repo.energy(ORG, DEVICES[0] as string, FROM.getTime(), to.getTime(), 86_400_000);
    const total = (rows: { kwh: number }[]) => rows.reduce((s, r) => s + Number(r.kwh), 0);
    expect(days).toHaveLength(DAYS);
    expect(total(days)).toBeCloseTo(total(hours), 9);
  });

  it('keeps ingest, the compactor and maintenance working: energy rollup folded and repaired, metric rollups left to TimescaleDB', async () => {
    const info = await storageInfo(db);
    const dev = '00000000-0000-4000-8000-0000000000e1';
    const h = Date.UTC(2026, 9, 20, 10);
    const MIN = 60_000;
    const rows = (from: number, n: number): Row[] =>
      Array.from({ length: n }, (_, i) => [
        { ts: from + i * MIN, orgId: ORG, deviceId: dev, metric: 'power', value: i, text: null, counter: false },
        { ts: from + i * MIN, orgId: ORG, deviceId: dev, metric: 'energy', value: 5 + i * 0.25, text: null, counter: true },
      ]).flat();
    const count = async (table: string) =>
      (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} where device_id = ${dev}`.execute(db)).rows[0]?.n;
    const w = new BatchWriter(dbUrl);
    try {
      expect(await w.write(rows(h, 90), [])).toMatchObject({ path: 'fast', inserted: 180 });
      // minutes 80–109: the first ten again (redelivered), so the duplicate-skipping path
      expect(await w.write(rows(h, 110).slice(160), [])).toMatchObject({ path: 'staged', inserted: 40 });
    } finally {
      await w.close();
    }
    // with continuous aggregates no metric deltas (nothing would fold them); energy partials always
    expect(await count('metrics_rollup_deltas')).toBe(info.continuousAggregates ? 0 : 6);
    expect(await count('energy_hourly_deltas')).toBe(3);
    const compactor = new RollupCompactor({ url: dbUrl });
    try {
      await compactor.runOnce();
    } finally {
      await compactor.close();
    }
    expect(await count('energy_hourly_deltas')).toBe(0);
    expect(await count('metrics_rollup_deltas')).toBe(0);
    const repo = new MetricsRepository(db, undefined as unknown as Redis, 'rulr:');
    const day = [Date.UTC(2026, 9, 20), Date.UTC(2026, 9, 21)] as const;
    const energyBoth = async () => [
      await repo.energy(ORG, dev, ...day, 3_600_000),
      await repo.energyFromReadings(ORG, dev, ...day, 3_600_000),
    ];
    const [fromRollup, fromRaw] = await energyBoth();
    expect(fromRollup).toEqual(fromRaw);
    expect(fromRollup?.reduce((a, r) => a + r.kwh, 0)).toBe(109 * 0.25);

    // a wrong energy hour, repaired with the aggregates of the day
    await sql`update energy_hourly set kwh = 999 where device_id = ${dev}`.execute(db);
    const r = await recomputeRollups(db, { from: new Date(day[0]), to: new Date(day[1]) });
    expect(r.energyHourly).toBe(2);
    const [repaired, raw] = await energyBoth();
    expect(repaired).toEqual(raw);
    const plan = planSeries(new Date(day[0]), new Date(day[1]), '1h');
    for (const agg of AGGREGATES) {
      const a = await repo.series(ORG, dev, 'power', plan, agg);
      const b = await repo.seriesFromRaw(ORG, dev, 'power', plan, agg);
      expect(a.map((p) => [p.ts, Number(p.value)])).toEqual(b.map((p) => [p.ts, Number(p.value)]));
    }

    // retention: TimescaleDB's policies (or drop_chunks) for raw data, energy_hourly trimmed here
    await sql`insert into energy_hourly (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
      values ('2015-01-01', ${ORG}, ${dev}, '2015-01-01', 1, '2015-01-01', 1, 0, 1)`.execute(db);
    const kept = await applyRetention(db, { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 }, day[1]);
    expect(kept.deletedRows.energy_hourly).toBe(1);
    expect(await count('energy_hourly')).toBe(2);
    expect(await count('device_metrics')).toBe(220);
  });

  it('on an Apache-only build keeps metric deltas and rollup tables, and drops whole chunks past retention', async (ctx) => {
    // -DAPACHE_ONLY=ON, or timescaledb.license = 'apache' in postgresql.conf (it cannot be set per database)
    if ((await storageInfo(db)).policies) ctx.skip();
    const dev = '00000000-0000-4000-8000-0000000000e2';
    const row = (ts: number, metric: string, value: number, counter = false): Row => ({
      ts,
      orgId: ORG,
      deviceId: dev,
      metric,
      value,
      text: null,
      counter,
    });
    const now = Date.UTC(2026, 10, 27, 12);
    const old = Date.UTC(2020, 0, 1, 10);
    const w = new BatchWriter(dbUrl);
    try {
      await w.write([row(old, 'power', 1), row(old, 'energy', 1, true), row(now, 'power', 2), row(now, 'energy', 2, true)], []);
    } finally {
      await w.close();
    }
    const count = async (table: string) =>
      (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} where device_id = ${dev}`.execute(db)).rows[0]?.n;
    expect(await count('metrics_rollup_deltas')).toBe(4);
    const compactor = new RollupCompactor({ url: dbUrl });
    try {
      await compactor.runOnce();
    } finally {
      await compactor.close();
    }
    expect(await count('metrics_hourly')).toBe(4);
    expect(await count('energy_hourly')).toBe(2);

    const r = await applyRetention(db, { rawDays: 365, rollupDays: 1825, deadLetterDays: 30 }, now);
    expect(r.droppedPartitions).toHaveLength(2);
    expect(r.droppedPartitions.every((c) => c.startsWith('_timescaledb_internal.'))).toBe(true);
    expect(await count('device_metrics')).toBe(2);
    expect(await count('energy_readings')).toBe(1);
    expect(r.deletedRows).toMatchObject({ metrics_hourly: 2, metrics_daily: 2, energy_hourly: 1 });

    expect(await recomputeRollups(db, { from: new Date(now), to: new Date(now) })).toEqual({ hourly: 2, daily: 2, energyHourly: 1 });
  });
});
