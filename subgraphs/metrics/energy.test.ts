import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from '../../lib/redis.js';
import { compactRollups } from '../../lib/telemetry/compactor.js';
import { BatchWriter, type Row } from '../../lib/telemetry/writer.js';
import { createTestDatabase, type TestDatabase } from '../../test/support/db.js';
import { insertDevice, insertEnergy, insertOrg, insertSite, type SiteFixture } from '../../test/support/telemetry-fixtures.js';
import { ENERGY_LOOKBACK_MS, type EnergyRow, MetricsRepository } from './repository.js';
import { type CounterReading, DAY, energyBuckets, HOUR, MINUTE } from './series.js';

/**
 * The hourly energy rollup answers exactly like the raw `energy_readings` computation and the pure
 * `energyBuckets` rule: random counters with resets and gaps, written through ingest's writer in
 * batches that arrive out of order and overlap in time, redelivered, before and after compaction.
 */

let t: TestDatabase;
let sql: pg.Client;
let repo: MetricsRepository;
let org: string;
let site: SiteFixture;
const devices: string[] = [];
/** every reading written, per device */
const written = new Map<string, CounterReading[]>();
const T0 = Date.UTC(2026, 4, 10);

/** Deterministic pseudo-random numbers (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** A counter from `start` to `end`: steps of 1–25 min, some gaps of hours, ~3% resets to near zero. */
function counter(rand: () => number, start: number, end: number): CounterReading[] {
  const out: CounterReading[] = [];
  let kwh = 100 + rand() * 1000;
  for (let ts = start + Math.floor(rand() * 10 * MINUTE); ts < end; ) {
    kwh = rand() < 0.03 ? rand() * 2 : kwh + rand() * 0.5;
    out.push({ t: ts, kwh: Math.round(kwh * 1000) / 1000 });
    ts += rand() < 0.04 ? Math.floor(rand() * 5 * HOUR) : Math.floor(MINUTE + rand() * 24 * MINUTE);
  }
  return out;
}

function shuffle<T>(rand: () => number, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [xs[i], xs[j]] = [xs[j] as T, xs[i] as T];
  }
  return xs;
}

const toRow = (dev: string, r: CounterReading): Row => ({
  ts: r.t,
  orgId: org,
  deviceId: dev,
  metric: 'energy',
  value: r.kwh,
  text: null,
  counter: true,
});

/** The pure rule over everything written: readings in [from, to) and the last one of the week before. */
function expected(devs: string[], from: number, to: number, intervalMs: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const d of devs) {
    const rs = [...(written.get(d) ?? [])].sort((a, b) => a.t - b.t);
    const previous = rs.filter((r) => r.t >= from - ENERGY_LOOKBACK_MS && r.t < from).at(-1);
    for (const [b, v] of energyBuckets(
      rs.filter((r) => r.t >= from && r.t < to),
      intervalMs,
      previous,
    ))
      out.set(b, (out.get(b) ?? 0) + v);
  }
  return out;
}

function expectSame(got: EnergyRow[], want: Map<number, number>, what: string): void {
  expect(
    got.map((r) => r.ts.getTime()),
    what,
  ).toEqual([...want.keys()].sort((a, b) => a - b));
  for (const r of got) {
    const w = want.get(r.ts.getTime()) as number;
    expect(Math.abs(Number(r.kwh) - w), `${what} at ${r.ts.toISOString()}: ${r.kwh} vs ${w}`).toBeLessThan(1e-9 * Math.max(1, Math.abs(w)));
  }
}

/** Ranges checked: aligned days and hours, unaligned edges, whole-hour and sub-hour intervals. */
const RANGES: [number, number, number][] = [
  [T0, T0 + 3 * DAY, DAY],
  [T0, T0 + 3 * DAY, HOUR],
  [T0 + DAY, T0 + 2 * DAY, DAY],
  [T0 + DAY, T0 + 2 * DAY, 2 * HOUR],
  [T0 + 5 * HOUR + 17 * MINUTE, T0 + 2 * DAY + 3 * HOUR + 41 * MINUTE, HOUR],
  [T0 + 5 * HOUR + 17 * MINUTE, T0 + 2 * DAY + 3 * HOUR + 41 * MINUTE, DAY],
  [T0 + 10 * HOUR + 59 * MINUTE, T0 + 11 * HOUR + 2 * MINUTE, HOUR],
  [T0 + 10 * HOUR, T0 + 13 * HOUR, 15 * MINUTE],
  [T0 - 6 * HOUR, T0 + 4 * DAY, DAY],
];

async function allMatch(stage: string): Promise<void> {
  for (const [from, to, iv] of RANGES) {
    for (const d of devices) {
      const what = `${stage}: device ${devices.indexOf(d)} [${new Date(from).toISOString()}, ${new Date(to).toISOString()}) / ${iv / MINUTE} min`;
      const want = expected([d], from, to, iv);
      expectSame(await repo.energy(org, d, from, to, iv), want, `${what}, rollup`);
      expectSame(await repo.energyFromReadings(org, d, from, to, iv), want, `${what}, raw`);
    }
  }
  for (const [from, to] of [
    [T0, T0 + 3 * DAY],
    [T0 + 7 * HOUR + 30 * MINUTE, T0 + 2 * DAY],
  ] as const) {
    const want = expected(devices.slice(0, 4), from, to, DAY); // device 4 is outside the subtree
    expectSame(await repo.siteEnergy(org, site.path, from, to), want, `${stage}: site per day, rollup`);
    expectSame(await repo.siteEnergyFromReadings(org, site.path, from, to), want, `${stage}: site per day, raw`);
  }
}

/** After compaction, every stored hour equals its partial recomputed from the readings. */
async function rollupEqualsReadings(): Promise<void> {
  const { rows } = await sql.query(`
    select r.device_id, r.bucket, h.device_id is null as missing,
           h.first_time = r.first_time and h.first_kwh = r.first_kwh and h.last_time = r.last_time and h.last_kwh = r.last_kwh
             and h.count = r.count and abs(h.kwh - r.kwh) <= 1e-9 * greatest(1, abs(r.kwh)) as same
      from (select date_trunc('hour', time, 'UTC') as bucket, device_id, min(time) as first_time, max(time) as last_time,
                   (array_agg(counter_kwh order by time))[1] as first_kwh, (array_agg(counter_kwh order by time desc))[1] as last_kwh,
                   count(*) as count,
                   coalesce(sum(case when prev is null then 0 when counter_kwh >= prev then counter_kwh - prev else counter_kwh end), 0) as kwh
              from (select *, lag(counter_kwh) over (partition by device_id, date_trunc('hour', time, 'UTC') order by time) as prev
                      from energy_readings) x group by 1, 2) r
      full join energy_hourly h on h.device_id = r.device_id and h.bucket = r.bucket
     where h.device_id is null or r.device_id is null or not (h.first_time = r.first_time and h.first_kwh = r.first_kwh
           and h.last_time = r.last_time and h.last_kwh = r.last_kwh and h.count = r.count
           and abs(h.kwh - r.kwh) <= 1e-9 * greatest(1, abs(r.kwh)))`);
  expect(rows).toEqual([]);
}

const pending = async () => Number((await sql.query('select count(*) n from energy_hourly_deltas')).rows[0].n);

beforeAll(async () => {
  t = await createTestDatabase();
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  org = await insertOrg(t.db, 'energy');
  const city = await insertSite(t.db, org, 'city');
  site = await insertSite(t.db, org, 'district', city);
  for (let i = 0; i < 5; i++) devices.push(await insertDevice(t.db, org, `EN-${i}`, i === 4 ? city.id : site.id));
  repo = new MetricsRepository(t.db, undefined as unknown as Redis, 'energy-test:');
});

afterAll(async () => {
  await sql?.end();
  await t?.drop();
});

describe('hourly energy rollup', () => {
  it('answers like the raw readings for batches written out of order and overlapping in time, before and after compaction', async () => {
    const rand = rng(20260510);
    const batches: Row[][] = [];
    for (const [i, d] of devices.entries()) {
      // device 3 has no reading in the range's first day; device 4 sits outside the site's subtree
      const rs = counter(rand, i === 3 ? T0 + DAY : T0 - 2 * DAY, T0 + 4 * DAY);
      written.set(d, rs);
      // interleaved subsets of the same hours (overlapping partials) and whole shuffled chunks
      const interleaved = rs.map((r) => toRow(d, r));
      for (let k = 0; k < interleaved.length; k += 60) {
        const chunk = interleaved.slice(k, k + 60);
        batches.push(chunk.filter((_, j) => j % 3 === 0));
        batches.push(chunk.filter((_, j) => j % 3 !== 0));
      }
    }
    shuffle(rand, batches);
    // mix devices in batches: pairs of batches go together
    const w = new BatchWriter(t.url);
    try {
      for (let i = 0; i < batches.length; i += 2) {
        const r = await w.write([...(batches[i] ?? []), ...(batches[i + 1] ?? [])], []);
        expect(r.path).toBe('fast');
      }
      // a redelivered batch and a partly redelivered one do not count twice
      const again = batches[0] as Row[];
      expect(await w.write(again, [])).toMatchObject({ inserted: 0, path: 'staged' });
      expect(await w.write([...(batches[1] as Row[]), ...again], [])).toMatchObject({ inserted: 0, path: 'staged' });
    } finally {
      await w.close();
    }
    expect(await pending()).toBeGreaterThan(0);
    await allMatch('pending partials');

    const c = await compactRollups(sql);
    expect(c?.energyRecomputed).toBeGreaterThan(0);
    expect(await pending()).toBe(0);
    await rollupEqualsReadings();
    await allMatch('compacted');
  });

  it('counts readings committed after compaction at once, and folds them into the stored hours', async () => {
    const rand = rng(7);
    const d = devices[0] as string;
    const rs = written.get(d) as CounterReading[];
    const taken = new Set(rs.map((r) => r.t));
    // new readings in hours already compacted (between existing ones and after the last), with a reset
    const extra: CounterReading[] = [];
    for (let k = 0; k < 40; k++) {
      const ts = T0 + Math.floor((rand() * 3 * DAY) / 1000) * 1000;
      if (taken.has(ts)) continue;
      taken.add(ts);
      extra.push({ t: ts, kwh: k === 7 ? 0.5 : Math.round(rand() * 5000) / 10 });
    }
    extra.push({ t: T0 + 4 * DAY + 5 * MINUTE, kwh: 3 });
    rs.push(...extra);
    const w = new BatchWriter(t.url);
    try {
      await w.write(
        extra.slice(0, 20).map((r) => toRow(d, r)),
        [],
      );
      await w.write(
        extra.slice(20).map((r) => toRow(d, r)),
        [],
      );
      // the same readings through the staged path (one duplicate) produce no partial
      await w.write([toRow(d, extra[0] as CounterReading)], []);
    } finally {
      await w.close();
    }
    await allMatch('late readings pending');
    await compactRollups(sql);
    await rollupEqualsReadings();
    await allMatch('late readings compacted');
  });

  it('chains partials that do not overlap without reading the raw readings again', async () => {
    const d = devices[1] as string;
    const h = T0 + 5 * DAY + 3 * HOUR;
    const rs = [
      { t: h + 5 * MINUTE, kwh: 10 },
      { t: h + 20 * MINUTE, kwh: 12 },
      { t: h + 35 * MINUTE, kwh: 1 },
      { t: h + 50 * MINUTE, kwh: 4 },
    ];
    (written.get(d) as CounterReading[]).push(...rs);
    const w = new BatchWriter(t.url);
    try {
      // later half first, then the earlier half: disjoint in time, arriving out of order
      await w.write(
        rs.slice(2).map((r) => toRow(d, r)),
        [],
      );
      await w.write(
        rs.slice(0, 2).map((r) => toRow(d, r)),
        [],
      );
    } finally {
      await w.close();
    }
    expect(await compactRollups(sql)).toMatchObject({ energyDeltas: 2, energyHourly: 1, energyRecomputed: 0 });
    const row = (
      await sql.query('select first_kwh, last_kwh, kwh, count::int from energy_hourly where device_id = $1 and bucket = $2', [
        d,
        new Date(h),
      ])
    ).rows[0];
    expect(row).toEqual({ first_kwh: 10, last_kwh: 4, kwh: 2 + 1 + 3, count: 4 });
    expectSame(await repo.energy(org, d, h, h + HOUR, HOUR), expected([d], h, h + HOUR, HOUR), 'chained hour');
  });

  it('reads readings inserted with their partials by the test fixture like ingested ones', async () => {
    const d = devices[2] as string;
    const h = T0 + 6 * DAY;
    const rs = [
      { t: h + 10 * MINUTE, kwh: 50 },
      { t: h + HOUR + 10 * MINUTE, kwh: 51.5 },
      { t: h + HOUR + 20 * MINUTE, kwh: 0.25 },
    ];
    (written.get(d) as CounterReading[]).push(...rs);
    await insertEnergy(
      t.db,
      org,
      d,
      rs.map((r) => ({ time: new Date(r.t), kwh: r.kwh })),
    );
    const want = expected([d], h, h + 2 * HOUR, HOUR);
    expectSame(await repo.energy(org, d, h, h + 2 * HOUR, HOUR), want, 'fixture, pending');
    await compactRollups(sql);
    expectSame(await repo.energy(org, d, h, h + 2 * HOUR, HOUR), want, 'fixture, compacted');
  });
});
