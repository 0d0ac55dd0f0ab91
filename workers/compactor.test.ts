import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchWriter, type Row } from '../ingest/writer.js';
import { insertDevice, insertOrg } from '../subgraphs/metrics/test-fixtures.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { COMPACTION_LOCK, compactRollups, RollupCompactor } from './compactor.js';

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
    expect(await compactRollups(sql)).toEqual({ deltas: 3, hourly: 2, daily: 2 });
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
      expect(await compactRollups(sql)).toEqual({ deltas: 0, hourly: 0, daily: 0 });
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
});
