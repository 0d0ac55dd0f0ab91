import { type CalendarDefinition, minutesOf, programForDate, type SwitchPoint, solarAnchor } from './programs.js';
import { type Polar, type SolarDay, type SolarEvent, solarDay } from './solar.js';
import { addDays, type LocalDate, localDateOf, zonedInstant } from './time-zones.js';

/**
 * Where and when switch points happen: a schedule (a calendar and its programs) at a place (a
 * location and a time zone) resolved to instants, the level in force at any instant, and overrides
 * laid over it. The rules, written once here and used by the preview and the scheduler alike:
 *
 * - A switch point belongs to the local date whose program (chosen by the calendar) defines it. A
 *   fixed one is that date's wall-clock time (lib/time-zones.ts: a time in the spring-forward gap
 *   moves forward by the gap, a repeated time is its first occurrence). A solar one is that date's
 *   event plus its offset, even when that falls on the next date (Reykjavik's June sunset).
 * - A solar switch point whose event does not occur that date (polar day, polar night, white nights
 *   for civil twilight) is skipped: it does not fire, and the level set before it carries on. So
 *   "on at sunset" never fires in the midnight sun and the lamp stays off; "off at sunrise" never
 *   fires in the polar night and the lamp stays on. The preview reports each skip (POLAR_DAY,
 *   POLAR_NIGHT).
 * - Events are ordered by instant; two at the same instant apply in date order, then in the order
 *   of the program's switch points, so the later one wins.
 * - The level in force at an instant is the level of the last event at or before it.
 * - Overrides: of those active at an instant (start inclusive, expiry exclusive) the one created
 *   last wins; while one is active, program events do not change the level (they are `overridden`);
 *   when the last active one ends, the program's level at that instant resumes.
 *
 * Pure, no I/O.
 */

/** A place where a schedule runs: a (rounded) location and its time zone. */
export interface Place {
  lat: number;
  lng: number;
  timeZone: string;
}

/** A calendar with the switch points of every program it may choose (a program alone: a calendar with only a default). */
export interface Schedule {
  calendar: Pick<CalendarDefinition, 'defaultProgramId' | 'rules'>;
  programs: ReadonlyMap<string, { switchPoints: readonly SwitchPoint[] }>;
}

/** What an assignment runs, as stored: a program or a calendar. */
export interface AssignmentTarget {
  programId: string | null;
  calendarId: string | null;
}

/**
 * The schedule an assignment runs, from the organization's calendars and programs (by id), or null
 * when something it needs is missing (deleted, unreadable): such an assignment is not run.
 */
export function scheduleFor(
  target: AssignmentTarget,
  calendars: ReadonlyMap<string, Pick<CalendarDefinition, 'defaultProgramId' | 'rules'>>,
  programs: ReadonlyMap<string, { switchPoints: readonly SwitchPoint[] }>,
): Schedule | null {
  const calendar = target.calendarId
    ? calendars.get(target.calendarId)
    : target.programId
      ? { defaultProgramId: target.programId, rules: [] }
      : undefined;
  if (!calendar) return null;
  const used = new Map<string, { switchPoints: readonly SwitchPoint[] }>();
  for (const id of [calendar.defaultProgramId, ...calendar.rules.map((r) => r.programId)]) {
    const p = programs.get(id);
    if (!p) return null;
    used.set(id, p);
  }
  return { calendar, programs: used };
}

/** One program switch point resolved to an instant. */
export interface SwitchEvent {
  /** ms */
  at: number;
  /** the local date whose program defined it */
  date: LocalDate;
  programId: string;
  /** index of the switch point in its program */
  index: number;
  level: number;
  rampSeconds: number;
}

/** A solar switch point that does not fire on a date, and why. */
export interface SkippedPoint {
  date: LocalDate;
  programId: string;
  index: number;
  event: SolarEvent;
  polar: Exclude<Polar, null>;
}

/** Memoised solar days per place and date (a year of previews computes each once). */
export class SolarDays {
  private readonly days = new Map<string, SolarDay>();
  /**
   * Entries kept before the memo is emptied.
   * @default 100000
   */
  constructor(private readonly max = 100_000) {}

  get(place: Place, date: LocalDate): SolarDay {
    const key = `${place.lat},${place.lng},${place.timeZone},${date}`;
    let d = this.days.get(key);
    if (!d) {
      if (this.days.size >= this.max) this.days.clear();
      d = solarDay(place.lat, place.lng, date, place.timeZone);
      this.days.set(key, d);
    }
    return d;
  }
}

const shared = new SolarDays();

/** The instant of switch point `p` on `date` at `place`, or the polar reason it does not occur. */
export function instantOf(
  p: Pick<SwitchPoint, 'at' | 'time' | 'offsetMinutes'>,
  date: LocalDate,
  place: Place,
  solar: SolarDays = shared,
): number | Exclude<Polar, null> {
  const event = solarAnchor(p);
  if (!event) return zonedInstant(date, minutesOf(p.time ?? '00:00'), place.timeZone);
  const day = solar.get(place, date);
  const t = day[event];
  if (t === null) return (event === 'sunrise' || event === 'sunset' ? day.polar : day.civilPolar) ?? 'day';
  return t + p.offsetMinutes * 60_000;
}

/** The events and skipped points of one local date's program. */
export function dayEvents(
  schedule: Schedule,
  place: Place,
  date: LocalDate,
  solar: SolarDays = shared,
): { events: SwitchEvent[]; skipped: SkippedPoint[] } {
  const programId = programForDate(schedule.calendar, date);
  const program = schedule.programs.get(programId);
  const events: SwitchEvent[] = [];
  const skipped: SkippedPoint[] = [];
  program?.switchPoints.forEach((p, index) => {
    const at = instantOf(p, date, place, solar);
    if (typeof at === 'number') events.push({ at, date, programId, index, level: p.level, rampSeconds: p.rampSeconds });
    else skipped.push({ date, programId, index, event: solarAnchor(p) as SolarEvent, polar: at });
  });
  return { events, skipped };
}

const byTime = (a: SwitchEvent, b: SwitchEvent) => a.at - b.at || (a.date < b.date ? -1 : a.date > b.date ? 1 : a.index - b.index);

/** Days either side of a window whose events may still land inside it (offsets, sunsets after midnight). */
const MARGIN_DAYS = 2;
/**
 * How far back the level in force at a window's start is looked for.
 * @default 14
 */
export const LOOKBACK_DAYS = 14;

export interface Expansion {
  /** program events with `from <= at < to`, in order */
  events: SwitchEvent[];
  /** skipped points of the local dates of the window */
  skipped: SkippedPoint[];
  /** the last event before `from` (the level in force at `from`), or null when none within {@link LOOKBACK_DAYS} */
  before: SwitchEvent | null;
}

/** A schedule's program events at a place between two instants (ms), with what was in force before. */
export function expand(schedule: Schedule, place: Place, from: number, to: number, solar: SolarDays = shared): Expansion {
  const first = localDateOf(from, place.timeZone);
  const last = localDateOf(to - 1, place.timeZone);
  const events: SwitchEvent[] = [];
  const skipped: SkippedPoint[] = [];
  for (let d = addDays(first, -MARGIN_DAYS); d <= addDays(last, MARGIN_DAYS); d = addDays(d, 1)) {
    const r = dayEvents(schedule, place, d, solar);
    for (const e of r.events) if (e.at >= from && e.at < to) events.push(e);
    if (d >= first && d <= last) skipped.push(...r.skipped);
  }
  events.sort(byTime);
  return { events, skipped, before: lastBefore(schedule, place, from, solar) };
}

/** The last program event strictly before `t`, looking back at most {@link LOOKBACK_DAYS}. */
export function lastBefore(schedule: Schedule, place: Place, t: number, solar: SolarDays = shared): SwitchEvent | null {
  return nearest(schedule, place, t, -1, solar);
}

/** The first program event strictly after `t`, looking ahead at most {@link LOOKBACK_DAYS}, or null. */
export function nextAfter(schedule: Schedule, place: Place, t: number, solar: SolarDays = shared): SwitchEvent | null {
  return nearest(schedule, place, t, 1, solar);
}

/**
 * The nearest event strictly before (`dir` -1) or after (1) `t`: dates are walked away from `t`'s,
 * and the walk stops once a date is too far to produce anything nearer (its events land at most
 * {@link MARGIN_DAYS} from it).
 */
function nearest(schedule: Schedule, place: Place, t: number, dir: -1 | 1, solar: SolarDays): SwitchEvent | null {
  const today = localDateOf(t, place.timeZone);
  let best: SwitchEvent | null = null;
  let bestDate = '';
  for (let i = -MARGIN_DAYS; i <= LOOKBACK_DAYS; i++) {
    const d = addDays(today, dir * i);
    if (best && (dir < 0 ? addDays(d, MARGIN_DAYS) < bestDate : addDays(d, -MARGIN_DAYS) > bestDate)) break;
    for (const e of dayEvents(schedule, place, d, solar).events) {
      const side = dir < 0 ? e.at < t : e.at > t;
      if (side && (!best || dir * byTime(e, best) < 0)) {
        best = e;
        bestDate = localDateOf(e.at, place.timeZone);
      }
    }
  }
  return best;
}

/** The program's level at `t` (the last event at or before it), or null when nothing was set within {@link LOOKBACK_DAYS}. */
export function levelAt(schedule: Schedule, place: Place, t: number, solar: SolarDays = shared): number | null {
  return lastBefore(schedule, place, t + 1, solar)?.level ?? null;
}

/** An override as the schedule sees it. */
export interface OverrideWindow {
  id: string;
  level: number;
  /** ms */
  startsAt: number;
  /** ms; null: until canceled */
  expiresAt: number | null;
  /** ms, the "last" in "the last one wins" */
  createdAt: number;
}

const isActive = (o: OverrideWindow, t: number) => o.startsAt <= t && (o.expiresAt === null || t < o.expiresAt);

/** The override in force at `t`: of the active ones, the one created last (ties: the greater id). */
export function winningOverride(overrides: readonly OverrideWindow[], t: number): OverrideWindow | null {
  let win: OverrideWindow | null = null;
  for (const o of overrides) {
    if (!isActive(o, t)) continue;
    if (!win || o.createdAt > win.createdAt || (o.createdAt === win.createdAt && o.id > win.id)) win = o;
  }
  return win;
}

/** One entry of a timeline: a program switch point, an override taking over, or the program resuming. */
export interface TimelineEvent {
  at: number;
  kind: 'program' | 'override' | 'resume';
  level: number;
  rampSeconds: number;
  /** program events: the date, program and switch point */
  date: LocalDate | null;
  programId: string | null;
  index: number | null;
  overrideId: string | null;
  /** a program event while an override is in force: it does not change the level */
  overridden: boolean;
}

/**
 * The timeline between `from` and `to`: program events, with overrides laid over them. `initial` is
 * the program's level in force at `from` (for a resume before the window's first program event).
 */
export function timeline(
  expansion: Pick<Expansion, 'events' | 'before'>,
  overrides: readonly OverrideWindow[],
  from: number,
  to: number,
): TimelineEvent[] {
  const out: TimelineEvent[] = [];
  const boundaries = new Set<number>();
  for (const o of overrides) {
    if (o.startsAt >= from && o.startsAt < to) boundaries.add(o.startsAt);
    if (o.expiresAt !== null && o.expiresAt >= from && o.expiresAt < to) boundaries.add(o.expiresAt);
  }
  const marks = [...boundaries].sort((a, b) => a - b);
  let programLevel = expansion.before?.level ?? 0;
  let winner = winningOverride(overrides, from - 1);
  let m = 0;
  const flush = (until: number, inclusive: boolean) => {
    while (m < marks.length && ((marks[m] as number) < until || (inclusive && marks[m] === until))) {
      const t = marks[m++] as number;
      const next = winningOverride(overrides, t);
      if (next?.id === winner?.id) continue;
      winner = next;
      out.push(
        next
          ? { ...NO_PROGRAM, at: t, kind: 'override', level: next.level, overrideId: next.id }
          : { ...NO_PROGRAM, at: t, kind: 'resume', level: programLevel },
      );
    }
  };
  for (const e of expansion.events) {
    flush(e.at, true);
    programLevel = e.level;
    out.push({
      at: e.at,
      kind: 'program',
      level: e.level,
      rampSeconds: e.rampSeconds,
      date: e.date,
      programId: e.programId,
      index: e.index,
      overrideId: null,
      overridden: winner !== null,
    });
  }
  flush(to, false);
  return out;
}

const NO_PROGRAM = { rampSeconds: 0, date: null, programId: null, index: null, overrideId: null, overridden: false } as const;
