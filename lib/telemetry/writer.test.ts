import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/db.js';
import { insertDevice, insertOrg } from '../../test/support/telemetry-fixtures.js';
import { compactRollups } from './compactor.js';
import { energyPartialsSql } from './energy.js';
import { BatchWriter, lateRange, type Row } from './writer.js';

let t: TestDatabase;
let sql: pg.Client;
let fleet: { orgId: string; deviceIds: string[] };
let writer: BatchWriter;

beforeAll(async () => {
  t = await createTestDatabase();
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  const orgId = await insertOrg(t.db, `w-${Date.now()}`);
  fleet = { orgId, deviceIds: await Promise.all([0, 1, 2].map((i) => insertDevice(t.db, orgId, `W-${i}`, null))) };
  writer = new BatchWriter(t.url);
});

afterAll(async () => {
  await writer?.close();
  await sql?.end();
  await t?.drop();
});

const base = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 2 * 3_600_000;
function rows(from: number, n: number): Row[] {
  const out: Row[] = [];
  for (let i = from; i < from + n; i++) {
    const deviceId = fleet.deviceIds[i % 3] as string;
    const ts = base + i * 60_000;
    out.push({ ts, orgId: fleet.orgId, deviceId, metric: 'power', value: (i * 13) % 97, text: null, counter: false });
    out.push({ ts, orgId: fleet.orgId, deviceId, metric: 'energy', value: i / 10, text: null, counter: true });
    out.push({ ts, orgId: fleet.orgId, deviceId, metric: 'mode', value: null, text: i % 2 ? 'dim\tx' : 'full\\y', counter: false });
  }
  return out;
}

async function deltaCount(): Promise<number> {
  return Number((await sql.query('select count(*) n from metrics_rollup_deltas')).rows[0].n);
}

/** Rollups (with the not-yet-compacted deltas) equal aggregates of the raw rows, then again after compaction. */
async function rollupsMatchRaw(): Promise<void> {
  for (const compacted of [false, true]) {
    if (compacted) await compactRollups(sql);
    for (const [table, unit] of [
      ['metrics_hourly', 'hour'],
      ['metrics_daily', 'day'],
    ]) {
      const raw = await sql.query(
        `select date_trunc('${unit}', time, 'UTC') bucket, device_id, metric, min(value) min, max(value) max, sum(value)::numeric(20,6) sum,
                count(*)::int count, (array_agg(value order by time desc))[1] last, max(time) last_time
           from device_metrics where text is null group by 1, 2, 3 order by 1, 2, 3`,
      );
      const roll = await sql.query(
        `select bucket, device_id, metric, min, max, sum::numeric(20,6) sum, count::int count, last, last_time
           from ${compacted ? table : `${table}_live`} order by 1, 2, 3`,
      );
      expect(roll.rows).toEqual(raw.rows);
    }
  }
  expect(await deltaCount()).toBe(0);
  // the energy partials, folded, equal the partials of the stored counter readings
  expect(Number((await sql.query('select count(*) n from energy_hourly_deltas')).rows[0].n)).toBe(0);
  const cols = 'bucket, device_id, first_time, first_kwh, last_time, last_kwh, kwh::numeric(20,9) kwh, count::int count';
  expect((await sql.query(`select ${cols} from energy_hourly order by 1, 2`)).rows).toEqual(
    (await sql.query(`select ${cols} from (${energyPartialsSql('energy_readings')}) p order by 1, 2`)).rows,
  );
}

async function energyDeltaCount(): Promise<number> {
  return Number((await sql.query('select count(*) n from energy_hourly_deltas')).rows[0].n);
}

describe('BatchWriter', () => {
  it('should COPY a new batch straight into the tables with rollup deltas, energy and escaped text', async () => {
    const r = await writer.write(rows(0, 90), []);
    expect(r).toMatchObject({ inserted: 270, path: 'fast' });
    // 90 minutes of 3 devices, numeric metrics power and energy: one delta per device, metric and hour
    expect(await deltaCount()).toBe(12);
    // and one energy partial per device and hour, from its counter readings
    expect(await energyDeltaCount()).toBe(6);
    const p = await sql.query(
      `select first_kwh, last_kwh, kwh, count::int from energy_hourly_deltas where device_id = $1 order by bucket`,
      [fleet.deviceIds[0]],
    );
    const firstHour = Array.from({ length: 90 }, (_, i) => i).filter((i) => i % 3 === 0 && base + i * 60_000 < base + 3_600_000);
    expect(p.rows[0]).toMatchObject({ first_kwh: 0, last_kwh: (firstHour.at(-1) as number) / 10, count: firstHour.length });
    expect(p.rows[0].kwh).toBeCloseTo((firstHour.at(-1) as number) / 10, 9);
    const text = await sql.query(`select distinct text from device_metrics where metric = 'mode' order by 1`);
    expect(text.rows.map((x) => x.text)).toEqual(['dim\tx', 'full\\y']);
    expect(Number((await sql.query('select count(*) n from energy_readings')).rows[0].n)).toBe(90);
    await rollupsMatchRaw();
  });

  it('should skip already stored readings of a partly redelivered batch and count only the new ones in the rollups', async () => {
    const r = await writer.write(rows(60, 60), [
      { orgId: null, deviceId: null, topic: 'devices/x/telemetry', reason: 'not_json', detail: 'bad\u0000', payload: '{' },
    ]);
    expect(r).toMatchObject({ inserted: 90, path: 'staged' });
    // readings 60..89 were stored already: partials only for 90..119 (3 devices, one hour, after the stored readings)
    expect(await energyDeltaCount()).toBe(3);
    expect(Number((await sql.query('select count(*) n from device_metrics')).rows[0].n)).toBe(360);
    expect(Number((await sql.query('select count(*) n from energy_readings')).rows[0].n)).toBe(120);
    expect((await sql.query('select reason, detail from dead_letters')).rows).toEqual([{ reason: 'not_json', detail: 'bad' }]);
    await rollupsMatchRaw();
  });

  it('should change nothing when a whole batch is redelivered', async () => {
    const before = (await sql.query('select * from metrics_hourly order by device_id, metric, bucket')).rows;
    expect(await writer.write(rows(0, 120), [])).toMatchObject({ inserted: 0, path: 'staged' });
    expect(await deltaCount()).toBe(0);
    expect(await energyDeltaCount()).toBe(0);
    expect((await sql.query('select * from metrics_hourly order by device_id, metric, bucket')).rows).toEqual(before);
  });
});

describe('lateRange', () => {
  const DAY = 86_400_000;
  const D0 = Date.UTC(2026, 10, 1);
  const at = (ts: number): Row => ({ ts, orgId: 'o', deviceId: 'd', metric: 'power', value: 1, text: null, counter: false });

  it("gives a batch's late range from its oldest to its newest late reading, or none", () => {
    const batch = [at(D0 + 5 * DAY), at(D0 + 2 * DAY), at(D0 + 9 * DAY), at(D0 + 3 * DAY)];
    expect(lateRange(batch, D0 + 6 * DAY)).toEqual([D0 + 2 * DAY, D0 + 5 * DAY + 1]);
    expect(lateRange(batch, D0 + DAY)).toBeNull();
    expect(lateRange([], D0)).toBeNull();
  });
});
