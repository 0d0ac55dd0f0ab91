import { describe, expect, it } from 'vitest';
import {
  addDays,
  canonicalTimeZone,
  daysBetween,
  isoWeekday,
  localDateOf,
  offsetAt,
  parseLocalDate,
  startOfLocalDay,
  zonedInstant,
} from './time-zones.js';

const iso = (t: number) => new Date(t).toISOString();

describe('time zones', () => {
  it('reads a wall-clock time inside the spring-forward gap with the offset from before it (02:30 → 03:30 CEST)', () => {
    expect(iso(zonedInstant('2026-03-29', 150, 'Europe/Amsterdam'))).toBe('2026-03-29T01:30:00.000Z');
    expect(iso(zonedInstant('2026-03-08', 150, 'America/New_York'))).toBe('2026-03-08T07:30:00.000Z');
  });

  it('reads a wall-clock time that occurs twice on the fall-back day as its first occurrence', () => {
    expect(iso(zonedInstant('2026-10-25', 150, 'Europe/Amsterdam'))).toBe('2026-10-25T00:30:00.000Z');
    expect(iso(zonedInstant('2026-11-01', 90, 'America/New_York'))).toBe('2026-11-01T05:30:00.000Z');
    // Lord Howe Island moves its clocks by 30 minutes
    expect(iso(zonedInstant('2026-04-05', 105, 'Australia/Lord_Howe'))).toBe('2026-04-04T14:45:00.000Z');
  });

  it('places ordinary times with the offset of that day on either side of a switch', () => {
    expect(iso(zonedInstant('2026-03-28', 150, 'Europe/Amsterdam'))).toBe('2026-03-28T01:30:00.000Z');
    expect(iso(zonedInstant('2026-03-29', 240, 'Europe/Amsterdam'))).toBe('2026-03-29T02:00:00.000Z');
    expect(iso(zonedInstant('2026-10-25', 240, 'Europe/Amsterdam'))).toBe('2026-10-25T03:00:00.000Z');
    expect(offsetAt(Date.parse('2026-07-01T00:00:00Z'), 'Europe/Amsterdam')).toBe(7_200_000);
  });

  it('starts a day whose midnight does not exist at the first instant it has (Santiago)', () => {
    const start = startOfLocalDay('2026-09-06', 'America/Santiago');
    expect(localDateOf(start, 'America/Santiago')).toBe('2026-09-06');
    expect(localDateOf(start - 1, 'America/Santiago')).toBe('2026-09-05');
  });

  it('does calendar arithmetic on local dates', () => {
    expect(addDays('2026-12-31', 1)).toBe('2027-01-01');
    expect(addDays('2028-03-01', -1)).toBe('2028-02-29');
    expect(daysBetween('2026-01-01', '2027-01-01')).toBe(365);
    expect(isoWeekday('2026-03-29')).toBe(7);
    expect(isoWeekday('2026-03-30')).toBe(1);
    expect(parseLocalDate('2026-02-29')).toBeNull();
    expect(parseLocalDate('2026-2-1')).toBeNull();
  });

  it('knows IANA zone names in any case and refuses offsets and made-up names', () => {
    expect(canonicalTimeZone('europe/amsterdam')).toBe('Europe/Amsterdam');
    expect(canonicalTimeZone('UTC')).toBe('UTC');
    expect(canonicalTimeZone('+01:00')).toBeNull();
    expect(canonicalTimeZone('Mars/Olympus_Mons')).toBeNull();
    expect(canonicalTimeZone("Europe/Amsterdam'; drop table sites")).toBeNull();
  });
});
