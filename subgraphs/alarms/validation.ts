import { z } from 'zod';
import { ALARM_STATUSES } from '../../lib/alarms.js';
import { isUuid } from '../../lib/db.js';
import { decodeTimeIdCursor } from '../../lib/graphql-scalars.js';
import { SEVERITIES } from '../../lib/rules.js';

export { check, checkId, checkIds } from '../../lib/validation.js';

/**
 * Most alarms one page of `alarms` may return.
 * @default 500
 */
export const MAX_PAGE = 500;

/**
 * Most alarms `Device.alarms` may return per device.
 * @default 100
 */
export const MAX_DEVICE_ALARMS = 100;

/** Longest message, note or comment (the database checks the same bound). */
export const MAX_TEXT = 2000;

const uuid = z.string().refine(isUuid, 'must be a uuid');
const between = (lo: number, hi: number, what: string) =>
  z.number().int().min(lo, `${what} must be between ${lo} and ${hi}`).max(hi, `${what} must be between ${lo} and ${hi}`);

export const raiseAlarmSchema = z.object({
  deviceId: uuid,
  type: z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
  severity: z.enum(SEVERITIES),
  message: z.string().max(MAX_TEXT, `must be at most ${MAX_TEXT} characters`).nullish(),
});

/** An optional note of acknowledge/clear: blank becomes absent. */
export const noteSchema = z
  .string()
  .trim()
  .max(MAX_TEXT, `must be at most ${MAX_TEXT} characters`)
  .nullish()
  .transform((s) => (s ? s : null));

export const commentSchema = z.string().trim().min(1, 'must not be empty').max(MAX_TEXT, `must be at most ${MAX_TEXT} characters`);

/** `alarms(filter)`; an empty list is no constraint (as if left out). */
export const alarmFilterSchema = z
  .object({
    status: z.array(z.enum(ALARM_STATUSES)).nullish(),
    severity: z.array(z.enum(SEVERITIES)).nullish(),
    deviceId: uuid.nullish(),
    siteId: uuid.nullish(),
    ruleId: uuid.nullish(),
    type: z.string().max(200, 'must be at most 200 characters').nullish(),
    raisedAfter: z.date().nullish(),
    raisedBefore: z.date().nullish(),
  })
  .nullish();

export type AlarmFilterInput = NonNullable<z.output<typeof alarmFilterSchema>>;

export const pageSchema = z.object({
  first: between(1, MAX_PAGE, 'first'),
  after: z.string().max(1000).nullish(),
});

export const deviceAlarmsSchema = z.object({
  first: between(1, MAX_DEVICE_ALARMS, 'first'),
  active: z.boolean().nullish(),
});

/** Keyset position of `alarms`: `raised_at` at full (microsecond) precision, then the id. */
export interface AlarmCursor {
  raisedAt: string;
  id: string;
}

/** The position after `after`; anything not made by `encodeCursor([raisedAt, id])` is BAD_USER_INPUT. */
export function decodeAlarmCursor(after: string): AlarmCursor {
  const [raisedAt, id] = decodeTimeIdCursor(after);
  return { raisedAt, id };
}
