import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/db.js';
import { insertDevice, insertOrg } from '../../test/support/telemetry-fixtures.js';
import { COMPACTION_LOCK, compactRollups, RollupCompactor } from './compactor.js';
import { recordStorageMode } from './timescale/mode.js';
import { BatchWriter, type Row } from './writer.js';

let t: TestDatabase;
let sql: pg.Client;
let org: string;
let dev: string;
const T0 = Date.UTC(2026, 2, 3, 22);
const MIN = 60_000;

beforeAll(async () => {
  t = await createTestDatabase();
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  org = await insertOrg(t.db, 'compactor');
  dev = await insertDevice(t.db, org, 'C-1', null);
});

afterAll(async () => {
  await sql?.end();
  await t?.drop();
});

const row = (ts: number, value: number): Row => ({ ts, orgId: org, deviceId: dev, metric: 'power', value, text: null, counter: false });
const rollup = async (table: string) =>
  (await sql.query(`select bucket, min, max, sum, count::int as count, last, last_time from ${table} order by bucket`)).rows;
const deltas = async () => Number((await sql.query('select count(*) n from metrics_rollup_deltas')).rows[0].n);
const NO_ENERGY = { energyDeltas: 0, energyHourly: 0, energyRecomputed: 0 };
const kwhRow = (ts: number, value: number): Row => ({ ts, orgId: org, deviceId: dev, metric: 'energy', value, text: null, counter: true });
const energyHourly = async () =>
  (
    await sql.query(
      'select bucket, first_time, first_kwh, last_time, last_kwh, kwh, count::int as count from energy_hourly order by bucket',
    )
  ).rows;

describe('rollup compaction', () => {
  it('folds the deltas of several batches into hourly and daily rollups across a day boundary and empties the deltas', async () => {
    const w = new BatchWriter(t.url);
    try {
      await w.write([row(T0, 5), row(T0 + 30 * MIN, 7)], []);
      await w.write([row(T0 + 20 * MIN, 1), row(T0 + 2 * 60 * MIN + 5 * MIN, 9)], []);
    } finally {
      await w.close();
    }
    expect(await deltas()).toBe(3);
    const live = await rollup('metrics_hourly_live');
    expect(await compactRollups(sql)).toEqual({ deltas: 3, hourly: 2, daily: 2, ...NO_ENERGY });
    expect(await deltas()).toBe(0);
    const hourly = await rollup('metrics_hourly');
    expect(hourly).toEqual(live);
    expect(hourly[0]).toMatchObject({ min: 1, max: 7, sum: 13, count: 3, last: 7, last_time: new Date(T0 + 30 * MIN) });
    expect((await rollup('metrics_daily')).map((r) => [r.bucket.getTime(), r.count])).toEqual([
      [Date.UTC(2026, 2, 3), 3],
      [Date.UTC(2026, 2, 4), 1],
    ]);
  });

  it('merges later deltas into existing rollup rows, keeping the newest last value', async () => {
    const w = new BatchWriter(t.url);
    try {
      await w.write([row(T0 + 10 * MIN, -4)], []);
    } finally {
      await w.close();
    }
    await compactRollups(sql);
    expect((await rollup('metrics_hourly'))[0]).toMatchObject({ min: -4, max: 7, sum: 9, count: 4, last: 7 });
  });

  it('skips its turn while another compaction holds the lock', async () => {
    const other = new pg.Client({ connectionString: t.url });
    await other.connect();
    try {
      await other.query('begin');
      await other.query('select pg_advisory_xact_lock($1)', [COMPACTION_LOCK]);
      expect(await compactRollups(sql)).toBeNull();
      await other.query('rollback');
      expect(await compactRollups(sql)).toEqual({ deltas: 0, hourly: 0, daily: 0, ...NO_ENERGY });
    } finally {
      await other.end();
    }
  });

  it('runs soon after a poke in the background compactor', async () => {
    const w = new BatchWriter(t.url);
    const c = new RollupCompactor({ url: t.url, intervalMs: 50 });
    try {
      await w.write([row(T0 + 40 * MIN, 3)], []);
      c.poke();
      const until = Date.now() + 5000;
      while ((await deltas()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      expect(await deltas()).toBe(0);
      expect((await rollup('metrics_hourly'))[0]).toMatchObject({ count: 5, sum: 12 });
    } finally {
      await c.close();
      await w.close();
    }
  });

  it('chains energy partials of one hour that do not overlap, in time order, counting the reset between them', async () => {
    const h = T0 + 5 * 60 * MIN;
    const w = new BatchWriter(t.url);
    try {
      await w.write([kwhRow(h + 40 * MIN, 2), kwhRow(h + 50 * MIN, 3)], []); // after a reset
      await w.write([kwhRow(h + 10 * MIN, 100), kwhRow(h + 20 * MIN, 101)], []); // earlier, arriving later
    } finally {
      await w.close();
    }
    expect(await compactRollups(sql)).toMatchObject({ energyDeltas: 2, energyHourly: 1, energyRecomputed: 0 });
    const w2 = new BatchWriter(t.url);
    try {
      await w2.write([kwhRow(h + 55 * MIN, 4.5)], []);
    } finally {
      await w2.close();
    }
    expect(await compactRollups(sql)).toMatchObject({ energyDeltas: 1, energyHourly: 1, energyRecomputed: 0 });
    // 100 → 101 (+1), 101 → 2 (reset: +2), 2 → 3 (+1), 3 → 4.5 (+1.5)
    expect(await energyHourly()).toEqual([
      {
        bucket: new Date(h),
        first_time: new Date(h + 10 * MIN),
        first_kwh: 100,
        last_time: new Date(h + 55 * MIN),
        last_kwh: 4.5,
        kwh: 5.5,
        count: 5,
      },
    ]);
  });

  it('recomputes an hour from its readings when partials overlap in time, whichever batch is folded first', async () => {
    const h = T0 + 7 * 60 * MIN;
    const w = new BatchWriter(t.url);
    try {
      await w.write([kwhRow(h + 10 * MIN, 10), kwhRow(h + 30 * MIN, 12)], []);
      expect(await compactRollups(sql, 1)).toMatchObject({ energyDeltas: 1, energyRecomputed: 0 });
      // interleaved with the stored hour, and with each other
      await w.write([kwhRow(h + 20 * MIN, 11), kwhRow(h + 50 * MIN, 0.5)], []);
      await w.write([kwhRow(h + 5 * MIN, 9), kwhRow(h + 40 * MIN, 13)], []);
    } finally {
      await w.close();
    }
    // a limit of 1 still takes every pending partial of that device-hour
    expect(await compactRollups(sql, 1)).toMatchObject({ energyDeltas: 2, energyHourly: 1, energyRecomputed: 1 });
    // 9, 10, 11, 12, 13, 0.5 (reset): 1 + 1 + 1 + 1 + 0.5
    expect((await energyHourly()).at(-1)).toEqual({
      bucket: new Date(h),
      first_time: new Date(h + 5 * MIN),
      first_kwh: 9,
      last_time: new Date(h + 50 * MIN),
      last_kwh: 0.5,
      kwh: 4.5,
      count: 6,
    });
    expect(Number((await sql.query('select count(*) n from energy_hourly_deltas')).rows[0].n)).toBe(0);
  });

  it('waits longer before the next compaction when the last one took a large share of the time', async () => {
    const w = new BatchWriter(t.url);
    // Any compaction is "expensive" at this fraction: the next one waits maxIntervalMs from its start.
    const c = new RollupCompactor({ url: t.url, intervalMs: 20, maxBusyFraction: 0.000_01, maxIntervalMs: 2000 });
    const until = async (ms: number) => {
      const end = Date.now() + ms;
      while ((await deltas()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    };
    const hour = T0 + 10 * 24 * 60 * MIN;
    try {
      await w.write([row(hour, 1)], []);
      c.poke();
      await until(5000);
      expect(await deltas()).toBe(0);
      const folded = Date.now();
      await w.write([row(hour + MIN, 2)], []);
      c.poke();
      await new Promise((r) => setTimeout(r, 800));
      if (Date.now() - folded < 1500) expect(await deltas()).toBe(1);
      await until(5000);
      expect(await deltas()).toBe(0);
      const r = await sql.query('select count::int as count, sum from metrics_hourly where bucket = $1', [new Date(hour)]);
      expect(r.rows).toEqual([{ count: 2, sum: 3 }]);
    } finally {
      await c.close();
      await w.close();
    }
  });
});

describe('rollups in TimescaleDB mode with continuous aggregates (simulated on plain PostgreSQL)', () => {
  // `rulr_storage_mode` says continuous aggregates replace metrics_hourly/metrics_daily; here those
  // stay tables, so a write into them or a leftover metric delta would show.
  let ts: TestDatabase;
  let c: pg.Client;
  let o: string;
  let d: string;
  const H = Date.UTC(2026, 2, 5, 10);
  const count = async (table: string) => Number((await c.query(`select count(*) n from ${table}`)).rows[0].n);
  /** power and a rising energy counter at +0, +10 and +20 minutes */
  const rows = (ts0: number, kwh0 = 50): Row[] =>
    [0, 10, 20].flatMap((m) => [
      { ts: ts0 + m * MIN, orgId: o, deviceId: d, metric: 'power', value: m, text: null, counter: false },
      { ts: ts0 + m * MIN, orgId: o, deviceId: d, metric: 'energy', value: kwh0 + m, text: null, counter: true },
    ]);

  beforeAll(async () => {
    ts = await createTestDatabase();
    c = new pg.Client({ connectionString: ts.url });
    await c.connect();
    o = await insertOrg(ts.db, 'compactor-ts');
    d = await insertDevice(ts.db, o, 'CT-1', null);
    await recordStorageMode(ts.db, { license: 'timescale', continuousAggregates: true, policies: true });
  });

  afterAll(async () => {
    await c?.end();
    await ts?.drop();
  });

  it('makes the writer append energy partials but no metric deltas, on the direct and the duplicate-skipping path', async () => {
    const w = new BatchWriter(ts.url);
    try {
      expect(await w.write(rows(H), [])).toMatchObject({ path: 'fast', inserted: 6 });
      // a redelivery plus a new reading takes the staged path
      const again = [...rows(H), ...rows(H + 30 * MIN, 80).slice(0, 2)];
      expect(await w.write(again, [])).toMatchObject({ path: 'staged', inserted: 2 });
    } finally {
      await w.close();
    }
    expect(await count('device_metrics')).toBe(8);
    expect(await count('energy_readings')).toBe(4);
    expect(await count('metrics_rollup_deltas')).toBe(0);
    expect(await count('energy_hourly_deltas')).toBe(2);
  });

  it('makes the compactor fold energy partials only, leaving metric deltas and rollup tables alone', async () => {
    // a metric delta nobody should fold here (the compactor would insert into a view)
    await c.query(
      `insert into metrics_rollup_deltas (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
      values ($1, $2, $3, 'power', 1, 1, 1, 1, 1, $1)`,
      [new Date(H), o, d],
    );
    const compactor = new RollupCompactor({ url: ts.url });
    try {
      expect(await compactor.runOnce()).toBe(2);
    } finally {
      await compactor.close();
    }
    expect(await count('energy_hourly_deltas')).toBe(0);
    // 50 → 60 → 70 (first batch) → 80 (the staged one)
    expect((await c.query('select kwh, count::int as count from energy_hourly')).rows).toEqual([{ kwh: 30, count: 4 }]);
    expect(await count('metrics_rollup_deltas')).toBe(1);
    expect(await count('metrics_hourly')).toBe(0);
    expect(await count('metrics_daily')).toBe(0);
  });

  it('lets whoever constructs the writer and the compactor decide instead of the database', async () => {
    const w = new BatchWriter(ts.url, { metricRollups: true });
    try {
      await w.write(rows(H + 2 * 60 * MIN), []);
    } finally {
      await w.close();
    }
    // power and energy of that hour, and the delta left by the previous test
    expect(await count('metrics_rollup_deltas')).toBe(3);
    const compactor = new RollupCompactor({ url: ts.url, metricRollups: true });
    try {
      await compactor.runOnce();
    } finally {
      await compactor.close();
    }
    expect(await count('metrics_rollup_deltas')).toBe(0);
    expect(await count('metrics_hourly')).toBe(3);
    expect(await compactRollups(c, 10, { metrics: false })).toEqual({ deltas: 0, hourly: 0, daily: 0, ...NO_ENERGY });
  });
});
