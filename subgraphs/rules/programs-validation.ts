import { z } from 'zod';
import { isUuid } from '../../lib/db.js';
import { BadInputError } from '../../lib/errors.js';
import type { CalendarDefinition, CalendarRuleKind } from '../../lib/programs.js';
import { calendarSchema, programSchema, type SwitchAnchor, type SwitchPoint } from '../../lib/programs.js';
import { coordinateProblem } from '../../lib/solar.js';
import { canonicalTimeZone, parseLocalDate } from '../../lib/time-zones.js';
import { check } from '../../lib/validation.js';

/**
 * Arguments of the programs part of the rules subgraph: the definitions are lib/programs.ts's
 * schemas (the workers read stored rows with the same ones); this adds the GraphQL enums, scopes,
 * overrides and the preview's window.
 */

/** GraphQL's switch anchors ↔ the stored ones. */
export const SWITCH_ANCHOR_ENUM: Record<string, SwitchAnchor> = {
  FIXED: 'fixed',
  SUNRISE: 'sunrise',
  SUNSET: 'sunset',
  CIVIL_DAWN: 'civilDawn',
  CIVIL_DUSK: 'civilDusk',
};
export const CALENDAR_RULE_KIND_ENUM: Record<string, CalendarRuleKind> = {
  DATE: 'date',
  YEARLY: 'yearly',
  WEEKDAY: 'weekday',
  NTH_WEEKDAY: 'nthWeekday',
};

/**
 * Longest preview window.
 * @default 366
 */
export const MAX_PREVIEW_DAYS = 366;
/**
 * Most locations one preview returns (with their events).
 * @default 200
 */
export const MAX_PREVIEW_LOCATIONS = 200;
/**
 * Most overrides `programOverrides` lists.
 * @default 1000
 */
export const MAX_OVERRIDES = 1000;
/**
 * Longest override.
 * @default 366 days
 */
export const MAX_OVERRIDE_MS = 366 * 86_400_000;

export interface ProgramInput {
  name: string;
  description: string;
  switchPoints: SwitchPoint[];
}

/** A `ProgramInput`: BAD_USER_INPUT naming the field (`input.switchPoints.2.level: must be between 0 and 100`). */
export function parseProgramInput(input: unknown): ProgramInput {
  const r = check(programSchema, input, 'input');
  return { name: r.name, description: r.description ?? '', switchPoints: r.switchPoints };
}

/** A `ProgramCalendarInput`. */
export function parseCalendarInput(input: unknown): CalendarDefinition {
  const r = check(calendarSchema, input, 'input');
  return { name: r.name, description: r.description ?? '', defaultProgramId: r.defaultProgramId, rules: r.rules ?? [] };
}

const uuid = z.string().refine(isUuid, 'must be a uuid');

export const assignSchema = z
  .object({
    programId: uuid.nullish(),
    calendarId: uuid.nullish(),
    siteId: uuid.nullish(),
    profileId: uuid.nullish(),
    deviceId: uuid.nullish(),
  })
  .superRefine((a, ctx) => {
    if (!a.programId === !a.calendarId) ctx.addIssue({ code: 'custom', message: 'give exactly one of programId and calendarId' });
    if (!a.siteId && !a.profileId && !a.deviceId)
      ctx.addIssue({ code: 'custom', message: 'give a siteId, a profileId (or both), or a deviceId' });
    if (a.deviceId && (a.siteId || a.profileId)) {
      ctx.addIssue({ code: 'custom', path: ['deviceId'], message: 'a device assignment takes no siteId or profileId' });
    }
  });

/** An `AssignProgramInput`. */
export function parseAssign(input: unknown) {
  const a = check(assignSchema, input, 'input');
  return {
    programId: a.programId ?? null,
    calendarId: a.calendarId ?? null,
    siteId: a.siteId ?? null,
    profileId: a.profileId ?? null,
    deviceId: a.deviceId ?? null,
  };
}

export const overrideSchema = z
  .object({
    siteId: uuid.nullish(),
    deviceId: uuid.nullish(),
    level: z.number().int('must be a whole number of percent').min(0, 'must be between 0 and 100').max(100, 'must be between 0 and 100'),
    startsAt: z.date().nullish(),
    expiresAt: z.date(),
    reason: z.string().max(2000, 'must be at most 2000 characters').nullish(),
  })
  .superRefine((o, ctx) => {
    if (!o.siteId === !o.deviceId) ctx.addIssue({ code: 'custom', message: 'give exactly one of siteId and deviceId' });
  });

/** A `ProgramOverrideInput`, its start defaulting to `now`; the expiry must come after the start and within a year of it. */
export function parseOverrideInput(input: unknown, now: number) {
  const o = check(overrideSchema, input, 'input');
  const startsAt = o.startsAt ?? new Date(now);
  if (o.expiresAt.getTime() <= startsAt.getTime())
    throw new BadInputError('input.expiresAt: must be after startsAt', { field: 'input.expiresAt' });
  if (o.expiresAt.getTime() - startsAt.getTime() > MAX_OVERRIDE_MS) {
    throw new BadInputError('input.expiresAt: an override lasts at most 366 days', { field: 'input.expiresAt' });
  }
  return {
    siteId: o.siteId ?? null,
    deviceId: o.deviceId ?? null,
    level: o.level,
    startsAt,
    expiresAt: o.expiresAt,
    reason: o.reason ?? '',
  };
}

/** `solarEvents` arguments: a place on the globe, a real date, a known IANA time zone (canonical spelling). */
export function parseSolarArgs(a: { lat: unknown; lng: unknown; date: unknown; timeZone: unknown }) {
  const problem = coordinateProblem(Number(a.lat), Number(a.lng));
  if (problem) throw new BadInputError(problem, { field: problem.split(' ')[0] });
  if (typeof a.date !== 'string' || !parseLocalDate(a.date)) throw new BadInputError('date: must be a date YYYY-MM-DD', { field: 'date' });
  const timeZone = typeof a.timeZone === 'string' ? canonicalTimeZone(a.timeZone) : null;
  if (!timeZone) throw new BadInputError('timeZone: not an IANA time zone (e.g. Europe/Amsterdam)', { field: 'timeZone' });
  return { lat: Number(a.lat), lng: Number(a.lng), date: a.date, timeZone };
}

/** `programPreview` arguments: exactly one scope, a window of at most {@link MAX_PREVIEW_DAYS}. */
export function parsePreviewArgs(a: Record<string, unknown>) {
  const siteId = a.siteId ?? undefined;
  const deviceId = a.deviceId ?? undefined;
  if (!siteId === !deviceId) throw new BadInputError('give exactly one of siteId and deviceId', { field: 'siteId' });
  for (const [field, v] of [
    ['siteId', siteId],
    ['deviceId', deviceId],
  ] as const) {
    if (v !== undefined && !isUuid(v)) throw new BadInputError(`${field}: must be a uuid`, { field });
  }
  const from = a.from as Date;
  const to = a.to as Date;
  if (to.getTime() <= from.getTime()) throw new BadInputError('to: must be after from', { field: 'to' });
  if (to.getTime() - from.getTime() > MAX_PREVIEW_DAYS * 86_400_000) {
    throw new BadInputError(`to: a preview covers at most ${MAX_PREVIEW_DAYS} days`, { field: 'to' });
  }
  const first = (a.firstLocations as number | null | undefined) ?? 20;
  if (!Number.isInteger(first) || first < 0 || first > MAX_PREVIEW_LOCATIONS) {
    throw new BadInputError(`firstLocations must be between 0 and ${MAX_PREVIEW_LOCATIONS}`, { field: 'firstLocations' });
  }
  return { scope: siteId ? { siteId: siteId as string } : { deviceId: deviceId as string }, from, to, firstLocations: first };
}
