import { describe, expect, it } from 'vitest';
import { parseProgram } from './programs.js';
import { overrideConflicts, scheduleConflicts } from './programs-preview.js';
import { expand, levelAt, nextAfter, type OverrideWindow, type Place, type Schedule, timeline } from './programs-schedule.js';
import { solarDay } from './solar.js';
import { wallClock, zonedInstant } from './time-zones.js';

const P = '00000000-0000-4000-8000-00000000000a';
const HOLIDAY = '00000000-0000-4000-8000-00000000000b';
const AMSTERDAM: Place = { lat: 52.37, lng: 4.9, timeZone: 'Europe/Amsterdam' };
const TROMSO: Place = { lat: 69.65, lng: 18.96, timeZone: 'Europe/Oslo' };

const schedule = (switchPoints: unknown[], extra: Partial<Schedule> = {}): Schedule => ({
  calendar: { defaultProgramId: P, rules: [] },
  programs: new Map([[P, parseProgram({ name: 'p', switchPoints })]]),
  ...extra,
});
const STREET = schedule([
  { at: 'sunset', offsetMinutes: -10, level: 100 },
  { at: 'fixed', time: '00:30', level: 50 },
  { at: 'sunrise', offsetMinutes: 10, level: 0 },
]);
const at = (date: string, hhmm: string, place = AMSTERDAM) => {
  const [h, m] = hhmm.split(':').map(Number) as [number, number];
  return zonedInstant(date, h * 60 + m, place.timeZone);
};
const local = (t: number, place = AMSTERDAM) => {
  const w = wallClock(t, place.timeZone);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${w.year}-${p(w.month)}-${p(w.day)} ${p(w.hour)}:${p(w.minute)}`;
};

describe('program schedule', () => {
  it('resolves the street-lighting program to sunset -10, 00:30 and sunrise +10 in local time', () => {
    const { events, before } = expand(STREET, AMSTERDAM, at('2026-06-21', '12:00'), at('2026-06-22', '12:00'));
    const day = solarDay(AMSTERDAM.lat, AMSTERDAM.lng, '2026-06-21', AMSTERDAM.timeZone);
    const next = solarDay(AMSTERDAM.lat, AMSTERDAM.lng, '2026-06-22', AMSTERDAM.timeZone);
    expect(events.map((e) => [e.at, e.level])).toEqual([
      [(day.sunset as number) - 600_000, 100],
      [at('2026-06-22', '00:30'), 50],
      [(next.sunrise as number) + 600_000, 0],
    ]);
    expect(before).toMatchObject({ level: 0, index: 2, date: '2026-06-21' });
    expect(local(events[0]?.at as number)).toBe('2026-06-21 21:56');
  });

  it('fires a 02:30 switch point once on both daylight-saving days, by the written rule', () => {
    const s = schedule([{ at: 'fixed', time: '02:30', level: 40 }]);
    const spring = expand(s, AMSTERDAM, at('2026-03-29', '00:00'), at('2026-03-30', '00:00')).events;
    expect(spring.map((e) => new Date(e.at).toISOString())).toEqual(['2026-03-29T01:30:00.000Z']); // 03:30 CEST
    const autumn = expand(s, AMSTERDAM, at('2026-10-25', '00:00'), at('2026-10-26', '00:00')).events;
    expect(autumn.map((e) => new Date(e.at).toISOString())).toEqual(['2026-10-25T00:30:00.000Z']); // the first 02:30 (CEST)
  });

  it('keeps solar switch points at the right local times across the switch days', () => {
    const { events } = expand(STREET, AMSTERDAM, at('2026-03-28', '12:00'), at('2026-03-30', '12:00'));
    expect(events.map((e) => local(e.at))).toEqual([
      '2026-03-28 18:57',
      '2026-03-29 00:30',
      '2026-03-29 07:32',
      '2026-03-29 19:59',
      '2026-03-30 00:30',
      '2026-03-30 07:29',
    ]);
  });

  it('chooses each date its program from the calendar', () => {
    const s: Schedule = {
      calendar: { defaultProgramId: P, rules: [{ kind: 'date', from: '2026-12-24', to: '2026-12-24', programId: HOLIDAY }] },
      programs: new Map([
        [P, parseProgram({ name: 'p', switchPoints: [{ at: 'fixed', time: '23:00', level: 30 }] })],
        [HOLIDAY, parseProgram({ name: 'h', switchPoints: [{ at: 'fixed', time: '23:00', level: 100 }] })],
      ]),
    };
    const levels = expand(s, AMSTERDAM, at('2026-12-23', '00:00'), at('2026-12-26', '00:00')).events.map((e) => e.level);
    expect(levels).toEqual([30, 100, 30]);
  });

  it('skips solar switch points whose event does not occur, and the level carries on (midnight sun, polar night)', () => {
    const summer = expand(STREET, TROMSO, at('2026-06-21', '00:00', TROMSO), at('2026-06-22', '00:00', TROMSO));
    expect(summer.events.map((e) => [local(e.at, TROMSO), e.level])).toEqual([['2026-06-21 00:30', 50]]);
    expect(summer.skipped.map((s) => [s.event, s.polar])).toEqual([
      ['sunset', 'day'],
      ['sunrise', 'day'],
    ]);
    const winter = expand(STREET, TROMSO, at('2026-12-21', '00:00', TROMSO), at('2026-12-22', '00:00', TROMSO));
    expect(winter.skipped.map((s) => [s.event, s.polar])).toEqual([
      ['sunset', 'night'],
      ['sunrise', 'night'],
    ]);
  });

  it('knows the level in force and the next switch point at any instant', () => {
    expect(levelAt(STREET, AMSTERDAM, at('2026-06-21', '23:00'))).toBe(100);
    expect(levelAt(STREET, AMSTERDAM, at('2026-06-22', '01:00'))).toBe(50);
    expect(levelAt(STREET, AMSTERDAM, at('2026-06-22', '12:00'))).toBe(0);
    expect(levelAt(schedule([{ at: 'sunset', level: 100 }]), TROMSO, at('2026-06-21', '12:00', TROMSO))).toBeNull();
    expect(local(nextAfter(STREET, AMSTERDAM, at('2026-06-22', '00:30'))?.at as number)).toBe('2026-06-22 05:28');
  });
});

describe('overrides over a program', () => {
  const from = at('2026-06-21', '12:00');
  const to = at('2026-06-22', '12:00');
  const exp = expand(STREET, AMSTERDAM, from, to);
  const o = (id: string, level: number, start: string, end: string | null, createdAt: number): OverrideWindow => ({
    id,
    level,
    startsAt: at(...(start.split(' ') as [string, string])),
    expiresAt: end ? at(...(end.split(' ') as [string, string])) : null,
    createdAt,
  });

  it('starts, wins over the program, and the program resumes at expiry', () => {
    const tl = timeline(exp, [o('maint', 100, '2026-06-21 23:30', '2026-06-22 01:00', 1)], from, to);
    expect(tl.map((e) => [local(e.at), e.kind, e.level, e.overridden])).toEqual([
      ['2026-06-21 21:56', 'program', 100, false],
      ['2026-06-21 23:30', 'override', 100, false],
      ['2026-06-22 00:30', 'program', 50, true],
      ['2026-06-22 01:00', 'resume', 50, false],
      ['2026-06-22 05:28', 'program', 0, false],
    ]);
  });

  it('lets the override created last win while both are active, and hands back to the earlier one', () => {
    const tl = timeline(
      exp,
      [o('early', 20, '2026-06-21 22:00', '2026-06-22 03:00', 1), o('late', 80, '2026-06-21 23:00', '2026-06-22 01:00', 2)],
      from,
      to,
    );
    expect(tl.filter((e) => e.kind !== 'program').map((e) => [local(e.at), e.kind, e.level, e.overrideId])).toEqual([
      ['2026-06-21 22:00', 'override', 20, 'early'],
      ['2026-06-21 23:00', 'override', 80, 'late'],
      ['2026-06-22 01:00', 'override', 20, 'early'],
      ['2026-06-22 03:00', 'resume', 50, null],
    ]);
    const conflicts = overrideConflicts(
      [o('early', 20, '2026-06-21 22:00', '2026-06-22 03:00', 1), o('late', 80, '2026-06-21 23:00', '2026-06-22 01:00', 2)],
      AMSTERDAM.timeZone,
    );
    expect(conflicts).toMatchObject([
      { kind: 'OVERLAPPING_OVERRIDES', overrideIds: ['early', 'late'], from: '2026-06-21', to: '2026-06-22' },
    ]);
    expect(conflicts[0]?.message).toMatch(/override late \(created last\) wins/);
  });
});

describe('preview conflicts', () => {
  const year = (s: Schedule, place = AMSTERDAM) => scheduleConflicts(s, place, '2026-01-01', '2026-12-31');

  it('flags the seasonal trap "on at 06:00, off at sunrise": they swap in summer and the light burns all day', () => {
    const trap = schedule([
      { at: 'sunset', level: 100 },
      { at: 'fixed', time: '23:00', level: 0 },
      { at: 'fixed', time: '06:00', level: 100 },
      { at: 'sunrise', level: 0 },
    ]);
    const conflicts = year(trap);
    const cross = conflicts.filter((c) => c.kind === 'FIXED_CROSSES_SOLAR');
    expect(cross).toHaveLength(1);
    expect(cross[0]).toMatchObject({ switchPoints: [2, 3] });
    // Amsterdam's sunrise is before 06:00 CEST from early May to early August
    expect(cross[0]?.from).toMatch(/^2026-05-0/);
    expect(cross[0]?.to).toMatch(/^2026-0(7-3|8-0)/);
    expect(cross[0]?.message).toMatch(/^06:00 and sunrise swap order on \d+ days from 2026-05/);
    const neverOff = conflicts.find((c) => c.kind === 'NEVER_OFF');
    expect(neverOff?.from).toBe(cross[0]?.from);
  });

  it('finds nothing wrong with "on at sunset -10, 50 % at 00:30, off at sunrise +10" in Amsterdam', () => {
    expect(year(STREET)).toEqual([]);
  });

  it('flags a program that never switches on', () => {
    const dark = schedule([
      { at: 'fixed', time: '10:00', level: 100 },
      { at: 'fixed', time: '10:30', level: 0 },
    ]);
    expect(year(dark).map((c) => [c.kind, c.days])).toEqual([['NEVER_ON', 365]]);
  });

  it('flags polar days and nights with their dates, and the light burning through the midnight sun', () => {
    const kinds = year(STREET, TROMSO);
    const polarDay = kinds.filter((c) => c.kind === 'POLAR_DAY');
    expect(polarDay.map((c) => [c.switchPoints[0], c.from.slice(0, 7), c.to.slice(0, 7)])).toEqual([
      [0, '2026-05', '2026-07'],
      [2, '2026-05', '2026-07'],
    ]);
    // the polar night of January and the one starting in late November are separate runs
    const polarNight = kinds.filter((c) => c.kind === 'POLAR_NIGHT');
    expect(polarNight.map((c) => [c.switchPoints[0], c.from.slice(0, 7), c.to.slice(0, 7)])).toEqual([
      [0, '2026-01', '2026-01'],
      [0, '2026-11', '2026-12'],
      [2, '2026-01', '2026-01'],
      [2, '2026-11', '2026-12'],
    ]);
    expect(polarNight[1]?.message).toMatch(/^sunset-10 is skipped on \d+ days from 2026-11-\d\d to 2026-12-31: sunset does not occur/);
    // 50 % from 00:30 and no sunrise to switch it off: on at noon through the midnight sun
    expect(kinds.find((c) => c.kind === 'NEVER_OFF')?.from.slice(0, 7)).toBe('2026-05');
  });

  it('flags two solar switch points that cross in short summer nights (sunset +4 h after sunrise -4 h)', () => {
    const s = schedule([
      { at: 'sunset', offsetMinutes: 240, level: 100 },
      { at: 'sunrise', offsetMinutes: -240, level: 0 },
    ]);
    const cross = year(s).find((c) => c.kind === 'SOLAR_CROSSES_SOLAR');
    expect(cross?.from.slice(0, 7)).toMatch(/2026-0[45]/);
    expect(cross?.switchPoints).toEqual([0, 1]);
  });
});
