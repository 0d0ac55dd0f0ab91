import { describe, expect, it } from 'vitest';
import { ZodError } from 'zod';
import { type CalendarRule, parseCalendar, parseProgram, programForDate, ruleMatches } from './programs.js';

const P1 = '00000000-0000-4000-8000-000000000001';
const P2 = '00000000-0000-4000-8000-000000000002';
const P3 = '00000000-0000-4000-8000-000000000003';

/** The first issue's path and message, as the subgraph's `check()` reports it. */
function problem(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ZodError) {
      const i = e.issues[0];
      return `${i?.path.join('.')}: ${i?.message}`;
    }
    throw e;
  }
  return 'accepted';
}

const streetLighting = {
  name: 'Street lighting',
  switchPoints: [
    { at: 'sunset', offsetMinutes: -10, level: 100 },
    { at: 'fixed', time: '00:30', level: 50, rampSeconds: 60 },
    { at: 'sunrise', offsetMinutes: 10, level: 0 },
  ],
};

describe('program definitions', () => {
  it('accepts "on at sunset -10 min, 50 % at 00:30, off at sunrise +10 min" and fills the defaults', () => {
    expect(parseProgram(streetLighting)).toEqual({
      name: 'Street lighting',
      description: '',
      switchPoints: [
        { at: 'sunset', time: null, offsetMinutes: -10, level: 100, rampSeconds: 0 },
        { at: 'fixed', time: '00:30', offsetMinutes: 0, level: 50, rampSeconds: 60 },
        { at: 'sunrise', time: null, offsetMinutes: 10, level: 0, rampSeconds: 0 },
      ],
    });
  });

  it('refuses switch points out of range, naming the point and the field', () => {
    const with1 = (p: Record<string, unknown>) => () => parseProgram({ name: 'x', switchPoints: [p] });
    expect(problem(with1({ at: 'fixed', time: '24:00', level: 1 }))).toBe('switchPoints.0.time: must be HH:MM between 00:00 and 23:59');
    expect(problem(with1({ at: 'fixed', time: '7:5', level: 1 }))).toMatch(/^switchPoints.0.time/);
    expect(problem(with1({ at: 'sunset', offsetMinutes: 300, level: 1 }))).toBe(
      'switchPoints.0.offsetMinutes: must be between -240 and 240',
    );
    expect(problem(with1({ at: 'sunset', level: 101 }))).toBe('switchPoints.0.level: must be between 0 and 100');
    expect(problem(with1({ at: 'sunset', level: 12.5 }))).toBe('switchPoints.0.level: must be a whole number of percent');
    expect(problem(with1({ at: 'sunset', level: 10, rampSeconds: -1 }))).toMatch(/rampSeconds: must be between 0 and 3600/);
    expect(problem(with1({ at: 'fixed', level: 10 }))).toBe('switchPoints.0.time: a fixed switch point needs a time (HH:MM)');
    expect(problem(with1({ at: 'fixed', time: '10:00', offsetMinutes: 5, level: 10 }))).toMatch(/only solar switch points take an offset/);
    expect(problem(with1({ at: 'sunrise', time: '10:00', level: 10 }))).toMatch(/takes an offset, not a time/);
    expect(problem(with1({ at: 'moonrise', level: 10 }))).toMatch(/^switchPoints.0.at: must be one of fixed, sunrise/);
    expect(problem(() => parseProgram({ name: 'x', switchPoints: [] }))).toBe('switchPoints: a program needs at least one switch point');
    expect(
      problem(() =>
        parseProgram({
          name: 'x',
          switchPoints: [
            { at: 'sunset', level: 100 },
            { at: 'sunset', offsetMinutes: 0, level: 0 },
          ],
        }),
      ),
    ).toBe('switchPoints.1: switch point 1 repeats the moment of switch point 0 (sunset)');
    expect(problem(() => parseProgram({ name: ' ', switchPoints: [{ at: 'sunset', level: 1 }] }))).toBe('name: must not be empty');
  });
});

describe('calendars', () => {
  const rules: CalendarRule[] = [
    { kind: 'date', from: '2026-12-24', to: '2026-12-26', programId: P1 },
    { kind: 'yearly', month: 1, day: 1, programId: P1 },
    { kind: 'nthWeekday', n: -1, weekday: 7, months: [3, 10], programId: P2 },
    { kind: 'weekday', weekdays: [6, 7], programId: P3 },
  ];
  const calendar = { defaultProgramId: P2, rules };

  it('chooses the first matching rule, else the default', () => {
    expect(programForDate(calendar, '2026-12-25')).toBe(P1); // date range
    expect(programForDate(calendar, '2027-01-01')).toBe(P1); // yearly
    expect(programForDate(calendar, '2026-03-29')).toBe(P2); // last Sunday of March, before the weekend rule
    expect(programForDate(calendar, '2026-03-22')).toBe(P3); // an ordinary Sunday
    expect(programForDate(calendar, '2026-03-23')).toBe(P2); // a Monday: default
  });

  it('matches the nth and the last weekday of a month', () => {
    const second = { kind: 'nthWeekday', n: 2, weekday: 2, months: [] as number[], programId: P1 } as const;
    expect(ruleMatches(second, '2026-06-09')).toBe(true);
    expect(ruleMatches(second, '2026-06-02')).toBe(false);
    const fifth = { kind: 'nthWeekday', n: 5, weekday: 5, months: [] as number[], programId: P1 } as const;
    expect(ruleMatches(fifth, '2026-05-29')).toBe(true); // May 2026 has five Fridays
    expect(ruleMatches(fifth, '2026-06-26')).toBe(false);
    const last = { kind: 'nthWeekday', n: -1, weekday: 5, months: [] as number[], programId: P1 } as const;
    expect(ruleMatches(last, '2026-06-26')).toBe(true);
    expect(ruleMatches({ kind: 'yearly', month: 2, day: 29, programId: P1 }, '2028-02-29')).toBe(true);
  });

  it('refuses rules that lack what their kind needs, and impossible dates', () => {
    const cal = (rule: Record<string, unknown>) => () => parseCalendar({ name: 'c', defaultProgramId: P1, rules: [rule] });
    expect(problem(cal({ kind: 'date', programId: P1 }))).toBe('rules.0.from: a date rule needs from');
    expect(problem(cal({ kind: 'date', from: '2026-02-30', programId: P1 }))).toBe('rules.0.from: must be a date YYYY-MM-DD');
    expect(problem(cal({ kind: 'date', from: '2026-05-02', to: '2026-05-01', programId: P1 }))).toBe('rules.0.to: must not be before from');
    expect(problem(cal({ kind: 'yearly', month: 4, day: 31, programId: P1 }))).toBe('rules.0.day: month 4 has no day 31');
    expect(problem(cal({ kind: 'weekday', weekdays: [0], programId: P1 }))).toMatch(/^rules.0.weekdays.0: must be between 1 and 7/);
    expect(problem(cal({ kind: 'nthWeekday', n: 6, weekday: 1, programId: P1 }))).toBe('rules.0.n: must be 1..5, or -1 for the last');
    expect(problem(cal({ kind: 'weekday', weekdays: [1], programId: 'nope' }))).toBe('rules.0.programId: must be a uuid');
    expect(parseCalendar({ name: 'c', defaultProgramId: P1 })).toEqual({ name: 'c', description: '', defaultProgramId: P1, rules: [] });
  });
});
