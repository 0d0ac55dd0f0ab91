import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from '../lib/redis.js';
import { COMPACTION_LOCK, compactRollups } from '../lib/telemetry/compactor.js';
import { BatchWriter, type Row } from '../lib/telemetry/writer.js';
import { MetricsRepository } from '../subgraphs/metrics/repository.js';
import { recomputeRollups } from '../workers/maintenance.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { insertDevice, insertEnergy, insertOrg } from './support/telemetry-fixtures.js';

// The maintenance worker's rollup repair (workers/) read back through the metrics subgraph's energy
// queries (subgraphs/metrics/): rollup and raw readings must answer alike after a repair.

let tdb: TestDatabase;
let org: string;
const DAY = 86_400_000;

beforeAll(async () => {
  tdb = await createTestDatabase();
  org = await insertOrg(tdb.db, `r-${randomBytes(3).toString('hex')}`);
});

afterAll(async () => {
  await tdb.drop();
});

describe('rollup repair read through the metrics queries', () => {
  const HOUR = 3_600_000;
  const MIN = 60_000;
  const repo = () => new MetricsRepository(tdb.db, undefined as unknown as Redis, 'maintenance-test:');
  /** energy per hour and per day over [from, to), through the rollup and from every raw reading */
  const energyBoth = async (device: string, from: number, to: number) => {
    const r = repo();
    const out = [];
    for (const interval of [HOUR, DAY])
      out.push({
        rollup: await r.energy(org, device, from, to, interval),
        raw: await r.energyFromReadings(org, device, from, to, interval),
      });
    return out;
  };
  const total = (rows: { kwh: number }[]) => rows.reduce((a, x) => a + x.kwh, 0);

  it('rebuilds the hourly energy rollup of a backfilled range from energy_readings, so it answers like the raw readings', async () => {
    const d = await insertDevice(tdb.db, org, 'M-EB', null);
    const t0 = Date.UTC(2026, 4, 4);
    const client = new pg.Client({ connectionString: tdb.url });
    await client.connect();
    try {
      // ingest: day 1 and day 2, every 10 minutes, 0.5 kWh a step, folded into energy_hourly
      const live = Array.from({ length: 2 * 144 }, (_, i) => ({ time: new Date(t0 + i * 10 * MIN), kwh: 1000 + i * 0.5 }));
      await insertEnergy(tdb.db, org, d, live);
      await compactRollups(client);
      // backfill without partials: the meter's readings 5 minutes after each live one on day 2, with a
      // counter reset at 13:15 (meter replaced; the live readings from 13:00 on were wrong and are deleted)
      const backfill = Array.from({ length: 144 }, (_, i) => ({ time: new Date(t0 + DAY + i * 10 * MIN + 5 * MIN), kwh: 0 }));
      for (const [i, b] of backfill.entries()) b.kwh = i < 79 ? 1072 + i * 0.5 + 0.25 : (i - 79) * 0.5 + 0.25;
      await sql`delete from energy_readings where device_id = ${d} and time >= ${new Date(t0 + DAY + 13 * HOUR)}`.execute(tdb.db);
      await sql`insert into energy_readings (time, org_id, device_id, counter_kwh)
        select t, ${org}::uuid, ${d}::uuid, k from unnest(${backfill.map((b) => b.time.toISOString())}::timestamptz[],
          ${backfill.map((b) => b.kwh)}::float8[]) u(t, k)`.execute(tdb.db);
      // a stale partial of the range (as if the backfill had written one for the wrong readings)
      await sql`insert into energy_hourly_deltas (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
        values (${new Date(t0 + DAY)}, ${org}, ${d}, ${new Date(t0 + DAY)}, 1, ${new Date(t0 + DAY + MIN)}, 999, 998, 2)`.execute(tdb.db);
      await compactRollups(client);
      const before = await energyBoth(d, t0, t0 + 2 * DAY);
      expect(before[0]?.rollup).not.toEqual(before[0]?.raw);

      const r = await recomputeRollups(tdb.db, { from: new Date(t0 + DAY + HOUR), to: new Date(t0 + DAY + 2 * HOUR), orgId: org });

      expect(r.energyHourly).toBe(24);
      const after = await energyBoth(d, t0, t0 + 2 * DAY);
      for (const { rollup, raw } of after) expect(rollup).toEqual(raw);
      // day 1: 143 steps of 0.5; day 2: 1071.5 → 1111.25 up to the reset, then 0.25 (the new value) + 64 × 0.5
      const [hourly, daily] = after;
      expect(daily?.rollup.map((x) => x.kwh)).toEqual([71.5, 39.75 + 0.25 + 32]);
      expect(total(hourly?.rollup ?? [])).toBe(71.5 + 72);
      // nothing pending for the repaired day; energy_hourly alone (no raw fallback) holds the answer
      const pendingDay = await sql<{ n: number }>`
        select count(*)::int as n from energy_hourly_deltas where device_id = ${d}`.execute(tdb.db);
      expect(pendingDay.rows[0]?.n).toBe(0);
    } finally {
      await client.end();
    }
  });

  it.each([
    ['waits for the compaction lock', 'lock'],
    ['is between deleting the metric deltas and rebuilding metrics_hourly', 'metrics_hourly'],
    ['is between deleting the energy partials and rebuilding energy_hourly', 'energy_hourly'],
  ])('counts a batch that ingest commits while the repair %s exactly once', async (_, block) => {
    const d = await insertDevice(tdb.db, org, `M-EC-${block}`, null);
    const t0 = Date.UTC(2026, 4, 6);
    const row = (ts: number, metric: string, value: number, counter = false): Row => ({
      ts,
      orgId: org,
      deviceId: d,
      metric,
      value,
      text: null,
      counter,
    });
    const w = new BatchWriter(tdb.url);
    const locker = new pg.Client({ connectionString: tdb.url });
    await locker.connect();
    try {
      await w.write(
        Array.from({ length: 60 }, (_, i) => [row(t0 + i * MIN, 'power', i), row(t0 + i * MIN, 'energy', 10 + i, true)]).flat(),
        [],
      );
      await compactRollups(locker);
      // stop the repair at a chosen point: the compaction lock (its first statement), or a row lock on
      // a rollup row of the range (the statement that deletes the rollup rows, after the deltas went)
      await locker.query('begin');
      if (block === 'lock') await locker.query('select pg_advisory_xact_lock($1)', [COMPACTION_LOCK]);
      else await locker.query(`select 1 from ${block} where device_id = $1 limit 1 for update`, [d]);
      const repair = recomputeRollups(tdb.db, { from: new Date(t0), to: new Date(t0 + DAY), orgId: org });
      for (let i = 0; i < 200; i++) {
        const { rows } = await locker.query(
          "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
        );
        if (rows[0].n > 0) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      // ingest commits a batch of the repaired day meanwhile
      await w.write(
        Array.from({ length: 30 }, (_, i) => [
          row(t0 + (60 + i) * MIN, 'power', 100),
          row(t0 + (60 + i) * MIN, 'energy', 70 + i, true),
        ]).flat(),
        [],
      );
      await locker.query('commit');
      await repair;
    } finally {
      await locker.end();
      await w.close();
    }
    const client = new pg.Client({ connectionString: tdb.url });
    await client.connect();
    try {
      await compactRollups(client);
    } finally {
      await client.end();
    }
    const h = await sql<{ sum: number; count: number }>`
      select sum(sum)::float8 as sum, sum(count)::int as count from metrics_hourly where device_id = ${d} and metric = 'power'`.execute(
      tdb.db,
    );
    expect(h.rows[0]).toEqual({ sum: (59 * 60) / 2 + 30 * 100, count: 90 });
    const e = await sql<{ kwh: number; count: number }>`
      select sum(kwh)::float8 as kwh, sum(count)::int as count from energy_hourly where device_id = ${d}`.execute(tdb.db);
    // 59 + 29 kWh within the two hours; the step across the hour edge is chained when read
    expect(e.rows[0]).toEqual({ kwh: 88, count: 90 });
    const [hourly] = await energyBoth(d, t0, t0 + DAY);
    expect(hourly?.rollup).toEqual(hourly?.raw);
  });
});
