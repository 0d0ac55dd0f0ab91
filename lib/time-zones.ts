/**
 * Local dates and wall-clock times in IANA time zones, on the platform's Intl (Node 20 ships full
 * ICU), with one written rule for the two daylight-saving cases a wall-clock time can fall into
 * (RFC 5545 §3.3.5, the rule calendars already use):
 *
 * - a time that does not exist (the spring-forward gap, 02:30 in Amsterdam on the last Sunday of
 *   March) is read with the UTC offset from before the gap, so it lands as far after the gap's start
 *   as it was meant to be: 02:30 → 03:30 CEST;
 * - a time that exists twice (the autumn fall-back, 02:30 on the last Sunday of October) is the
 *   first occurrence (02:30 CEST, not 02:30 CET).
 *
 * Either way a switch point fires exactly once that day. Pure, no I/O.
 */

/** A calendar date `YYYY-MM-DD` (no time zone: a local date). */
export type LocalDate = string;

const DAY_MS = 86_400_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall clock of `instant` (ms) in `timeZone`. */
export function wallClock(
  instant: number,
  timeZone: string,
): { year: number; month: number; day: number; hour: number; minute: number; second: number } {
  const out = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const p of formatter(timeZone).formatToParts(instant)) {
    if (p.type in out) out[p.type as keyof typeof out] = Number(p.value);
  }
  return out;
}

/** The zone's UTC offset at `instant`, in ms (CEST: +7,200,000). */
export function offsetAt(instant: number, timeZone: string): number {
  const w = wallClock(instant, timeZone);
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
  return asUtc - Math.floor(instant / 1000) * 1000;
}

const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/;

/**
 * The canonical spelling of an IANA time zone name (`europe/amsterdam` → `Europe/Amsterdam`), or
 * null when the platform does not know it. Offsets such as `+01:00` are refused: they have no
 * daylight-saving rules, which is what a site's time zone is for.
 */
export function canonicalTimeZone(name: string): string | null {
  if (name.length > 64 || !ZONE_NAME.test(name)) return null;
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: name }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** `[year, month, day]` of a valid `YYYY-MM-DD`, else null (February 30 is not a date). */
export function parseLocalDate(d: string): [number, number, number] | null {
  const m = DATE.exec(d);
  if (!m) return null;
  const [y, mo, da] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const t = new Date(Date.UTC(y, mo - 1, da));
  if (t.getUTCFullYear() !== y || t.getUTCMonth() !== mo - 1 || t.getUTCDate() !== da) return null;
  return [y, mo, da];
}

function parts(d: LocalDate): [number, number, number] {
  const p = parseLocalDate(d);
  if (!p) throw new RangeError(`not a date: ${d}`);
  return p;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** `YYYY-MM-DD` of year, month (1-12), day. */
export const formatLocalDate = (y: number, m: number, d: number): LocalDate => `${pad(y, 4)}-${pad(m)}-${pad(d)}`;

/** The local date `n` days after `d` (negative: before). */
export function addDays(d: LocalDate, n: number): LocalDate {
  const [y, m, da] = parts(d);
  const t = new Date(Date.UTC(y, m - 1, da) + n * DAY_MS);
  return formatLocalDate(t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate());
}

/** Whole days from `a` to `b` (b − a). */
export function daysBetween(a: LocalDate, b: LocalDate): number {
  const [ya, ma, da] = parts(a);
  const [yb, mb, db] = parts(b);
  return Math.round((Date.UTC(yb, mb - 1, db) - Date.UTC(ya, ma - 1, da)) / DAY_MS);
}

/** ISO weekday of a local date: 1 = Monday … 7 = Sunday. */
export function isoWeekday(d: LocalDate): number {
  const [y, m, da] = parts(d);
  const w = new Date(Date.UTC(y, m - 1, da)).getUTCDay();
  return w === 0 ? 7 : w;
}

/** Days in a month (1-12) of a year. */
export const daysInMonth = (y: number, m: number) => new Date(Date.UTC(y, m, 0)).getUTCDate();

/** The local date of `instant` in `timeZone`. */
export function localDateOf(instant: number, timeZone: string): LocalDate {
  const w = wallClock(instant, timeZone);
  return formatLocalDate(w.year, w.month, w.day);
}

/**
 * The instant of a wall-clock time on a local date in `timeZone`, by the rule at the top of this
 * module: a time inside a spring-forward gap is read with the offset from before the gap; a time
 * that occurs twice is its first occurrence. `minutes` is minutes after local midnight (0..1439).
 */
export function zonedInstant(date: LocalDate, minutes: number, timeZone: string): number {
  const [y, m, d] = parts(date);
  const asUtc = Date.UTC(y, m - 1, d) + minutes * 60_000;
  // The offsets in force a day either side cover any single transition near this time.
  const before = offsetAt(asUtc - DAY_MS, timeZone);
  const after = offsetAt(asUtc + DAY_MS, timeZone);
  const candidates = [...new Set([before, after])]
    .map((off) => asUtc - off)
    .filter((t) => offsetAt(t, timeZone) === asUtc - t)
    .sort((a, b) => a - b);
  return candidates[0] ?? asUtc - before;
}

/** Local midnight (the first instant) of a local date in `timeZone`. */
export const startOfLocalDay = (date: LocalDate, timeZone: string) => zonedInstant(date, 0, timeZone);
