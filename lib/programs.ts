import { z } from 'zod';
import { isUuid } from './db.js';
import { SOLAR_EVENTS, type SolarEvent } from './solar.js';
import { daysInMonth, isoWeekday, type LocalDate, parseLocalDate } from './time-zones.js';

/**
 * Lighting programs and calendars as pure definitions (TALQ 2.7's control programs and calendars):
 * their validation, shared by the rules subgraph (which stores them) and the workers (which read them
 * back), and the calendar's choice of a program per local date. Switch points resolve to instants in
 * lib/programs-schedule.ts. See docs/programs.md. No I/O.
 */

/** What a switch point is anchored to: a wall-clock time, or a solar event of the local date. */
export const SWITCH_ANCHORS = ['fixed', ...SOLAR_EVENTS] as const;
export type SwitchAnchor = (typeof SWITCH_ANCHORS)[number];

/** One switch point: at a time (fixed `HH:MM`, or a solar event ± minutes) set a dim level, ramping. */
export interface SwitchPoint {
  at: SwitchAnchor;
  /** `HH:MM` local, for `fixed` only */
  time: string | null;
  /** minutes after (negative: before) the solar event; 0 for `fixed` */
  offsetMinutes: number;
  /** dim level 0..100; 0 switches off */
  level: number;
  /** seconds the controller takes to reach the level */
  rampSeconds: number;
}

export interface ProgramDefinition {
  name: string;
  description: string;
  switchPoints: SwitchPoint[];
}

/**
 * Most minutes a solar switch point may be moved from its event.
 * @default 240
 */
export const MAX_OFFSET_MINUTES = 240;
/**
 * Longest ramp a switch point may ask for.
 * @default 3600
 */
export const MAX_RAMP_SECONDS = 3600;
/**
 * Most switch points of one program.
 * @default 48
 */
export const MAX_SWITCH_POINTS = 48;
/**
 * Most rules of one calendar.
 * @default 100
 */
export const MAX_CALENDAR_RULES = 100;

const HHMM = /^([01]\d|2[0-3]):([0-5]\d)$/;

/** Minutes after midnight of `HH:MM`. */
export function minutesOf(time: string): number {
  const m = HHMM.exec(time);
  if (!m) throw new RangeError(`not a time: ${time}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

const name = z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters');
const description = z.string().max(2000, 'must be at most 2000 characters');
const int = (min: number, max: number, what: string) =>
  z
    .number({ error: `must be a whole number of ${what}` })
    .int(`must be a whole number of ${what}`)
    .min(min, `must be between ${min} and ${max}`)
    .max(max, `must be between ${min} and ${max}`);

export const switchPointSchema = z
  .object({
    at: z.enum(SWITCH_ANCHORS, { error: `must be one of ${SWITCH_ANCHORS.join(', ')}` }),
    time: z.string().regex(HHMM, 'must be HH:MM between 00:00 and 23:59').nullish(),
    offsetMinutes: int(-MAX_OFFSET_MINUTES, MAX_OFFSET_MINUTES, 'minutes').nullish(),
    level: int(0, 100, 'percent'),
    rampSeconds: int(0, MAX_RAMP_SECONDS, 'seconds').nullish(),
  })
  .superRefine((p, ctx) => {
    if (p.at === 'fixed') {
      if (!p.time) ctx.addIssue({ code: 'custom', path: ['time'], message: 'a fixed switch point needs a time (HH:MM)' });
      if (p.offsetMinutes) ctx.addIssue({ code: 'custom', path: ['offsetMinutes'], message: 'only solar switch points take an offset' });
    } else if (p.time) {
      ctx.addIssue({ code: 'custom', path: ['time'], message: `a ${p.at} switch point takes an offset, not a time` });
    }
  })
  .transform(
    (p): SwitchPoint => ({
      at: p.at,
      time: p.at === 'fixed' ? (p.time ?? null) : null,
      offsetMinutes: p.at === 'fixed' ? 0 : (p.offsetMinutes ?? 0),
      level: p.level,
      rampSeconds: p.rampSeconds ?? 0,
    }),
  );

/** The moment a switch point names, as text (`22:00`, `sunset-10`), for messages and keys. */
export function describeSwitchPoint(p: Pick<SwitchPoint, 'at' | 'time' | 'offsetMinutes'>): string {
  if (p.at === 'fixed') return p.time ?? '?';
  return p.offsetMinutes ? `${p.at}${p.offsetMinutes > 0 ? '+' : ''}${p.offsetMinutes}` : p.at;
}

export const switchPointsSchema = z
  .array(switchPointSchema)
  .min(1, 'a program needs at least one switch point')
  .max(MAX_SWITCH_POINTS, `at most ${MAX_SWITCH_POINTS} switch points`)
  .superRefine((points, ctx) => {
    const seen = new Map<string, number>();
    points.forEach((p, i) => {
      const key = describeSwitchPoint(p);
      const first = seen.get(key);
      if (first !== undefined) {
        ctx.addIssue({ code: 'custom', path: [i], message: `switch point ${i} repeats the moment of switch point ${first} (${key})` });
      } else seen.set(key, i);
    });
  });

export const programSchema = z.object({
  name,
  description: description.nullish(),
  switchPoints: switchPointsSchema,
});

/** Validates a program definition (GraphQL input or a stored row's JSON) and fills its defaults. */
export function parseProgram(input: unknown): z.output<typeof programSchema> & { description: string } {
  const r = programSchema.parse(input);
  return { ...r, description: r.description ?? '' };
}

/** The kinds of calendar rule, in TALQ's terms. */
export const CALENDAR_RULE_KINDS = ['date', 'yearly', 'weekday', 'nthWeekday'] as const;
export type CalendarRuleKind = (typeof CALENDAR_RULE_KINDS)[number];

/**
 * One calendar rule: the local dates it matches choose `programId`.
 * - `date`: from `from` to `to` inclusive (one date: `to` = `from`)
 * - `yearly`: every `month`/`day` (February 29 only in leap years)
 * - `weekday`: every one of `weekdays` (ISO: 1 = Monday … 7 = Sunday)
 * - `nthWeekday`: the `n`th (1..5, or -1 for the last) `weekday` of a month, of `months` (empty: every month)
 */
export type CalendarRule =
  | { kind: 'date'; from: LocalDate; to: LocalDate; programId: string }
  | { kind: 'yearly'; month: number; day: number; programId: string }
  | { kind: 'weekday'; weekdays: number[]; programId: string }
  | { kind: 'nthWeekday'; n: number; weekday: number; months: number[]; programId: string };

export interface CalendarDefinition {
  name: string;
  description: string;
  defaultProgramId: string;
  rules: CalendarRule[];
}

const uuid = z.string().refine(isUuid, 'must be a uuid');
const localDate = z.string().refine((d) => parseLocalDate(d) !== null, 'must be a date YYYY-MM-DD');
const weekday = int(1, 7, 'ISO weekdays (1 = Monday … 7 = Sunday)');
const month = int(1, 12, 'months');

/** A calendar rule as given (GraphQL input: every kind's fields optional, the kind decides which are needed). */
export const calendarRuleSchema = z
  .object({
    kind: z.enum(CALENDAR_RULE_KINDS, { error: `must be one of ${CALENDAR_RULE_KINDS.join(', ')}` }),
    programId: uuid,
    from: localDate.nullish(),
    to: localDate.nullish(),
    month: month.nullish(),
    day: int(1, 31, 'days').nullish(),
    weekdays: z.array(weekday).max(7).nullish(),
    n: z
      .number()
      .int()
      .refine((n) => (n >= 1 && n <= 5) || n === -1, 'must be 1..5, or -1 for the last')
      .nullish(),
    weekday: weekday.nullish(),
    months: z.array(month).max(12).nullish(),
  })
  .transform((r, ctx): CalendarRule => {
    const need = (field: string) => {
      ctx.addIssue({ code: 'custom', path: [field], message: `a ${r.kind} rule needs ${field}` });
      return z.NEVER;
    };
    switch (r.kind) {
      case 'date': {
        if (!r.from) return need('from');
        const to = r.to ?? r.from;
        if (to < r.from) {
          ctx.addIssue({ code: 'custom', path: ['to'], message: 'must not be before from' });
          return z.NEVER;
        }
        return { kind: 'date', from: r.from, to, programId: r.programId };
      }
      case 'yearly': {
        if (!r.month) return need('month');
        if (!r.day) return need('day');
        if (r.day > daysInMonth(2028, r.month)) {
          ctx.addIssue({ code: 'custom', path: ['day'], message: `month ${r.month} has no day ${r.day}` });
          return z.NEVER;
        }
        return { kind: 'yearly', month: r.month, day: r.day, programId: r.programId };
      }
      case 'weekday':
        if (!r.weekdays?.length) return need('weekdays');
        return { kind: 'weekday', weekdays: [...new Set(r.weekdays)].sort(), programId: r.programId };
      case 'nthWeekday':
        if (r.n === null || r.n === undefined) return need('n');
        if (!r.weekday) return need('weekday');
        return { kind: 'nthWeekday', n: r.n, weekday: r.weekday, months: [...new Set(r.months ?? [])].sort(), programId: r.programId };
    }
  });

export const calendarSchema = z.object({
  name,
  description: description.nullish(),
  defaultProgramId: uuid,
  rules: z.array(calendarRuleSchema).max(MAX_CALENDAR_RULES, `at most ${MAX_CALENDAR_RULES} rules`).nullish(),
});

/** Validates a calendar definition and fills its defaults. */
export function parseCalendar(input: unknown): CalendarDefinition {
  const r = calendarSchema.parse(input);
  return { name: r.name, description: r.description ?? '', defaultProgramId: r.defaultProgramId, rules: r.rules ?? [] };
}

/** Does a calendar rule match a local date? */
export function ruleMatches(rule: CalendarRule, date: LocalDate): boolean {
  switch (rule.kind) {
    case 'date':
      return date >= rule.from && date <= rule.to;
    case 'yearly':
      return Number(date.slice(5, 7)) === rule.month && Number(date.slice(8, 10)) === rule.day;
    case 'weekday':
      return rule.weekdays.includes(isoWeekday(date));
    case 'nthWeekday': {
      const [y, m, d] = parseLocalDate(date) ?? [0, 0, 0];
      if (rule.months.length && !rule.months.includes(m)) return false;
      if (isoWeekday(date) !== rule.weekday) return false;
      return rule.n === -1 ? d + 7 > daysInMonth(y, m) : Math.ceil(d / 7) === rule.n;
    }
  }
}

/** The program a calendar chooses for a local date: its first matching rule's, else its default. */
export function programForDate(calendar: Pick<CalendarDefinition, 'defaultProgramId' | 'rules'>, date: LocalDate): string {
  for (const r of calendar.rules) if (ruleMatches(r, date)) return r.programId;
  return calendar.defaultProgramId;
}

/** Every program a calendar may choose. */
export const programsOf = (calendar: Pick<CalendarDefinition, 'defaultProgramId' | 'rules'>): string[] => [
  ...new Set([calendar.defaultProgramId, ...calendar.rules.map((r) => r.programId)]),
];

/** A switch point's anchor as a solar event, or null when it is fixed. */
export const solarAnchor = (p: Pick<SwitchPoint, 'at'>): SolarEvent | null => (p.at === 'fixed' ? null : p.at);
