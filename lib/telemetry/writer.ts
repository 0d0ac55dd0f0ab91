import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { DedicatedClient } from '../db.js';
import { BinaryCopyWriter } from './copy-binary.js';
import { energyPartialsSql } from './energy.js';
import { lateReadingAgeOf, metricRollupTables, type RawTables, REFRESH_QUEUE, rawTablesOf, storageInfoOf } from './timescale/mode.js';

/** One reading ready for storage (resolved device, validated value). */
export interface Row {
  ts: number;
  orgId: string;
  deviceId: string;
  metric: string;
  value: number | null;
  text: string | null;
  counter: boolean;
}

/** One dead letter row (`payload` is cut to its first 2 KB here). */
export interface DeadLetterRow {
  orgId: string | null;
  deviceId: string | null;
  topic: string;
  reason: string;
  detail: string;
  payload: string;
}

export interface WriteResult {
  inserted: number;
  /** `fast` (direct COPY) or `staged` (duplicates present), with step timings for debug logs */
  path: 'fast' | 'staged' | 'none';
  copyMs: number;
  /** time spent aggregating and COPYing the rollup deltas (fast path) */
  rollupMs: number;
}

/**
 * Created by the staged transaction itself when its server connection lacks it: behind PgBouncer in
 * transaction mode a transaction may run on another server connection than the one before.
 */
const STAGE = `create temp table if not exists rulr_ingest_stage (
  ts bigint not null, org_id uuid not null, device_id uuid not null, metric text not null,
  value double precision, text text, counter boolean not null
) on commit delete rows`;

/**
 * Every batch's transaction commits durably before its PUBACKs, whatever the server's default: set
 * per transaction, since a session `SET` behind PgBouncer stays on whichever server connection ran it.
 */
const BEGIN = 'begin; set local synchronous_commit = on';

/**
 * Raw rows are COPYed into a per-connection temp table, then moved with one statement: the insert
 * into `device_metrics` skips rows already stored (a redelivered message), and only the rows it
 * actually inserted (its RETURNING) become rollup deltas (one per device, metric and UTC hour), so
 * duplicates are never counted twice. Counter metrics also go to `energy_readings`, and the counter
 * readings it actually inserted become energy partials (`energy_hourly_deltas`). All in one
 * transaction. `$1`: write the metric deltas (`BatchWriterOptions.metricRollups`).
 */
const move = (t: RawTables) => `
  with ins as (
    insert into ${t.deviceMetrics} (time, org_id, device_id, metric, value, text)
    select to_timestamp(ts / 1000.0), org_id, device_id, metric, value, text from rulr_ingest_stage
    on conflict do nothing
    returning time, org_id, device_id, metric, value, text
  ),
  deltas as (
    insert into metrics_rollup_deltas (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
    select date_trunc('hour', time, 'UTC'), org_id, device_id, metric, min(value), max(value), sum(value), count(*),
           (array_agg(value order by time desc))[1], max(time)
      from ins where $1::boolean and text is null and value is not null
     group by 1, 2, 3, 4
    returning 1
  ),
  energy as (
    insert into ${t.energyReadings} (time, org_id, device_id, counter_kwh)
    select to_timestamp(ts / 1000.0), org_id, device_id, value from rulr_ingest_stage where counter and value is not null
    on conflict do nothing
    returning time, org_id, device_id, counter_kwh
  ),
  energy_deltas as (
    insert into energy_hourly_deltas (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
    ${energyPartialsSql('energy')}
    returning 1
  )
  select (select count(*) from ins)::int as inserted, (select count(*) from deltas)::int as deltas,
         (select count(*) from energy)::int as e, (select count(*) from energy_deltas)::int as ed`;

/** The staged path's statement and the fast path's COPYs, into the tables of `rawTables`. */
const statements = (t: RawTables) => ({
  move: move(t),
  metricsCopy: `copy ${t.deviceMetrics} (time, org_id, device_id, metric, value, text) from stdin with (format binary)`,
  energyCopy: `copy ${t.energyReadings} (time, org_id, device_id, counter_kwh) from stdin with (format binary)`,
});

const QUEUE_LATE = `insert into ${REFRESH_QUEUE} (from_time, to_time) values (to_timestamp($1 / 1000.0), to_timestamp($2 / 1000.0))`;

const DEAD = `insert into dead_letters (org_id, device_id, topic, reason, detail, payload)
  select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])`;

function esc(s: string): string {
  return s.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t'));
}

/** Text-format COPY lines (PostgreSQL's `\N` for null). */
export function copyText(rows: Row[]): string {
  let s = '';
  for (const r of rows) {
    s += `${r.ts}\t${r.orgId}\t${r.deviceId}\t${esc(r.metric)}\t${r.value === null ? '\\N' : r.value}\t${r.text === null ? '\\N' : esc(r.text)}\t${r.counter ? 't' : 'f'}\n`;
  }
  return s;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Binary COPY data for `device_metrics (time, org_id, device_id, metric, value, text)`. */
export function directBinary(rows: Row[]): Buffer {
  const w = new BinaryCopyWriter(rows.length * 96 + 64);
  for (const r of rows) w.row(6).timestamptz(r.ts).uuid(r.orgId).uuid(r.deviceId).text(r.metric).float8(r.value).text(r.text);
  return w.finish();
}

/** Binary COPY data for `energy_readings (time, org_id, device_id, counter_kwh)` (rows with a value). */
function energyBinary(rows: Row[]): Buffer {
  const w = new BinaryCopyWriter(rows.length * 64 + 64);
  for (const r of rows) w.row(4).timestamptz(r.ts).uuid(r.orgId).uuid(r.deviceId).float8(r.value);
  return w.finish();
}

const stripNul = (s: string) => s.replace(/\0/g, '');

const ENERGY_DELTAS_COPY =
  'copy energy_hourly_deltas (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count) from stdin';

/**
 * COPY lines of energy partials: readings sorted by time, `kwh` the reset-aware increase between
 * consecutive readings of the hour (a drop means the counter restarted at zero).
 */
function energyDeltasText(groups: Iterable<EnergyDelta>): string {
  let text = '';
  for (const g of groups) {
    const rs = g.readings.length > 1 ? g.readings.sort((a, b) => a.ts - b.ts) : g.readings;
    const first = rs[0] as { ts: number; kwh: number };
    let last = first;
    let kwh = 0;
    for (let i = 1; i < rs.length; i++) {
      const cur = rs[i] as { ts: number; kwh: number };
      kwh += cur.kwh >= last.kwh ? cur.kwh - last.kwh : cur.kwh;
      last = cur;
    }
    text += `${iso(g.bucket)}\t${g.org}\t${g.dev}\t${iso(first.ts)}\t${first.kwh}\t${iso(last.ts)}\t${last.kwh}\t${kwh}\t${rs.length}\n`;
  }
  return text;
}

const HOUR = 3_600_000;

/** [oldest, newest + 1 ms) of the readings stamped before `before`, or null when none is. */
export function lateRange(rows: Row[], before: number): [number, number] | null {
  let from = Number.POSITIVE_INFINITY;
  let to = Number.NEGATIVE_INFINITY;
  for (const r of rows) {
    if (r.ts >= before) continue;
    if (r.ts < from) from = r.ts;
    if (r.ts > to) to = r.ts;
  }
  return to === Number.NEGATIVE_INFINITY ? null : [from, to + 1];
}

interface Delta {
  bucket: number;
  org: string;
  dev: string;
  metric: string;
  min: number;
  max: number;
  sum: number;
  n: number;
  last: number;
  lastTs: number;
}

/** Counter readings of one device in one UTC hour of a batch, folded into an `energy_hourly_deltas` row. */
interface EnergyDelta {
  bucket: number;
  org: string;
  dev: string;
  readings: { ts: number; kwh: number }[];
}

export interface BatchWriterOptions {
  /**
   * Append metric rollup deltas (`metrics_rollup_deltas`) with each batch. False where
   * `metrics_hourly`/`metrics_daily` are views over TimescaleDB continuous aggregates (deltas nobody
   * folds would pile up); energy partials (`energy_hourly_deltas`) are written in every mode.
   * @default read once per connection from `rulr_storage_mode` (`storageInfo`): true on plain PostgreSQL
   */
  metricRollups?: boolean;
}

/**
 * A dedicated connection (PgBouncer's transaction mode allowed: no session state but the time zone,
 * which PgBouncer carries over). A failed batch throws;
 * the caller retries with the same rows after `reset()`, which drops a broken connection.
 */
export class BatchWriter {
  /** the `metricRollups` option, or what the current connection's database says */
  private metrics = true;
  /** the statements naming the raw tables of this connection's database */
  private sql = statements({ deviceMetrics: 'device_metrics', energyReadings: 'energy_readings' });
  /** readings older than this (ms) queue their time range for a continuous aggregate refresh; null: never */
  private lateAge: number | null = null;

  constructor(
    /** database the batches go to (the rollup compactor of the same process uses it too) */
    readonly url: string,
    o: BatchWriterOptions = {},
  ) {
    this.connection = new DedicatedClient({
      url,
      applicationName: 'rulr-ingest',
      setup: async (c) => {
        await c.query("set time zone 'UTC'");
        this.metrics = o.metricRollups ?? metricRollupTables(await storageInfoOf(c));
        this.sql = statements(await rawTablesOf(c));
        this.lateAge = this.metrics ? null : await lateReadingAgeOf(c);
      },
    });
  }

  /** its own connection: the staging table and the storage mode are read once per connection */
  private readonly connection: DedicatedClient;

  private copy(c: pg.Client, statement: string, data: string | Buffer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const stream = c.query(copyFrom(statement));
      stream.on('finish', resolve);
      stream.on('error', reject);
      stream.end(data);
    });
  }

  /**
   * Fast path first: COPY straight into `device_metrics` (and `energy_readings`), then the rollup
   * deltas aggregated here (every row was inserted), COPYed too: the transaction only inserts. A
   * unique violation (a redelivered message) rolls the transaction back and writes the batch again
   * by the staged, duplicate-skipping path.
   */
  async write(rows: Row[], dead: DeadLetterRow[]): Promise<WriteResult> {
    const c = await this.connection.get();
    try {
      await c.query(BEGIN);
      let inserted = 0;
      let path: WriteResult['path'] = 'none';
      let t = performance.now();
      let copyMs = 0;
      let rollupMs = 0;
      if (rows.length) {
        // No savepoint around the fast path: a duplicate (only redeliveries cause one) rolls the
        // whole transaction back, nothing else having been done in it, and starts again. Two round
        // trips fewer per batch; no PostgreSQL CPU difference was measurable.
        try {
          await this.copy(c, this.sql.metricsCopy, directBinary(rows));
          const counters = rows.filter((r) => r.counter && r.value !== null);
          if (counters.length) await this.copy(c, this.sql.energyCopy, energyBinary(counters));
          copyMs = performance.now() - t;
          t = performance.now();
          await this.deltas(c, rows);
          rollupMs = performance.now() - t;
          inserted = rows.length;
          path = 'fast';
          this.fastBatches++;
        } catch (e) {
          if ((e as { code?: string }).code !== '23505') throw e;
          await c.query('rollback');
          await c.query(`${BEGIN}; ${STAGE}`);
          t = performance.now();
          await this.copy(c, 'copy rulr_ingest_stage from stdin', copyText(rows));
          const r = await c.query<{ inserted: number }>(this.sql.move, [this.metrics]);
          inserted = r.rows[0]?.inserted ?? 0;
          copyMs = performance.now() - t;
          path = 'staged';
          this.stagedBatches++;
        }
      }
      if (this.lateAge !== null && rows.length) {
        const late = lateRange(rows, Date.now() - this.lateAge);
        if (late) await c.query(QUEUE_LATE, late);
      }
      if (dead.length) {
        await c.query(DEAD, [
          dead.map((d) => d.orgId),
          dead.map((d) => d.deviceId),
          dead.map((d) => stripNul(d.topic)),
          dead.map((d) => d.reason),
          dead.map((d) => stripNul(d.detail).slice(0, 1000)),
          dead.map((d) => stripNul(d.payload).slice(0, 2048)),
        ]);
      }
      await c.query('commit');
      return { inserted, path, copyMs: Math.round(copyMs), rollupMs: Math.round(rollupMs) };
    } catch (e) {
      await this.reset();
      throw e;
    }
  }

  /** Batches written by COPY straight into the tables / through the staging table (tests, metrics). */
  fastBatches = 0;
  stagedBatches = 0;

  /**
   * One partial aggregate per (device, metric, UTC hour) of the batch's numeric rows, COPYed into
   * the append-only `metrics_rollup_deltas`, and one energy partial per (device, UTC hour) of its
   * counter rows into `energy_hourly_deltas` (the same as `energyPartialsSql`; the compactor folds
   * both into the rollups later). Returns how many metric deltas were written (none without
   * `metricRollups`).
   */
  private async deltas(c: pg.Client, rows: Row[]): Promise<number> {
    // device → hour → metric: nested maps keyed by the strings and numbers at hand (no key built
    // per reading); consecutive readings of one message share the device and hour lookups.
    const groups = new Map<string, Map<number, Map<string, Delta>>>();
    let groupCount = 0;
    const energy = new Map<string, EnergyDelta>();
    let lastDev = '';
    let lastBucket = Number.NaN;
    let hours: Map<number, Map<string, Delta>> | undefined;
    let metrics: Map<string, Delta> | undefined;
    for (const r of rows) {
      if (r.value === null) continue;
      const bucket = r.ts - (((r.ts % HOUR) + HOUR) % HOUR);
      if (r.counter) {
        // exactly the rows COPYed into energy_readings
        const ek = `${r.deviceId}\u0000${bucket}`;
        const e = energy.get(ek);
        if (e) e.readings.push({ ts: r.ts, kwh: r.value });
        else energy.set(ek, { bucket, org: r.orgId, dev: r.deviceId, readings: [{ ts: r.ts, kwh: r.value }] });
      }
      if (r.text !== null || !this.metrics) continue;
      if (r.deviceId !== lastDev || !hours) {
        lastDev = r.deviceId;
        hours = groups.get(r.deviceId);
        if (!hours) {
          hours = new Map();
          groups.set(r.deviceId, hours);
        }
        lastBucket = Number.NaN;
      }
      if (bucket !== lastBucket || !metrics) {
        lastBucket = bucket;
        metrics = hours.get(bucket);
        if (!metrics) {
          metrics = new Map();
          hours.set(bucket, metrics);
        }
      }
      const g = metrics.get(r.metric);
      if (!g) {
        metrics.set(r.metric, {
          bucket,
          org: r.orgId,
          dev: r.deviceId,
          metric: r.metric,
          min: r.value,
          max: r.value,
          sum: r.value,
          n: 1,
          last: r.value,
          lastTs: r.ts,
        });
        groupCount++;
      } else {
        if (r.value < g.min) g.min = r.value;
        if (r.value > g.max) g.max = r.value;
        g.sum += r.value;
        g.n++;
        if (r.ts >= g.lastTs) {
          g.last = r.value;
          g.lastTs = r.ts;
        }
      }
    }
    if (energy.size) await this.copy(c, ENERGY_DELTAS_COPY, energyDeltasText(energy.values()));
    if (!groupCount) return 0;
    const w = new BinaryCopyWriter(groupCount * 120 + 64);
    for (const byHour of groups.values())
      for (const byMetric of byHour.values())
        for (const g of byMetric.values())
          w.row(10)
            .timestamptz(g.bucket)
            .uuid(g.org)
            .uuid(g.dev)
            .text(g.metric)
            .float8(g.min)
            .float8(g.max)
            .float8(g.sum)
            .int8(g.n)
            .float8(g.last)
            .timestamptz(g.lastTs);
    await this.copy(
      c,
      'copy metrics_rollup_deltas (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time) from stdin (format binary)',
      w.finish(),
    );
    return groupCount;
  }

  /**
   * Opens the connection ahead of the first batch (connection, session settings, staging table),
   * so the first messages after a start do not wait for it. A failure is left to the first write.
   */
  async open(): Promise<void> {
    await this.connection.get().catch(() => undefined);
  }

  /** Drops the connection (after a failure its transaction state is unknown). */
  reset(): Promise<void> {
    return this.connection.reset();
  }

  async close(): Promise<void> {
    await this.reset();
  }
}
