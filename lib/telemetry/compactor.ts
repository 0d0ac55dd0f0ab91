import type pg from 'pg';
import { DedicatedClient } from '../db.js';
import type { Logger } from '../logger.js';
import { counter, histogram } from '../metrics.js';
import { energyPartialsSql } from './energy.js';
import { refreshQueuedBuckets } from './timescale/late.js';
import { lateReadingAgeOf, metricRollupTables, storageInfoOf } from './timescale/mode.js';

/**
 * Folds `metrics_rollup_deltas` (appended by ingest in each batch's transaction) into `metrics_hourly`
 * and `metrics_daily`. One transaction deletes the deltas it folds (`delete … returning`), aggregates
 * them per (device, metric, hour) and per day, and upserts both rollups, so a delta is counted either
 * in the deltas table or in the rollups, never both and never neither (readers use the `_live` views).
 * A transaction-scoped advisory lock lets one compaction run at a time across every process (ingest
 * replicas and workers): the others skip their turn.
 *
 * The same transaction folds `energy_hourly_deltas` into `energy_hourly` (see {@link COMPACT_ENERGY}).
 * In TimescaleDB mode with continuous aggregates (`metrics_hourly`/`metrics_daily` are views, ingest
 * writes no metric deltas) only the energy fold runs: `energy_hourly` is a plain table in both modes;
 * after it the compactor refreshes the aggregates over the time ranges ingest queued for late readings
 * (`refreshQueuedBuckets`), as it folds late deltas on plain PostgreSQL.
 */

/** `pg_try_advisory_xact_lock` key of the compaction (any constant unique in the database). */
export const COMPACTION_LOCK = 7_252_011_431;

/**
 * Most deltas folded by one transaction (keeps a backlog from making one huge transaction).
 * @default 200000
 */
export const COMPACTION_MAX_DELTAS = 200_000;

const compactions = counter('rulr_rollup_compactions_total', 'Rollup compaction runs by outcome', ['outcome']);
const compactedDeltas = counter('rulr_rollup_deltas_compacted_total', 'Rollup deltas folded into metrics_hourly/metrics_daily');
const compactedEnergyDeltas = counter('rulr_energy_deltas_compacted_total', 'Energy partials folded into energy_hourly');
const compactionSeconds = histogram('rulr_rollup_compaction_seconds', 'Duration of a rollup compaction transaction');
const lateRefreshes = counter(
  'rulr_rollup_late_refreshes_total',
  'Refreshes of continuous aggregates over queued late readings (TimescaleDB mode) by outcome',
  ['outcome'],
);

const merge = `
  min = least(r.min, excluded.min), max = greatest(r.max, excluded.max), sum = r.sum + excluded.sum,
  count = r.count + excluded.count,
  last = case when excluded.last_time >= r.last_time then excluded.last else r.last end,
  last_time = greatest(r.last_time, excluded.last_time)`;

const COMPACT = `
  with d as (
    delete from metrics_rollup_deltas
     where ctid = any(array(select ctid from metrics_rollup_deltas limit $1))
    returning bucket, org_id, device_id, metric, min, max, sum, count, last, last_time
  ),
  h as (
    select bucket, org_id, device_id, metric, min(min) as min, max(max) as max, sum(sum) as sum, sum(count)::bigint as count,
           (array_agg(last order by last_time desc))[1] as last, max(last_time) as last_time
      from d group by 1, 2, 3, 4
  ),
  hu as (
    insert into metrics_hourly as r (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
    select * from h order by device_id, metric, bucket
    on conflict (device_id, metric, bucket) do update set ${merge}
    returning 1
  ),
  du as (
    insert into metrics_daily as r (bucket, org_id, device_id, metric, min, max, sum, count, last, last_time)
    select date_trunc('day', bucket, 'UTC'), org_id, device_id, metric, min(min), max(max), sum(sum), sum(count)::bigint,
           (array_agg(last order by last_time desc))[1], max(last_time)
      from h group by 1, 2, 3, 4 order by 3, 4, 1
    on conflict (device_id, metric, bucket) do update set ${merge}
    returning 1
  )
  select (select count(*) from d)::int as deltas, (select count(*) from hu)::int as hourly, (select count(*) from du)::int as daily`;

/**
 * Folds energy partials per (device, hour): the deltas of whole device-hours (all of a device-hour's
 * deltas visible to the statement, so they and the readings it sees are the same set) together with
 * the stored `energy_hourly` row. Partials that do not overlap in time chain exactly, in time order:
 * kwh = kwh_a + kwh_b + increase(last_kwh_a, first_kwh_b). Partials that overlap (batches of one
 * device-hour arriving interleaved) cannot be chained: that device-hour is recomputed from its
 * `energy_readings` (same snapshot, so exactly the readings of the stored row and the deltas).
 */
export const COMPACT_ENERGY = `
  with k as (
    select distinct device_id, bucket from (select device_id, bucket from energy_hourly_deltas limit $1) s
  ),
  d as (
    delete from energy_hourly_deltas x using k where x.device_id = k.device_id and x.bucket = k.bucket
    returning x.bucket, x.org_id, x.device_id, x.first_time, x.first_kwh, x.last_time, x.last_kwh, x.kwh, x.count
  ),
  p as (
    select * from d
    union all
    -- one primary-key probe per device-hour (the limit keeps the planner from hashing the whole table)
    select h.* from k cross join lateral (
      select h.bucket, h.org_id, h.device_id, h.first_time, h.first_kwh, h.last_time, h.last_kwh, h.kwh, h.count
        from energy_hourly h where h.device_id = k.device_id and h.bucket = k.bucket limit 1) h
  ),
  w as (
    select p.*, lag(last_kwh) over o as prev_kwh,
           max(last_time) over (o rows between unbounded preceding and 1 preceding) as prev_end
      from p window o as (partition by device_id, bucket order by first_time)
  ),
  m as (
    select bucket, org_id, device_id, coalesce(bool_or(first_time <= prev_end), false) as overlap,
           min(first_time) as first_time, (array_agg(first_kwh order by first_time))[1] as first_kwh,
           max(last_time) as last_time, (array_agg(last_kwh order by last_time desc))[1] as last_kwh,
           sum(kwh + case when prev_kwh is null then 0 when first_kwh >= prev_kwh then first_kwh - prev_kwh else first_kwh end) as kwh,
           sum(count)::bigint as count
      from w group by 1, 2, 3
  ),
  r as (
    ${energyPartialsSql(`(select e.* from m cross join lateral (
        select e.time, e.org_id, e.device_id, e.counter_kwh from energy_readings e
         where e.device_id = m.device_id and e.time >= m.bucket and e.time < m.bucket + interval '1 hour' offset 0) e
       where m.overlap)`)}
  ),
  u as (
    insert into energy_hourly as h (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
    select * from (
      select bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count from m where not overlap
      union all
      select * from r
    ) x order by device_id, bucket
    on conflict (device_id, bucket) do update set first_time = excluded.first_time, first_kwh = excluded.first_kwh,
      last_time = excluded.last_time, last_kwh = excluded.last_kwh, kwh = excluded.kwh, count = excluded.count
    returning 1
  )
  select (select count(*) from d)::int as "energyDeltas", (select count(*) from u)::int as "energyHourly",
         (select count(*) from m where overlap)::int as "energyRecomputed"`;

export interface CompactionResult {
  /** deltas folded */
  deltas: number;
  /** hourly / daily rollup rows inserted or updated */
  hourly: number;
  daily: number;
  /** energy partials folded (`energy_hourly_deltas`) */
  energyDeltas: number;
  /** `energy_hourly` rows inserted or updated */
  energyHourly: number;
  /** of those, device-hours recomputed from `energy_readings` because their partials overlapped in time */
  energyRecomputed: number;
}

/**
 * One compaction on `client` (a connection NOT inside a transaction). Returns null when another
 * compaction holds the lock. Folds at most `max` deltas; `more` in the caller's hands: call again
 * while `deltas === max`. `metrics: false` (TimescaleDB continuous aggregates) folds energy partials only.
 */
export async function compactRollups(
  client: pg.ClientBase,
  max = COMPACTION_MAX_DELTAS,
  o: { metrics?: boolean } = {},
): Promise<CompactionResult | null> {
  await client.query('begin');
  try {
    const lock = await client.query<{ ok: boolean }>('select pg_try_advisory_xact_lock($1) as ok', [COMPACTION_LOCK]);
    if (!lock.rows[0]?.ok) {
      await client.query('rollback');
      return null;
    }
    const r =
      o.metrics === false
        ? { rows: [{ deltas: 0, hourly: 0, daily: 0 }] }
        : await client.query<Pick<CompactionResult, 'deltas' | 'hourly' | 'daily'>>(COMPACT, [max]);
    const e = await client.query<Pick<CompactionResult, 'energyDeltas' | 'energyHourly' | 'energyRecomputed'>>(COMPACT_ENERGY, [max]);
    await client.query('commit');
    return {
      ...(r.rows[0] ?? { deltas: 0, hourly: 0, daily: 0 }),
      ...(e.rows[0] ?? { energyDeltas: 0, energyHourly: 0, energyRecomputed: 0 }),
    };
  } catch (e) {
    await client.query('rollback').catch(() => undefined);
    throw e;
  }
}

export interface CompactorOptions {
  url: string;
  /**
   * Shortest time between two compactions while deltas keep arriving (`poke`), and the period of the
   * background timer that catches deltas left by another process.
   * @default 1000
   */
  intervalMs?: number;
  /**
   * Most of the wall time compactions may take: after a compaction of `d` ms the next one waits at
   * least `d / maxBusyFraction` ms from its start (but never longer than `maxIntervalMs`). A
   * compaction costs about one upsert per (device, metric, hour) it folds, however many deltas each
   * has, so when few devices report often (every key is in every second's deltas) compacting every
   * second cost PostgreSQL as much CPU as the raw COPY itself; waiting longer folds more deltas per
   * upsert. With light traffic compactions take milliseconds and run every `intervalMs` as before.
   * @default 0.1
   */
  maxBusyFraction?: number;
  /**
   * Longest wait between compactions while deltas arrive, whatever the last one cost (pending deltas
   * make the `_live` views read more).
   * @default 5000, or `intervalMs` when that is longer
   */
  maxIntervalMs?: number;
  logger?: Logger;
  /**
   * Fold `metrics_rollup_deltas` into `metrics_hourly`/`metrics_daily` (energy partials are folded
   * regardless). False where those are views over TimescaleDB continuous aggregates.
   * @default read once per connection from `rulr_storage_mode` (`storageInfo`): true on plain PostgreSQL
   */
  metricRollups?: boolean;
}

/**
 * Runs {@link compactRollups} on its own connection: at most every `intervalMs` after a `poke()`
 * (ingest pokes after each commit, so at low rates a batch is folded at once and under load one
 * compaction covers many batches), and on a timer of the same period; less often when compactions
 * get expensive (`maxBusyFraction`).
 */
export class RollupCompactor {
  /** its own connection: the storage mode is read once per connection */
  private readonly connection: DedicatedClient;
  /** the `metricRollups` option, or what the current connection's database says */
  private metrics = true;
  /** the database queues late readings for a continuous aggregate refresh (`refreshQueuedBuckets`) */
  private lateQueue = false;
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private ticker?: NodeJS.Timeout;
  private last = 0;
  /** wait from the start of the last compaction to the next one (`intervalMs` or more, see `maxBusyFraction`) */
  private gap: number;
  private again = false;
  private closed = false;
  private readonly intervalMs: number;

  constructor(private readonly o: CompactorOptions) {
    this.intervalMs = o.intervalMs ?? 1000;
    this.gap = this.intervalMs;
    this.connection = new DedicatedClient({
      url: o.url,
      applicationName: 'rulr-compactor',
      setup: async (c) => {
        this.metrics = o.metricRollups ?? metricRollupTables(await storageInfoOf(c));
        this.lateQueue = (await lateReadingAgeOf(c)) !== null;
      },
    });
  }

  /** Starts the background timer. */
  start(): this {
    this.ticker = setInterval(() => this.poke(), this.intervalMs);
    this.ticker.unref();
    return this;
  }

  /** Deltas were appended: compact now, or as soon as the interval since the last run allows. */
  poke(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    const wait = Math.max(0, this.last + this.gap - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.run().finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.poke();
        }
      });
    }, wait);
  }

  /**
   * Compacts until no deltas are left (or another process holds the lock), then refreshes the
   * continuous aggregates over queued late readings, if the database has that queue.
   */
  async runOnce(): Promise<number> {
    const c = await this.connection.get();
    const total = await this.compact(c);
    if (this.lateQueue) {
      const r = await refreshQueuedBuckets(c);
      if (!r || r.entries) lateRefreshes.inc({ outcome: r ? 'done' : 'locked' });
    }
    return total;
  }

  private async compact(c: pg.ClientBase): Promise<number> {
    let total = 0;
    for (;;) {
      const end = compactionSeconds.startTimer();
      const r = await compactRollups(c, COMPACTION_MAX_DELTAS, { metrics: this.metrics });
      end();
      compactions.inc({ outcome: r ? 'done' : 'locked' });
      if (!r) return total;
      total += r.deltas + r.energyDeltas;
      compactedDeltas.inc(r.deltas);
      compactedEnergyDeltas.inc(r.energyDeltas);
      if (r.deltas < COMPACTION_MAX_DELTAS && r.energyDeltas < COMPACTION_MAX_DELTAS) return total;
    }
  }

  private async run(): Promise<void> {
    this.last = Date.now();
    try {
      await this.runOnce();
      const took = Date.now() - this.last;
      const maxInterval = Math.max(this.o.maxIntervalMs ?? 5000, this.intervalMs);
      this.gap = Math.min(maxInterval, Math.max(this.intervalMs, took / (this.o.maxBusyFraction ?? 0.1)));
    } catch (e) {
      compactions.inc({ outcome: 'error' });
      this.o.logger?.warn({ err: (e as Error).message }, 'rollup compaction failed (retried)');
      await this.connection.reset();
    }
  }

  /** Stops the timers, lets a running compaction finish, closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.ticker) clearInterval(this.ticker);
    await this.running;
    await this.connection.reset();
  }
}
