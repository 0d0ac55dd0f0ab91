import { describe, expect, it } from 'vitest';
import { BadInputError } from '../../lib/errors.js';
import { parseLatest, parseStatus } from './loaders.js';
import {
  aggregateValues,
  bucketStart,
  chooseSource,
  counterDelta,
  DAY,
  energyBuckets,
  HOUR,
  MAX_POINTS,
  MINUTE,
  parseAggregate,
  parseInterval,
  planSeries,
} from './series.js';

const T0 = Date.UTC(2026, 0, 5);

describe('parseInterval', () => {
  it('reads a number and a unit into milliseconds', () => {
    expect(parseInterval('1m')).toBe(MINUTE);
    expect(parseInterval('15m')).toBe(15 * MINUTE);
    expect(parseInterval('1h')).toBe(HOUR);
    expect(parseInterval('1d')).toBe(DAY);
    expect(parseInterval('1w')).toBe(7 * DAY);
    expect(parseInterval('30s')).toBe(30_000);
  });

  it.each(['', '1', 'm', '0m', '-5m', '1.5h', '1 h', '1y', '7s', '400d'])('refuses %j with BAD_USER_INPUT', (s) => {
    expect(() => parseInterval(s)).toThrow(BadInputError);
  });
});

describe('chooseSource', () => {
  it('uses daily rollups for whole days, hourly rollups for whole hours, raw rows otherwise', () => {
    expect(chooseSource(DAY)).toBe('daily');
    expect(chooseSource(7 * DAY)).toBe('daily');
    expect(chooseSource(HOUR)).toBe('hourly');
    expect(chooseSource(6 * HOUR)).toBe('hourly');
    expect(chooseSource(36 * HOUR)).toBe('hourly');
    expect(chooseSource(15 * MINUTE)).toBe('raw');
    expect(chooseSource(90 * MINUTE)).toBe('raw');
  });
});

describe('planSeries', () => {
  it('aligns the range to whole buckets of the interval', () => {
    const p = planSeries(new Date(T0 + 90 * MINUTE), new Date(T0 + 5 * HOUR + 1), '1h');
    expect(p).toEqual({ intervalMs: HOUR, source: 'hourly', from: T0 + HOUR, to: T0 + 6 * HOUR, points: 5 });
  });

  it('picks an interval from the range when none is given', () => {
    expect(planSeries(new Date(T0), new Date(T0 + 6 * HOUR)).intervalMs).toBe(MINUTE);
    expect(planSeries(new Date(T0), new Date(T0 + 7 * DAY)).intervalMs).toBe(15 * MINUTE);
    expect(planSeries(new Date(T0), new Date(T0 + 30 * DAY)).source).toBe('hourly');
    expect(planSeries(new Date(T0), new Date(T0 + 365 * DAY)).source).toBe('daily');
    expect(planSeries(new Date(T0), new Date(T0 + 20 * 365 * DAY)).intervalMs).toBe(7 * DAY);
  });

  it('refuses more than the maximum number of points and reversed ranges', () => {
    expect(() => planSeries(new Date(T0), new Date(T0 + (MAX_POINTS + 1) * MINUTE), '1m')).toThrow(/at most 10000/);
    expect(planSeries(new Date(T0), new Date(T0 + MAX_POINTS * MINUTE), '1m').points).toBe(MAX_POINTS);
    expect(() => planSeries(new Date(T0), new Date(T0), '1m')).toThrow(BadInputError);
    expect(() => planSeries(new Date(Number.NaN), new Date(T0), '1m')).toThrow(BadInputError);
  });
});

describe('parseAggregate', () => {
  it('defaults to AVG and refuses unknown names', () => {
    expect(parseAggregate(undefined)).toBe('AVG');
    expect(parseAggregate('last')).toBe('LAST');
    expect(() => parseAggregate('MEDIAN')).toThrow(BadInputError);
  });
});

describe('energy from counters', () => {
  it('treats a counter drop as a restart from zero', () => {
    expect(counterDelta(10, 12.5)).toBe(2.5);
    expect(counterDelta(1000, 3)).toBe(3);
    expect(counterDelta(5, 5)).toBe(0);
  });

  it('books each delta in the bucket of the later reading, using the reading before the range', () => {
    const r = (min: number, kwh: number) => ({ t: T0 + min * MINUTE, kwh });
    const out = energyBuckets([r(10, 100.5), r(50, 101), r(70, 102), r(80, 0.5), r(100, 1)], HOUR, r(-5, 100));
    expect([...out.entries()]).toEqual([
      [T0, 1],
      [T0 + HOUR, 1 + 0.5 + 0.5],
    ]);
    expect([...energyBuckets([r(10, 5), r(20, 6)], HOUR).values()]).toEqual([1]);
  });
});

describe('aggregateValues and bucketStart', () => {
  it('computes every aggregate of a bucket, LAST by time', () => {
    const vs = [
      { t: 3, v: 1 },
      { t: 1, v: 7 },
      { t: 2, v: -2 },
    ];
    expect(aggregateValues(vs, 'AVG')).toBe(2);
    expect(aggregateValues(vs, 'MIN')).toBe(-2);
    expect(aggregateValues(vs, 'MAX')).toBe(7);
    expect(aggregateValues(vs, 'SUM')).toBe(6);
    expect(aggregateValues(vs, 'COUNT')).toBe(3);
    expect(aggregateValues(vs, 'LAST')).toBe(1);
    expect(aggregateValues([], 'AVG')).toBeNull();
    expect(bucketStart(T0 + 7 * HOUR + 5, DAY)).toBe(T0);
  });
});

describe('status cache parsing', () => {
  it('reads latest readings sorted by metric and skips corrupt entries', () => {
    expect(parseLatest({ b: '{"ts":2,"v":1.5,"t":null}', a: '{"ts":1,"v":null,"t":"on"}', c: 'not json', d: '{"v":1}' })).toEqual([
      { metric: 'a', ts: new Date(1), value: null, text: 'on' },
      { metric: 'b', ts: new Date(2), value: 1.5, text: null },
    ]);
  });

  it('reports a device never heard from as offline without lastSeen', () => {
    expect(parseStatus({})).toEqual({ online: false, lastSeen: null });
    expect(parseStatus({ online: '1', lastSeen: '5000' })).toEqual({ online: true, lastSeen: new Date(5000) });
  });
});
