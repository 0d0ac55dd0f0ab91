import { BadInputError } from '../../lib/errors.js';

/**
 * Pure rules of the metrics subgraph (no I/O): interval parsing, which table answers a series,
 * bucket alignment, and energy from cumulative counters. Unit-tested in `series.test.ts`.
 */

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Aggregates a series can ask for; rollups keep min/max/sum/count/last so every one is exact. */
export const AGGREGATES = ['AVG', 'MIN', 'MAX', 'SUM', 'COUNT', 'LAST'] as const;
export type Aggregate = (typeof AGGREGATES)[number];

/** Which table answers a series: raw rows, or the hourly/daily rollups. */
export type SeriesSource = 'raw' | 'hourly' | 'daily';

/**
 * Most points one series may return; a larger request is refused with BAD_USER_INPUT.
 * @default 10000
 */
export const MAX_POINTS = 10_000;

/** Intervals tried, smallest first, when a series is requested without one. */
export const AUTO_INTERVALS = ['1m', '5m', '15m', '1h', '6h', '1d', '7d'] as const;

/**
 * Points aimed at when the interval is chosen automatically (a chart's width, roughly).
 * @default 1000
 */
export const AUTO_TARGET_POINTS = 1000;

const UNIT_MS: Record<string, number> = { s: 1000, m: MINUTE, h: HOUR, d: DAY, w: 7 * DAY };
const INTERVAL_RE = /^([1-9][0-9]{0,5})(s|m|h|d|w)$/;

/** Parses `30s`, `1m`, `15m`, `1h`, `1d`, `1w` … into milliseconds; anything else is BAD_USER_INPUT. */
export function parseInterval(text: string): number {
  const m = INTERVAL_RE.exec(text.trim());
  if (!m) throw new BadInputError(`invalid interval "${text}": use a positive number and a unit s, m, h, d or w (e.g. 15m, 1h, 1d)`);
  const ms = Number(m[1]) * (UNIT_MS[m[2] as string] as number);
  if (ms < MINUTE && MINUTE % ms !== 0) throw new BadInputError(`invalid interval "${text}": sub-minute intervals must divide a minute`);
  if (ms > 366 * DAY) throw new BadInputError(`invalid interval "${text}": at most 366 days`);
  return ms;
}

/** Formats milliseconds as a PostgreSQL interval literal (`3600 seconds`). */
export function pgInterval(ms: number): string {
  return `${Math.round(ms / 1000)} seconds`;
}

/**
 * The coarsest table whose buckets tile the interval exactly: daily rollups when the interval is a
 * whole number of days, hourly when it is a whole number of hours, raw rows otherwise. Since
 * buckets are aligned to the Unix epoch (UTC), an N-hour bucket is exactly N hourly rollup rows, so
 * every source gives the same answer (`series.test.ts` and `test/metrics-series.test.ts` prove it).
 */
export function chooseSource(intervalMs: number): SeriesSource {
  if (intervalMs % DAY === 0) return 'daily';
  if (intervalMs % HOUR === 0) return 'hourly';
  return 'raw';
}

/** Start of the bucket holding `t`, with buckets aligned to the Unix epoch (UTC days). */
export function bucketStart(t: number, intervalMs: number): number {
  return Math.floor(t / intervalMs) * intervalMs;
}

export interface SeriesPlan {
  intervalMs: number;
  source: SeriesSource;
  /** first bucket start (from, rounded down to the interval) */
  from: number;
  /** exclusive end of the last bucket (`to` rounded up to the interval): whole buckets only */
  to: number;
  points: number;
}

/**
 * Validates a series request and decides interval and source. Buckets start at `from` rounded down
 * to the interval and before `to`; each covers a whole interval, so a rollup answers the same as
 * raw rows. Without an interval, the smallest of {@link AUTO_INTERVALS} giving at most
 * {@link AUTO_TARGET_POINTS} points is used.
 */
export function planSeries(from: Date, to: Date, interval?: string | null): SeriesPlan {
  const f = from.getTime();
  const t = to.getTime();
  if (!Number.isFinite(f) || !Number.isFinite(t)) throw new BadInputError('from and to must be valid date-times');
  if (t <= f) throw new BadInputError('to must be after from');
  let intervalMs: number;
  if (interval == null) {
    const auto = AUTO_INTERVALS.map(parseInterval).find((ms) => countBuckets(f, t, ms) <= AUTO_TARGET_POINTS);
    intervalMs = auto ?? parseInterval(AUTO_INTERVALS[AUTO_INTERVALS.length - 1] as string);
  } else {
    intervalMs = parseInterval(interval);
  }
  const points = countBuckets(f, t, intervalMs);
  if (points > MAX_POINTS) {
    throw new BadInputError(`series would return ${points} points (at most ${MAX_POINTS}): use a larger interval or a shorter range`, {
      maxPoints: MAX_POINTS,
    });
  }
  return {
    intervalMs,
    source: chooseSource(intervalMs),
    from: bucketStart(f, intervalMs),
    to: bucketStart(t - 1, intervalMs) + intervalMs,
    points,
  };
}

function countBuckets(f: number, t: number, ms: number): number {
  return Math.ceil((t - bucketStart(f, ms)) / ms);
}

/** Parses the `Aggregate` enum value (GraphQL validates it too; this guards internal callers). */
export function parseAggregate(a: string | null | undefined): Aggregate {
  const v = (a ?? 'AVG').toUpperCase();
  if (!(AGGREGATES as readonly string[]).includes(v)) throw new BadInputError(`invalid aggregate "${a}"`);
  return v as Aggregate;
}

/** One cumulative counter reading (kWh) at time `t` (ms). */
export interface CounterReading {
  t: number;
  kwh: number;
}

/**
 * Energy consumed between consecutive counter readings. A counter that drops (meter replaced,
 * controller reset, overflow) restarted from zero, so the new value itself is what was consumed
 * since the reset (Prometheus `increase()` semantics). The first reading has no predecessor and
 * counts nothing unless `previous` (the last reading before the range) is given.
 */
export function counterDelta(prev: number, cur: number): number {
  return cur >= prev ? cur - prev : cur;
}

/**
 * kWh per bucket from counter readings sorted by time: each delta is booked in the bucket of the
 * later reading (no interpolation across bucket edges; with readings every few minutes the error
 * is at most one reporting period's energy per edge). Buckets without any delta are omitted.
 */
export function energyBuckets(readings: CounterReading[], intervalMs: number, previous?: CounterReading): Map<number, number> {
  const out = new Map<number, number>();
  let prev = previous?.kwh;
  for (const r of readings) {
    if (prev !== undefined) {
      const b = bucketStart(r.t, intervalMs);
      out.set(b, (out.get(b) ?? 0) + counterDelta(prev, r.kwh));
    }
    prev = r.kwh;
  }
  return out;
}

/** Reference aggregation used by tests to check the SQL paths: raw values → one number. */
export function aggregateValues(values: { t: number; v: number }[], agg: Aggregate): number | null {
  if (values.length === 0) return null;
  switch (agg) {
    case 'AVG':
      return values.reduce((s, x) => s + x.v, 0) / values.length;
    case 'MIN':
      return Math.min(...values.map((x) => x.v));
    case 'MAX':
      return Math.max(...values.map((x) => x.v));
    case 'SUM':
      return values.reduce((s, x) => s + x.v, 0);
    case 'COUNT':
      return values.length;
    case 'LAST':
      return values.reduce((a, b) => (b.t >= a.t ? b : a)).v;
  }
}
