import { describe, expect, it } from 'vitest';
import { nextOccurrence, nextOccurrences, parseCron, ScheduleError } from './schedules.js';

const fail = (cron: string, tz = 'UTC') => {
  try {
    parseCron(cron, tz);
  } catch (e) {
    if (e instanceof ScheduleError) return `${e.field}: ${e.reason}`;
    throw e;
  }
  return 'ok';
};

describe('cron schedules', () => {
  it('occur at local wall-clock times across both daylight-saving changes', () => {
    const spec = parseCron('30 18 * * *', 'Europe/Amsterdam');
    const runs = nextOccurrences(spec, Date.parse('2027-03-27T12:00:00Z'), 2).map((t) => new Date(t).toISOString());
    expect(runs).toEqual(['2027-03-27T17:30:00.000Z', '2027-03-28T16:30:00.000Z']);
    const autumn = nextOccurrences(spec, Date.parse('2027-10-30T12:00:00Z'), 2).map((t) => new Date(t).toISOString());
    expect(autumn).toEqual(['2027-10-30T16:30:00.000Z', '2027-10-31T17:30:00.000Z']);
  });

  it('give the first occurrence strictly after a time', () => {
    const spec = parseCron('*/15 * * * *', 'UTC');
    expect(nextOccurrence(spec, Date.parse('2027-01-01T00:15:00Z'))).toBe(Date.parse('2027-01-01T00:30:00Z'));
    expect(nextOccurrence(parseCron('@daily', 'UTC'), Date.parse('2027-01-01T10:00:00Z'))).toBe(Date.parse('2027-01-02T00:00:00Z'));
  });

  it('refuse bad patterns and time zones with the field and a clear reason', () => {
    expect(fail('61 * * * *')).toBe('cron: Invalid value for minute: 61');
    expect(fail('* * *')).toBe('cron: needs five fields (minute hour day-of-month month day-of-week), found 3');
    expect(fail('*/5 * * * * *')).toContain('needs five fields');
    expect(fail('0 0 31 2 *')).toBe('cron: never occurs (no date matches it)');
    expect(fail('@sometimes')).toContain('unknown nickname');
    expect(fail('')).toBe('cron: must not be empty');
    expect(fail('0 * * * *', 'Mars/Olympus')).toContain('timeZone: unknown time zone');
    expect(parseCron(' 0 6 * * MON-FRI ', 'europe/amsterdam')).toEqual({ cron: '0 6 * * MON-FRI', timeZone: 'Europe/Amsterdam' });
  });
});
