import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type Db } from '../lib/db.js';
import { ConflictError } from '../lib/errors.js';
import type { Redis } from '../lib/redis.js';
import { RollupCompactor } from '../lib/telemetry/compactor.js';
import { applyTimescale, migrateTimescale, timescaleAvailability } from '../lib/telemetry/timescale/apply.js';
import { runTimescaleJob, timescaleJobs } from '../lib/telemetry/timescale/jobs.js';
import { storageInfo, storageMode } from '../lib/telemetry/timescale/mode.js';
import { BatchWriter, type Row } from '../lib/telemetry/writer.js';
import { migrateToLatest } from '../schema/migrate.js';
import { DAYS, DEVICES, FROM, loadSample, ORG } from '../scripts/timescale/sample.js';
import { MetricsRepository } from '../subgraphs/metrics/repository.js';
import { AGGREGATES, planSeries } from '../subgraphs/metrics/series.js';
import { applyRetention, readJobRuns, recomputeRollups, runTimescaleJobs } from '../workers/maintenance.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { asTenant, attempt, privilegedForApp, reachedAsTenant, rowsMentioning } from './support/reach.js';

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

  it('converts the telemetry tables to hypertables with the documented chunk intervals, in their own schema', async () => {
    const { rows } = await sql<{ table: string; interval: string }>`
      select hypertable_schema || '.' || hypertable_name as table, time_interval::text as interval
      from timescaledb_information.dimensions where hypertable_name in ('audit_logs', 'device_metrics', 'energy_readings') order by 1`.execute(
      db,
    );
    expect(rows).toEqual([
      { table: 'rulr_timescale.audit_logs', interval: '30 days' },
      { table: 'rulr_timescale.device_metrics', interval: '1 day' },
      { table: 'rulr_timescale.energy_readings', interval: '7 days' },
    ]);
    const { rows: views } = await sql<{ name: string; options: string[] }>`
      select relname as name, reloptions as options from pg_class
      where relnamespace = 'public'::regnamespace and relname in ('audit_logs', 'device_metrics', 'energy_readings') and relkind = 'v'
      order by 1`.execute(db);
    expect(views.map((v) => [v.name, v.options])).toEqual(
      ['audit_logs', 'device_metrics', 'energy_readings'].map((n) => [n, ['security_barrier=true', 'check_option=cascaded']]),
    );
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

  it("runs TimescaleDB's jobs from the maintenance worker, off TimescaleDB's scheduler, and records each run", async () => {
    const first = await runTimescaleJobs(db);
    if (!(await storageInfo(db)).policies) {
      // the Apache license refuses run_job and alter_job; retention is the worker's own drop_chunks there
      expect(first).toEqual({ ran: [], failed: [] });
      return;
    }
    expect(first.failed).toEqual([]);
    const names = (await timescaleJobs(db)).map((j) => j.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'policy_job_stat_history_retention',
        'policy_compression:device_metrics',
        'policy_retention:energy_readings',
        'policy_refresh_continuous_aggregate:metrics_hourly_cagg',
        'policy_refresh_continuous_aggregate:metrics_daily_cagg',
      ]),
    );
    expect([...first.ran].sort()).toEqual([...names].sort());
    // TimescaleDB's own scheduler runs none of them any more (its runs fail on PostgreSQL 15.20)
    expect((await timescaleJobs(db)).filter((j) => j.scheduled)).toEqual([]);
    const runs = new Map((await readJobRuns(db)).map((r) => [r.name, r]));
    for (const j of await timescaleJobs(db)) {
      const r = runs.get(j.name);
      expect(r, j.name).toMatchObject({ intervalS: j.intervalMs / 1000, lastError: null, lastFailedAt: null });
      expect(r?.lastSucceededAt, j.name).toBeInstanceOf(Date);
      expect(r?.lastDurationS, j.name).toBeGreaterThanOrEqual(0);
    }
    // none is due again yet; a failing one is recorded as failed and the others still run
    expect(await runTimescaleJobs(db)).toEqual({ ran: [], failed: [] });
    const later = Date.now() + 2 * 86_400_000;
    const history = "proc_name = 'policy_job_stat_history_retention'";
    const { rows: saved } = await sql<{
      config: unknown;
    }>`select config from timescaledb_information.jobs where ${sql.raw(history)}`.execute(db);
    await sql`select alter_job(job_id, config => config || '{"drop_after": "not an interval"}') from timescaledb_information.jobs
              where ${sql.raw(history)}`.execute(db);
    try {
      const again = await runTimescaleJobs(db, later);
      expect(again.failed.map((f) => f.name)).toEqual(['policy_job_stat_history_retention']);
      expect(again.ran.length).toBe(names.length - 1);
      const failed = (await readJobRuns(db)).find((r) => r.name === 'policy_job_stat_history_retention');
      expect(failed?.lastError).toMatch(/interval/);
      expect(failed?.lastFailedAt).toBeInstanceOf(Date);
    } finally {
      await sql`select alter_job(job_id, config => ${JSON.stringify(saved[0]?.config)}::jsonb) from timescaledb_information.jobs
                where ${sql.raw(history)}`.execute(db);
    }
  });

  /** `series()` (hourly and daily rollups) answers as `seriesFromRaw()` for `dev`'s power over [from, to); returns the points compared */
  const expectSameSeries = async (org: string, dev: string, from: Date, to: Date) => {
    const repo = new MetricsRepository(db, undefined as unknown as Redis, 'rulr:');
    let points = 0;
    for (const iv of ['1h', '1d']) {
      const plan = planSeries(from, to, iv);
      for (const agg of AGGREGATES) {
        const fromRollups = await repo.series(org, dev, 'power', plan, agg);
        const fromRaw = await repo.seriesFromRaw(org, dev, 'power', plan, agg);
        expect(fromRollups.map((p) => p.ts)).toEqual(fromRaw.map((p) => p.ts));
        for (const [i, p] of fromRollups.entries()) expect(Number(p.value)).toBeCloseTo(Number(fromRaw[i]?.value), 9);
        points += fromRaw.length;
      }
    }
    return points;
  };

  it('answers series from rollups exactly as from raw rows, and energy per day as the sum of its hours', async () => {
    await loadSample(db);
    const repo = new MetricsRepository(db, undefined as unknown as Redis, 'rulr:');
    const to = new Date(FROM.getTime() + DAYS * 86_400_000);
    expect(await expectSameSeries(ORG, DEVICES[0] as string, FROM, to)).toBeGreaterThan(0);
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

  it('folds a backfill older than the refresh window into the rollups: series() answers as seriesFromRaw()', async () => {
    const info = await storageInfo(db);
    const dev = '00000000-0000-4000-8000-0000000000e3';
    const now = Date.now();
    const HOUR = 3_600_000;
    const DAY = 24 * HOUR;
    const power = (from: number, to: number, step: number): Row[] =>
      Array.from({ length: Math.floor((to - from) / step) }, (_, i) => ({
        ts: from + i * step,
        orgId: ORG,
        deviceId: dev,
        metric: 'power',
        value: (i * 7) % 50,
        text: null,
        counter: false,
      }));
    const queued = async () =>
      info.continuousAggregates
        ? Number((await sql<{ n: number }>`select count(*)::int as n from rulr_timescale.rollup_refresh_queue`.execute(db)).rows[0]?.n)
        : 0;
    const w = new BatchWriter(dbUrl);
    try {
      // on-time readings and the refresh policies' runs, as on a live system
      await w.write(power(now - 3 * HOUR, now - HOUR, 10 * 60_000), []);
      expect(await queued()).toBe(0);
      for (const j of await timescaleJobs(db))
        if (j.name.startsWith('policy_refresh_continuous_aggregate')) await runTimescaleJob(db, j.id);
      // a backfill 8–20 days old (a gateway's buffer, an import): older than the hourly policy's 7 days
      await w.write(power(now - 20 * DAY, now - 8 * DAY, 30 * 60_000), []);
    } finally {
      await w.close();
    }
    const from = new Date(now - 21 * DAY);
    const to = new Date(now - 7 * DAY);
    if (info.continuousAggregates) {
      expect(await queued()).toBe(1);
      // what the aggregates answered before this was handled: nothing for those days
      const repo = new MetricsRepository(db, undefined as unknown as Redis, 'rulr:');
      const plan = planSeries(from, to, '1h');
      expect(await repo.series(ORG, dev, 'power', plan, 'COUNT')).toEqual([]);
      expect((await repo.seriesFromRaw(ORG, dev, 'power', plan, 'COUNT')).length).toBeGreaterThanOrEqual(12 * 24);
    }
    const compactor = new RollupCompactor({ url: dbUrl });
    try {
      await compactor.runOnce();
    } finally {
      await compactor.close();
    }
    expect(await queued()).toBe(0);
    // 12 days of hourly points and 12–13 daily ones, per aggregate
    expect(await expectSameSeries(ORG, dev, from, to)).toBeGreaterThanOrEqual(AGGREGATES.length * 12 * 25);
  });

  describe('tenant isolation', () => {
    const A = '00000000-0000-4000-8000-0000000000a1';
    const devA = '00000000-0000-4000-8000-0000000000a2';
    const B = '00000000-0000-4000-8000-0000000000b1';
    const devB = '00000000-0000-4000-8000-0000000000b2';
    const DAY = 86_400_000;
    const reading = (org: string, dev: string, ts: number, metric = 'power', value = 1): Row => ({
      ts,
      orgId: org,
      deviceId: dev,
      metric,
      value,
      text: null,
      counter: metric === 'energy',
    });
    /** Every relation of TimescaleDB's internal schema and of the hypertables' schema, chunks included. */
    const internalRelations = async () =>
      (
        await sql<{ rel: string }>`
          select format('%I.%I', n.nspname, c.relname) as rel from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname in ('_timescaledb_internal', 'rulr_timescale') and c.relkind in ('r', 'p', 'v', 'm', 'f') order by 1`.execute(db)
      ).rows.map((r) => r.rel);

    beforeAll(async () => {
      // org B's telemetry in three chunks (two old enough to compress), energy readings and an audit row
      const now = Date.now();
      const w = new BatchWriter(dbUrl);
      try {
        await w.write(
          [now - 30 * DAY, now - 10 * DAY, now - 3_600_000].flatMap((t) => [reading(B, devB, t), reading(B, devB, t, 'energy', t / DAY)]),
          [],
        );
      } finally {
        await w.close();
      }
      await sql`insert into audit_logs (org_id, actor, action, entity_type, entity_id, before)
                values (${B}, 'user:b', 'device.update', 'device', ${devB}, ${JSON.stringify({ id: devB, name: 'B lamp' })})`.execute(db);
      if ((await storageInfo(db)).policies) {
        for (const t of ['device_metrics', 'energy_readings'])
          await sql`select compress_chunk(c, if_not_compressed => true)
                    from show_chunks(${`rulr_timescale.${t}`}::regclass, older_than => interval '7 days') c`.execute(db);
        for (const cagg of ['metrics_hourly_cagg', 'metrics_daily_cagg'])
          await sql`call refresh_continuous_aggregate(${sql.lit(`rulr_timescale.${cagg}`)}, ${sql.lit(new Date(now - 40 * DAY).toISOString())}::timestamptz, null)`.execute(
            db,
          );
      }
    });

    it('keeps rulr_app off every hypertable, chunk, compressed chunk, continuous aggregate and internal table', async () => {
      const relations = await internalRelations();
      const { rows: chunks } = await sql<{ rel: string; compressed: boolean }>`
        select format('%I.%I', c.schema_name, c.table_name) as rel, h.compression_state = 2 as compressed
        from _timescaledb_catalog.chunk c join _timescaledb_catalog.hypertable h on h.id = c.hypertable_id`.execute(db);
      expect(relations).toEqual(expect.arrayContaining(chunks.map((c) => c.rel)));
      expect(relations).toEqual(
        expect.arrayContaining(['rulr_timescale.device_metrics', 'rulr_timescale.energy_readings', 'rulr_timescale.audit_logs']),
      );
      if ((await storageInfo(db)).policies) {
        expect(chunks.filter((c) => c.compressed).length).toBeGreaterThanOrEqual(2);
        expect(relations).toEqual(
          expect.arrayContaining([
            'rulr_timescale.metrics_hourly_cagg',
            'rulr_timescale.metrics_daily_cagg',
            expect.stringMatching(/^_timescaledb_internal\._materialized_hypertable_\d+$/),
            expect.stringMatching(/^_timescaledb_internal\._compressed_hypertable_\d+$/),
          ]),
        );
      }
      // TimescaleDB's job and size statistics are readable by everyone (no tenant's rows: next test), nothing else
      const stats = [
        '_timescaledb_internal.bgw_job_stat',
        '_timescaledb_internal.bgw_policy_chunk_stats',
        '_timescaledb_internal.compressed_chunk_stats',
        '_timescaledb_internal.hypertable_chunk_local_size',
      ];
      expect(await privilegedForApp(dbUrl, relations)).toEqual(stats);
      expect(
        await reachedAsTenant(
          dbUrl,
          A,
          relations.filter((r) => !stats.includes(r)),
        ),
      ).toEqual([]);
      // so is TimescaleDB's catalog, and the storage mode; none of it is writable
      const { rows: catalog } = await sql<{ rel: string }>`
        select format('%I.%I', n.nspname, c.relname) as rel from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('_timescaledb_catalog', '_timescaledb_config', '_timescaledb_cache') and c.relkind in ('r', 'v')`.execute(db);
      expect(catalog.length).toBeGreaterThan(10);
      const readOnly = [...stats, ...catalog.map((c) => c.rel), 'public.rulr_storage_mode'];
      expect(await reachedAsTenant(dbUrl, A, readOnly, ['insert', 'update', 'delete'])).toEqual([]);
    });

    it("shows a tenant session no other organization's row through any relation it can read", async () => {
      const seen = await rowsMentioning(dbUrl, A, [B, devB]);
      expect([...seen].filter(([, n]) => n > 0)).toEqual([]);
      // the scan covered the tenant views, TimescaleDB's catalog and information views, and pg_stats
      expect([...seen.keys()]).toEqual(
        expect.arrayContaining([
          'public.device_metrics',
          'public.audit_logs',
          'public.metrics_hourly',
          '_timescaledb_catalog.chunk',
          'timescaledb_information.chunks',
          'pg_catalog.pg_stats',
        ]),
      );
      // and it finds the rows where they may be seen: org B's own session
      const own = await rowsMentioning(dbUrl, B, [devB]);
      expect(own.get('public.device_metrics')).toBe(6);
      expect(own.get('public.audit_logs')).toBe(1);
    });

    it('leaves a chunk unreachable from the moment an insert creates it, by a tenant session or by ingest', async () => {
      // a tenant's insert through the view, into a time range no chunk covers yet (same transaction)
      const inTx = await asTenant(dbUrl, A, async (c) => {
        await c.query(`insert into device_metrics values ('2031-01-01T00:00:00Z', $1, $2, 'power', 1, null)`, [A, devA]);
        const { rows } = await c.query<{ rel: string }>(
          `select format('%I.%I', chunk_schema, chunk_name) as rel from timescaledb_information.chunks
           where hypertable_name = 'device_metrics' and range_start = '2031-01-01T00:00:00Z'`,
        );
        expect(rows).toHaveLength(1);
        const chunk = rows[0]?.rel as string;
        return [await attempt(c, `select * from ${chunk}`), await attempt(c, `insert into ${chunk} select * from ${chunk}`)];
      });
      expect(inTx.map((e) => e?.code)).toEqual(['42501', '42501']);
      // ingest (a system role) creating one, checked right after its commit
      const before = new Set(await internalRelations());
      const w = new BatchWriter(dbUrl);
      try {
        await w.write([reading(B, devB, Date.UTC(2032, 0, 1)), reading(B, devB, Date.UTC(2032, 0, 1), 'energy', 7)], []);
      } finally {
        await w.close();
      }
      const fresh = (await internalRelations()).filter((r) => !before.has(r));
      expect(fresh).toHaveLength(2);
      expect(await privilegedForApp(dbUrl, fresh)).toEqual([]);
      expect(await reachedAsTenant(dbUrl, A, fresh)).toEqual([]);
    });

    it('lets a tenant session read and write its own rows through the views, and refuses the other organization', async () => {
      const r = await asTenant(dbUrl, A, async (c) => {
        await c.query(`insert into device_metrics values (now(), $1, $2, 'power', 5, null)`, [A, devA]);
        await c.query(`insert into audit_logs (org_id, actor, action, entity_type) values ($1, 'user:a', 'x', 'device')`, [A]);
        const foreign = await attempt(c, `insert into device_metrics values (now(), $1, $2, 'power', 5, null)`, [B, devB]);
        const moved = await attempt(c, `update device_metrics set org_id = $1 where org_id = $2`, [B, A]);
        const upd = await c.query(`update device_metrics set value = 0 where org_id = $1`, [B]);
        const del = await c.query(`delete from audit_logs where org_id = $1`, [B]);
        const orgs = await c.query<{ org_id: string }>(
          `select distinct org_id from device_metrics union select distinct org_id from energy_readings
           union select distinct org_id from audit_logs union select distinct org_id from metrics_hourly`,
        );
        return {
          foreign: foreign?.code,
          moved: moved?.code,
          updated: upd.rowCount,
          deleted: del.rowCount,
          orgs: orgs.rows.map((o) => o.org_id),
        };
      });
      // 44000: the row would not satisfy the view's tenant filter (with check option)
      expect(r).toEqual({ foreign: '44000', moved: '44000', updated: 0, deleted: 0, orgs: [A] });
    });
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
