import { describeSwitchPoint, programForDate, type SwitchPoint } from './programs.js';
import { expand, instantOf, type OverrideWindow, type Place, type Schedule, SolarDays, type SwitchEvent } from './programs-schedule.js';
import { addDays, type LocalDate, localDateOf, zonedInstant } from './time-zones.js';

/**
 * What a program preview flags: the mistakes no switch-point list shows at a glance (docs/programs.md):
 *
 * - `FIXED_CROSSES_SOLAR` / `SOLAR_CROSSES_SOLAR`: two switch points of a program change order in
 *   some season (OSGP's trap "on at 06:00, off at sunrise": in a Dutch summer sunrise comes first).
 *   Detected per date as where the one falls among the other's occurrences on the day before, the
 *   day and the day after; a change of that position is a crossing.
 * - `NEVER_OFF`: the light is on at solar noon (it burns in broad daylight, or through a polar day).
 * - `NEVER_ON`: the light is off for a whole night, sunset to the next sunrise (or a whole polar night).
 * - `POLAR_DAY` / `POLAR_NIGHT`: a solar switch point is skipped because its event does not occur
 *   (lib/programs-schedule.ts: the level set before it carries on).
 * - `OVERLAPPING_OVERRIDES`: two overrides of the same lights are active at once (the one created last wins).
 *
 * Each conflict says on which local dates (first, last, how many). Pure, no I/O.
 */

export const CONFLICT_KINDS = [
  'FIXED_CROSSES_SOLAR',
  'SOLAR_CROSSES_SOLAR',
  'NEVER_OFF',
  'NEVER_ON',
  'POLAR_DAY',
  'POLAR_NIGHT',
  'OVERLAPPING_OVERRIDES',
] as const;
export type ConflictKind = (typeof CONFLICT_KINDS)[number];

export interface Conflict {
  kind: ConflictKind;
  message: string;
  /** the local dates it concerns: first, last, and how many in between are affected */
  from: LocalDate;
  to: LocalDate;
  days: number;
  programId: string | null;
  /** indexes of the switch points concerned, in their program */
  switchPoints: number[];
  overrideIds: string[];
}

/** Dates collected (in any order), summarised as runs of consecutive dates. */
class Dates {
  private readonly list: LocalDate[] = [];
  add(d: LocalDate) {
    this.list.push(d);
  }
  get count() {
    return this.list.length;
  }
  /** Runs of consecutive dates: a polar night in January and another in December are two runs. */
  runs(): { from: LocalDate; to: LocalDate; days: number }[] {
    const sorted = [...new Set(this.list)].sort();
    const out: { from: LocalDate; to: LocalDate; days: number }[] = [];
    for (const d of sorted) {
      const last = out.at(-1);
      if (last && addDays(last.to, 1) === d) {
        last.to = d;
        last.days++;
      } else out.push({ from: d, to: d, days: 1 });
    }
    return out;
  }
}

const plural = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;
const between = (r: { from: LocalDate; to: LocalDate; days: number }, w = 'day') =>
  r.days === 1 ? `on ${r.from}` : `on ${plural(r.days, w)} from ${r.from} to ${r.to}`;

/** Where switch point `b` (on `date`) falls among `a`'s occurrences on the day before, the day and the day after (0..3). */
function position(a: SwitchPoint, b: SwitchPoint, date: LocalDate, place: Place, solar: SolarDays): number | null {
  const tb = instantOf(b, date, place, solar);
  if (typeof tb !== 'number') return null;
  let k = 0;
  for (const d of [addDays(date, -1), date, addDays(date, 1)]) {
    const ta = instantOf(a, d, place, solar);
    if (typeof ta !== 'number') return null;
    if (ta <= tb) k++;
  }
  return k;
}

/** Switch points of `programId` that change order on the dates the calendar gives it. */
function crossings(schedule: Schedule, programId: string, dates: LocalDate[], place: Place, solar: SolarDays): Conflict[] {
  const points = schedule.programs.get(programId)?.switchPoints ?? [];
  const out: Conflict[] = [];
  for (let i = 0; i < points.length; i++) {
    for (let j = i + 1; j < points.length; j++) {
      const a = points[i] as SwitchPoint;
      const b = points[j] as SwitchPoint;
      if (a.at === b.at) continue; // a constant distance apart: they never cross
      // compare a solar point against a fixed one (the fixed one is the yardstick)
      const [x, y, xi, yi] = b.at === 'fixed' ? [b, a, j, i] : [a, b, i, j];
      const byPosition = new Map<number, Dates>();
      for (const d of dates) {
        const k = position(x, y, d, place, solar);
        if (k === null) continue;
        const set = byPosition.get(k) ?? new Dates();
        byPosition.set(k, set);
        set.add(d);
      }
      if (byPosition.size < 2) continue;
      // the rarer order is "the season" in which they cross
      const [, rare] = [...byPosition.values()].sort((p, q) => q.count - p.count) as [Dates, Dates];
      for (const run of rare.runs()) {
        out.push({
          kind: x.at === 'fixed' ? 'FIXED_CROSSES_SOLAR' : 'SOLAR_CROSSES_SOLAR',
          message: `${describeSwitchPoint(x)} and ${describeSwitchPoint(y)} swap order ${between(run)}`,
          ...run,
          programId,
          switchPoints: [xi, yi].sort((p, q) => p - q),
          overrideIds: [],
        });
      }
    }
  }
  return out;
}

/**
 * Conflicts of a schedule at one place over the local dates `from`..`to` (inclusive), computed on
 * the program's own timeline (overrides are checked apart, by {@link overrideConflicts}).
 */
export function scheduleConflicts(
  schedule: Schedule,
  place: Place,
  from: LocalDate,
  to: LocalDate,
  solar: SolarDays = new SolarDays(),
): Conflict[] {
  // the nights of the window end on the day after it
  const expansion = expand(schedule, place, zonedInstant(from, 0, place.timeZone), zonedInstant(addDays(to, 2), 0, place.timeZone), solar);
  const out: Conflict[] = [];
  const datesByProgram = new Map<string, LocalDate[]>();
  for (let d = from; d <= to; d = addDays(d, 1)) {
    const p = programForDate(schedule.calendar, d);
    const list = datesByProgram.get(p) ?? [];
    list.push(d);
    datesByProgram.set(p, list);
  }
  for (const [programId, dates] of datesByProgram) out.push(...crossings(schedule, programId, dates, place, solar));

  // polar skips, per program, switch point and kind
  const skips = new Map<string, { programId: string; index: number; event: string; polar: 'day' | 'night'; dates: Dates }>();
  for (const s of expansion.skipped) {
    if (s.date > to) continue;
    const key = `${s.programId}:${s.index}:${s.polar}`;
    const e = skips.get(key) ?? { programId: s.programId, index: s.index, event: s.event, polar: s.polar, dates: new Dates() };
    skips.set(key, e);
    e.dates.add(s.date);
  }
  for (const s of skips.values()) {
    const point = schedule.programs.get(s.programId)?.switchPoints[s.index];
    for (const run of s.dates.runs()) {
      out.push({
        kind: s.polar === 'day' ? 'POLAR_DAY' : 'POLAR_NIGHT',
        message:
          `${point ? describeSwitchPoint(point) : s.event} is skipped ${between(run)}: ${s.event} does not occur ` +
          `(the Sun stays ${s.polar === 'day' ? 'above' : 'below'} its altitude); the level set before it carries on`,
        ...run,
        programId: s.programId,
        switchPoints: [s.index],
        overrideIds: [],
      });
    }
  }

  // what the light does at noon and through each night, on the program's own timeline
  const events = [...(expansion.before ? [expansion.before] : []), ...expansion.events];
  const levelAt = (t: number) => {
    let lo = 0;
    let hi = events.length - 1;
    let found: SwitchEvent | null = null;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = events[mid] as SwitchEvent;
      if (e.at <= t) {
        found = e;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found?.level ?? 0;
  };
  const onBetween = (a: number, b: number) => events.some((e) => e.at > a && e.at < b && e.level > 0);
  const neverOff = new Dates();
  const neverOn = new Dates();
  for (let d = from; d <= to; d = addDays(d, 1)) {
    const day = solar.get(place, d);
    if (day.polar !== 'night' && levelAt(day.solarNoon) > 0) neverOff.add(d);
    if (day.polar === 'day') continue;
    const night: [number, number] =
      day.polar === 'night'
        ? [zonedInstant(d, 0, place.timeZone), zonedInstant(addDays(d, 1), 0, place.timeZone)]
        : [day.sunset as number, solar.get(place, addDays(d, 1)).sunrise ?? zonedInstant(addDays(d, 2), 0, place.timeZone)];
    if (levelAt(night[0]) === 0 && !onBetween(night[0], night[1])) neverOn.add(d);
  }
  for (const run of neverOff.runs()) {
    out.push({
      kind: 'NEVER_OFF',
      message: `the light is still on at solar noon ${between(run)}: it does not switch off in daylight`,
      ...run,
      programId: null,
      switchPoints: [],
      overrideIds: [],
    });
  }
  for (const run of neverOn.runs()) {
    out.push({
      kind: 'NEVER_ON',
      message: `the light stays off all night ${between(run, 'night')}`,
      ...run,
      programId: null,
      switchPoints: [],
      overrideIds: [],
    });
  }
  return out;
}

/** Pairs of overrides of the same lights that are active at the same time (the one created last wins). */
export function overrideConflicts(overrides: readonly OverrideWindow[], timeZone: string): Conflict[] {
  const out: Conflict[] = [];
  const sorted = [...overrides].sort((a, b) => a.startsAt - b.startsAt || a.createdAt - b.createdAt);
  for (let i = 0; i < sorted.length; i++) {
    for (let j = i + 1; j < sorted.length; j++) {
      const a = sorted[i] as OverrideWindow;
      const b = sorted[j] as OverrideWindow;
      const start = Math.max(a.startsAt, b.startsAt);
      const end = Math.min(a.expiresAt ?? Number.POSITIVE_INFINITY, b.expiresAt ?? Number.POSITIVE_INFINITY);
      if (start >= end) continue;
      const winner = a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id) ? a : b;
      const fromDate = localDateOf(start, timeZone);
      const toDate = Number.isFinite(end) ? localDateOf(end - 1, timeZone) : fromDate;
      out.push({
        kind: 'OVERLAPPING_OVERRIDES',
        message: `two overrides are active from ${new Date(start).toISOString()}${Number.isFinite(end) ? ` to ${new Date(end).toISOString()}` : ' on'}: override ${winner.id} (created last) wins`,
        from: fromDate,
        to: toDate,
        days: Number.isFinite(end) ? Math.round((Date.parse(toDate) - Date.parse(fromDate)) / 86_400_000) + 1 : 1,
        programId: null,
        switchPoints: [],
        overrideIds: [a.id, b.id],
      });
    }
  }
  return out;
}
