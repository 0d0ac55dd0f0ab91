import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type Db } from '../lib/db.js';
import { ConflictError } from '../lib/errors.js';
import type { Redis } from '../lib/redis.js';
import { migrateToLatest } from '../schema/migrate.js';
import { applyTimescale, migrateTimescale, timescaleAvailability } from '../schema/timescale/apply.js';
import { storageInfo, storageMode } from '../schema/timescale/mode.js';
import { DAYS, DEVICES, FROM, loadSample, ORG } from '../schema/timescale/sample.js';
import { MetricsRepository } from '../subgraphs/metrics/repository.js';
import { AGGREGATES, planSeries } from '../subgraphs/metrics/series.js';
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
    db = createDb({ url: url.toString(), poolSize: 3 });
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
      order by 1`.execute(db);
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
});
