/**
 * Cron schedules as pure logic: parsing a five-field cron pattern (or `@hourly`, `@daily`,
 * `@weekly`, `@monthly`, `@yearly`) in an IANA time zone with croner, and the occurrences it has. The
 * workers run each occurrence exactly once (workers/schedules.ts); the rules subgraph validates with
 * the same functions. No I/O. See docs/alarms-rules.md.
 */
import { Cron } from 'croner';
import { canonicalTimeZone } from './time-zones.js';

/** Why a cron pattern or time zone cannot be used. */
export class ScheduleError extends Error {
  constructor(
    readonly field: 'cron' | 'timeZone',
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'ScheduleError';
  }
}

const NICKNAMES = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);

/** A validated schedule pattern. */
export interface CronSpec {
  cron: string;
  timeZone: string;
}

function compile(spec: CronSpec) {
  return new Cron(spec.cron, { timezone: spec.timeZone, paused: true, mode: '5-part' } as ConstructorParameters<typeof Cron>[1]);
}

/**
 * Validates a pattern: five fields (minute hour day-of-month month day-of-week, as crontab; no
 * seconds) or a nickname, in a known IANA time zone, that occurs at least once in the next five
 * years (`0 0 31 2 *` is refused). Returns the canonical time zone name.
 */
export function parseCron(cron: string, timeZone: string): CronSpec {
  const tz = canonicalTimeZone(timeZone);
  if (!tz) throw new ScheduleError('timeZone', `unknown time zone "${timeZone}" (use an IANA name such as Europe/Amsterdam)`);
  const c = cron.trim();
  if (!c) throw new ScheduleError('cron', 'must not be empty');
  if (c.length > 200) throw new ScheduleError('cron', 'must be at most 200 characters');
  if (c.startsWith('@')) {
    if (!NICKNAMES.has(c.toLowerCase()))
      throw new ScheduleError('cron', `unknown nickname "${c}" (use @hourly, @daily, @weekly, @monthly or @yearly)`);
  } else if (c.split(/\s+/).length !== 5) {
    throw new ScheduleError('cron', `needs five fields (minute hour day-of-month month day-of-week), found ${c.split(/\s+/).length}`);
  }
  let job: ReturnType<typeof compile>;
  try {
    job = compile({ cron: c, timeZone: tz });
  } catch (e) {
    throw new ScheduleError('cron', (e as Error).message.replace(/^CronPattern: /, ''));
  }
  const first = job.nextRun(new Date());
  if (!first || first.getTime() - Date.now() > 5 * 366 * 86_400_000) throw new ScheduleError('cron', 'never occurs (no date matches it)');
  return { cron: c, timeZone: tz };
}

/** The first occurrence strictly after `after` (ms), or null when there is none. */
export function nextOccurrence(spec: CronSpec, after: number): number | null {
  const next = compile(spec).nextRun(new Date(after));
  return next ? next.getTime() : null;
}

/** The next `n` occurrences after `after` (for previews). */
export function nextOccurrences(spec: CronSpec, after: number, n: number): number[] {
  return compile(spec)
    .nextRuns(n, new Date(after))
    .map((d) => d.getTime());
}
