import { describe, expect, it } from 'vitest';
import { dayRanges } from './late.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const D0 = Date.UTC(2026, 10, 1);

describe('late readings: the days refreshed', () => {
  it('widens queued ranges to whole UTC days and merges the ones that touch or overlap', () => {
    const ranges = dayRanges(
      [
        { from: D0 + 3 * DAY + 5, to: D0 + 3 * DAY + 10 },
        { from: D0 + 10 * HOUR, to: D0 + DAY + 1 },
        { from: D0 + 2 * DAY, to: D0 + 2 * DAY + 1 },
        { from: D0 + 7 * DAY, to: D0 + 8 * DAY },
      ],
      null,
    );
    expect(ranges).toEqual([
      [D0, D0 + 4 * DAY],
      [D0 + 7 * DAY, D0 + 8 * DAY],
    ]);
  });

  it('drops the days before the raw retention, whole days only', () => {
    const entries = [
      { from: D0, to: D0 + 10 * DAY },
      { from: D0 + DAY, to: D0 + 2 * DAY },
    ];
    expect(dayRanges(entries, D0 + 3 * DAY + 1)).toEqual([[D0 + 4 * DAY, D0 + 10 * DAY]]);
    expect(dayRanges(entries, D0 + 20 * DAY)).toEqual([]);
  });
});
