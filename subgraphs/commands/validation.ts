import { z } from 'zod';
import { JOB_STATUSES, MAX_ROLLOUT_PER_MINUTE } from '../../lib/command-jobs.js';
import { MAX_PARAMS_BYTES, MAX_TIMEOUT_S } from '../../lib/commands.js';
import { COMMAND_STATUSES } from '../../lib/contracts/commands.js';
import { isUuid } from '../../lib/db.js';
import { decodeTimeIdCursor } from '../../lib/graphql-scalars.js';

export { check, checkId, checkIds } from '../../lib/validation.js';

/**
 * Most commands one page of `commands` (or `Device.commands`) may return.
 * @default 500
 */
export const MAX_PAGE = 500;

/** Longest idempotency key (the database checks the same bound). */
export const MAX_IDEMPOTENCY_KEY = 200;

const uuid = z.string().refine(isUuid, 'must be a uuid');
const jsonObject = (what: string) =>
  z
    .record(z.string(), z.unknown(), `${what} must be an object`)
    .refine((v) => JSON.stringify(v).length <= MAX_PARAMS_BYTES, `${what} must be at most ${MAX_PARAMS_BYTES} bytes of JSON`);

export const sendCommandSchema = z.object({
  deviceId: uuid,
  name: z.string().min(1, 'must not be empty').max(64, 'must be at most 64 characters'),
  params: jsonObject('params').nullish(),
  timeoutSeconds: z
    .number()
    .int()
    .min(1, `must be between 1 and ${MAX_TIMEOUT_S}`)
    .max(MAX_TIMEOUT_S, `must be between 1 and ${MAX_TIMEOUT_S}`)
    .nullish(),
  expiresAt: z.date().nullish(),
  idempotencyKey: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_IDEMPOTENCY_KEY, `must be at most ${MAX_IDEMPOTENCY_KEY} characters`)
    .nullish(),
});
export type SendCommandInput = z.output<typeof sendCommandSchema>;

export const patchSchema = jsonObject('patch').refine((v) => Object.keys(v).length <= 64, 'at most 64 keys');
export const versionSchema = z.number().int().min(0, 'must not be negative');

const statuses = z.array(z.enum(COMMAND_STATUSES)).max(COMMAND_STATUSES.length);

export const commandFilterSchema = z
  .object({
    deviceIds: z.array(uuid).max(1000, 'at most 1000 ids').nullish(),
    siteId: uuid.nullish(),
    status: statuses.nullish(),
    jobId: uuid.nullish(),
    from: z.date().nullish(),
    to: z.date().nullish(),
  })
  .nullish();
export type CommandFilterInput = NonNullable<z.output<typeof commandFilterSchema>>;

export const pageSchema = z.object({
  first: z.number().int().min(0, 'must not be negative').max(MAX_PAGE, `at most ${MAX_PAGE}`),
  after: z.string().max(200).nullish(),
});

export const statusListSchema = statuses.nullish();

export type CommandCursor = [time: string, id: string];
export const decodeCommandCursor = (cursor: string): CommandCursor => decodeTimeIdCursor(cursor);

export const sendSiteCommandSchema = z
  .object({
    siteId: uuid,
    profileId: uuid.nullish(),
    name: z.string().min(1, 'must not be empty').max(64, 'must be at most 64 characters'),
    params: jsonObject('params').nullish(),
    rolloutPerMinute: z
      .number()
      .int()
      .min(1, `must be between 1 and ${MAX_ROLLOUT_PER_MINUTE}`)
      .max(MAX_ROLLOUT_PER_MINUTE, `must be between 1 and ${MAX_ROLLOUT_PER_MINUTE}`)
      .nullish(),
    rolloutIncrease: z
      .object({
        factor: z.number().gt(1, 'must be above 1').max(10, 'must be at most 10'),
        everySucceeded: z.number().int().min(1, 'must be at least 1'),
      })
      .nullish(),
    abortWhen: z
      .object({
        failedPercent: z.number().gt(0, 'must be above 0').max(100, 'must be at most 100'),
        minDevices: z.number().int().min(1, 'must be at least 1'),
      })
      .nullish(),
    timeoutSeconds: z
      .number()
      .int()
      .min(1, `must be between 1 and ${MAX_TIMEOUT_S}`)
      .max(MAX_TIMEOUT_S, `must be between 1 and ${MAX_TIMEOUT_S}`),
  })
  .refine((v) => !v.rolloutIncrease || v.rolloutPerMinute, {
    message: 'needs rolloutPerMinute',
    path: ['rolloutIncrease'],
  });
export type SendSiteCommandInput = z.output<typeof sendSiteCommandSchema>;

export const jobFilterSchema = z
  .object({
    siteId: uuid.nullish(),
    status: z.array(z.enum(JOB_STATUSES)).max(JOB_STATUSES.length).nullish(),
    from: z.date().nullish(),
    to: z.date().nullish(),
  })
  .nullish();
export type JobFilterInput = NonNullable<z.output<typeof jobFilterSchema>>;
