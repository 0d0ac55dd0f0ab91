import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';

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

const STAGE = `create temp table if not exists rulr_ingest_stage (
  ts bigint not null, org_id uuid not null, device_id uuid not null, metric text not null,
  value double precision, text text, counter boolean not null
) on commit delete rows`;

/**
 * Raw rows are COPYed into a per-connection temp table, then moved with one statement: the insert
 * into `device_metrics` skips rows already stored (a redelivered message), and only the rows it
 * actually inserted (its RETURNING) become rollup deltas (one per device, metric and UTC hour), so
 * duplicates are never counted twice. Counter metrics also go to `energy_readings`. All in one
 * transaction.
 */
const MOVE = `
  with ins as (
    insert into device_metrics (time, org_id, device_id, metric, value, text)
    select to_timestamp(ts / 1000.0), org_id, device_id, metric, value, text from rulr_ingest_stage
    on conflict do nothing
    returning time, org_id, device_id, metric, value, text
  ),
  deltas as (
    insert into metrics_rollup_deltas (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
    select date_trunc('hour', time, 'UTC'), org_id, device_id, metric, min(value), max(value), sum(value), count(*),
           (array_agg(value order by time desc))[1], max(time)
      from ins where text is null and value is not null
     group by 1, 2, 3, 4
    returning 1
  ),
  energy as (
    insert into energy_readings (time, org_id, device_id, counter_kwh)
    select to_timestamp(ts / 1000.0), org_id, device_id, value from rulr_ingest_stage where counter and value is not null
    on conflict do nothing
    returning 1
  )
  select (select count(*) from ins)::int as inserted, (select count(*) from deltas)::int as deltas,
         (select count(*) from energy)::int as e`;

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

function directText(rows: Row[]): string {
  let s = '';
  for (const r of rows) {
    s += `${iso(r.ts)}\t${r.orgId}\t${r.deviceId}\t${esc(r.metric)}\t${r.value === null ? '\\N' : r.value}\t${r.text === null ? '\\N' : esc(r.text)}\n`;
  }
  return s;
}

function energyText(rows: Row[]): string {
  let s = '';
  for (const r of rows) s += `${iso(r.ts)}\t${r.orgId}\t${r.deviceId}\t${r.value}\n`;
  return s;
}

const stripNul = (s: string) => s.replace(/\0/g, '');

const HOUR = 3_600_000;

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

/**
 * A dedicated connection (its temp staging table lives as long as it does). A failed batch throws;
 * the caller retries with the same rows after `reset()`, which drops a broken connection.
 */
export class BatchWriter {
  private client?: pg.Client;

  constructor(
    /** database the batches go to (the rollup compactor of the same process uses it too) */
    readonly url: string,
  ) {}

  private async conn(): Promise<pg.Client> {
    if (this.client) return this.client;
    const c = new pg.Client({ connectionString: this.url, application_name: 'rulr-ingest', connectionTimeoutMillis: 5000 });
    c.on('error', () => {
      if (this.client === c) this.client = undefined;
    });
    await c.connect();
    try {
      await c.query("set time zone 'UTC'; set synchronous_commit = on");
      await c.query(STAGE);
    } catch (e) {
      await c.end().catch(() => undefined);
      throw e;
    }
    this.client = c;
    return c;
  }

  private copy(c: pg.Client, statement: string, text: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const stream = c.query(copyFrom(statement));
      stream.on('finish', resolve);
      stream.on('error', reject);
      stream.end(text);
    });
  }

  /**
   * Fast path first: COPY straight into `device_metrics` (and `energy_readings`) inside a savepoint,
   * then the rollup deltas aggregated here (every row was inserted), COPYed too: the transaction
   * only inserts. A unique violation (a redelivered
   * message) rolls back to the savepoint and takes the staged, duplicate-skipping path instead.
   */
  async write(rows: Row[], dead: DeadLetterRow[]): Promise<WriteResult> {
    const c = await this.conn();
    try {
      await c.query('begin');
      let inserted = 0;
      let path: WriteResult['path'] = 'none';
      let t = performance.now();
      let copyMs = 0;
      let rollupMs = 0;
      if (rows.length) {
        await c.query('savepoint fast');
        try {
          await this.copy(c, 'copy device_metrics (time, org_id, device_id, metric, value, text) from stdin', directText(rows));
          const counters = rows.filter((r) => r.counter && r.value !== null);
          if (counters.length)
            await this.copy(c, 'copy energy_readings (time, org_id, device_id, counter_kwh) from stdin', energyText(counters));
          await c.query('release savepoint fast');
          copyMs = performance.now() - t;
          t = performance.now();
          await this.deltas(c, rows);
          rollupMs = performance.now() - t;
          inserted = rows.length;
          path = 'fast';
          this.fastBatches++;
        } catch (e) {
          if ((e as { code?: string }).code !== '23505') throw e;
          await c.query('rollback to savepoint fast');
          await this.copy(c, 'copy rulr_ingest_stage from stdin', copyText(rows));
          const r = await c.query<{ inserted: number }>(MOVE);
          inserted = r.rows[0]?.inserted ?? 0;
          copyMs = performance.now() - t;
          path = 'staged';
          this.stagedBatches++;
        }
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
   * the append-only `metrics_rollup_deltas` (the compactor folds them into the rollups later).
   * Returns how many deltas were written.
   */
  private async deltas(c: pg.Client, rows: Row[]): Promise<number> {
    const groups = new Map<string, Delta>();
    for (const r of rows) {
      if (r.text !== null || r.value === null) continue;
      const bucket = r.ts - (((r.ts % HOUR) + HOUR) % HOUR);
      const k = `${r.deviceId}\u0000${r.metric}\u0000${bucket}`;
      const g = groups.get(k);
      if (!g)
        groups.set(k, {
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
      else {
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
    if (!groups.size) return 0;
    let text = '';
    for (const g of groups.values())
      text += `${iso(g.bucket)}\t${g.org}\t${g.dev}\t${esc(g.metric)}\t${g.min}\t${g.max}\t${g.sum}\t${g.n}\t${g.last}\t${iso(g.lastTs)}\n`;
    await this.copy(
      c,
      'copy metrics_rollup_deltas (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time) from stdin',
      text,
    );
    return groups.size;
  }

  /** Drops the connection (after a failure its transaction state is unknown). */
  async reset(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.reset();
  }
}
