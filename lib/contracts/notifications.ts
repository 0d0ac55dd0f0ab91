import { createHash } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import { z } from 'zod';
import { isUuid, reject } from './contract.js';
import { NOTIFY_QUEUE } from './queues.js';

/**
 * The `notify` queue: a request to tell people about something. Producers — the workers' alarm
 * feed (alarm raised / escalated / cleared), the rules' `notify` action — add one job per request
 * with {@link notifyJob}; the workers' notifier consumes it with {@link parseNotificationRequest},
 * resolves recipients and channels, renders the template and logs every delivery attempt
 * (docs/notifications.md). BullMQ keys live under `queuePrefix(REDIS_PREFIX)` (./queues.ts).
 *
 * Exactly once: the notifier records each request under `(orgId, dedupKey)` before it sends
 * anything, so the same request added twice (two producers, a retried producer, two workers
 * processes) is delivered once. A producer picks a key that names the occurrence, e.g.
 * `alarm:<alarmId>:raised`, `alarm:<alarmId>:escalated:<level>`, `rule:<ruleId>:<deviceId>:<firedAt>`.
 */

const CONTRACT = 'notification';

/** Name of the BullMQ queue of notification requests (declared with the others in ./queues.ts). */
export { NOTIFY_QUEUE };

/** Severities, the alarms' own (lowest last). */
export const NOTIFICATION_SEVERITIES = ['critical', 'major', 'minor', 'warning', 'indeterminate'] as const;
export type NotificationSeverity = (typeof NOTIFICATION_SEVERITIES)[number];

/** Rank of a severity: critical 4 … indeterminate 0 (a preference's minimum compares ranks). */
export const severityRank = (s: NotificationSeverity): number => 4 - NOTIFICATION_SEVERITIES.indexOf(s);

/** What happened; also the default template key of the request. */
export const NOTIFICATION_EVENTS = ['alarm.raised', 'alarm.escalated', 'alarm.cleared', 'rule.notify', 'channel.test'] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];

/** What a request is about. */
export const NOTIFICATION_SOURCES = ['alarm', 'rule', 'channel'] as const;
export type NotificationSourceKind = (typeof NOTIFICATION_SOURCES)[number];

/** Membership roles a recipients selector can name. */
export const NOTIFICATION_ROLES = ['admin', 'operator', 'viewer'] as const;
export type NotificationRole = (typeof NOTIFICATION_ROLES)[number];

/** A template key: `alarm.raised`, `rule.notify`, or an organization's own (`lamp.dark`). */
export const TEMPLATE_KEY_RE = /^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*$/;
/** A variable's name (templates say `{{name}}`). */
export const VARIABLE_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

const MAX_VARIABLES = 50;
const MAX_VALUE_LENGTH = 2000;
const MAX_LIST = 100;

export type VariableValue = string | number | boolean | null;

/**
 * Who is told. `rules: true` applies the organization's recipient rules (role + site subtree, see
 * docs/notifications.md); `roles` adds members of those roles whose scope includes the site;
 * `userIds` adds members by id; `channelIds` adds organization channels (webhook, chat) directly.
 * Everyone selected is filtered by their own preferences (channels, minimum severity, quiet hours).
 */
export interface RecipientsSelector {
  rules: boolean;
  roles: NotificationRole[];
  userIds: string[];
  channelIds: string[];
}

export interface NotificationRequest {
  orgId: string;
  /** what it is about: an alarm (its id), a rule (its id), or a channel being tested (its id) */
  source: { kind: NotificationSourceKind; id: string };
  event: NotificationEvent;
  /** the alarm's or device's site; null when it has none (recipient rules scoped to a site then do not match) */
  siteId: string | null;
  severity: NotificationSeverity;
  /** the organization's template of this key, else the built-in one of `event` */
  templateKey: string;
  /** the template's variables (strings, numbers, booleans, null) */
  variables: Record<string, VariableValue>;
  recipients: RecipientsSelector;
  /** one delivery per organization and key, see above (1–200 characters) */
  dedupKey: string;
  /**
   * When set, requests with the same group key (for alarms: site + rule) arriving within the
   * grouping window are sent as one digest that counts them and lists the first few. Null: alone.
   */
  groupKey: string | null;
  /** when it happened, ms */
  at: number;
}

const uuid = z.string().refine(isUuid, 'must be a uuid');
const schema = z.object({
  orgId: uuid,
  source: z.object({ kind: z.enum(NOTIFICATION_SOURCES), id: uuid }),
  event: z.enum(NOTIFICATION_EVENTS),
  siteId: uuid.nullable(),
  severity: z.enum(NOTIFICATION_SEVERITIES),
  templateKey: z.string().max(100).regex(TEMPLATE_KEY_RE),
  variables: z
    .record(z.string().regex(VARIABLE_NAME_RE), z.union([z.string().max(MAX_VALUE_LENGTH), z.number().finite(), z.boolean(), z.null()]))
    .refine((v) => Object.keys(v).length <= MAX_VARIABLES, `at most ${MAX_VARIABLES} variables`),
  recipients: z.object({
    rules: z.boolean(),
    roles: z.array(z.enum(NOTIFICATION_ROLES)).max(3),
    userIds: z.array(uuid).max(MAX_LIST),
    channelIds: z.array(uuid).max(MAX_LIST),
  }),
  dedupKey: z.string().min(1).max(200),
  groupKey: z.string().min(1).max(200).nullable(),
  at: z.number().int().nonnegative().refine(Number.isSafeInteger),
});

/** How a job is added: retried with backoff (the notifier fails a job when PostgreSQL is away). */
export const NOTIFY_JOB_OPTIONS = {
  removeOnComplete: 1000,
  removeOnFail: 5000,
  attempts: 8,
  backoff: { type: 'exponential', delay: 1000 },
} as const satisfies JobsOptions;

/** What a producer gives: defaults for the selector (the organization's rules), group key and time. */
export type NotificationInput = Omit<NotificationRequest, 'recipients' | 'groupKey' | 'at' | 'templateKey' | 'variables'> & {
  recipients?: Partial<RecipientsSelector>;
  groupKey?: string | null;
  at?: number;
  templateKey?: string;
  variables?: Record<string, VariableValue>;
};

/** A complete request from a producer's input (checked: throws a counted ContractError when invalid). */
export function notificationRequest(input: NotificationInput): NotificationRequest {
  const req: NotificationRequest = {
    ...input,
    templateKey: input.templateKey ?? input.event,
    variables: input.variables ?? {},
    recipients: {
      rules: input.recipients?.rules ?? true,
      roles: input.recipients?.roles ?? [],
      userIds: input.recipients?.userIds ?? [],
      channelIds: input.recipients?.channelIds ?? [],
    },
    groupKey: input.groupKey ?? null,
    at: input.at ?? Date.now(),
  };
  return parseNotificationRequest(req);
}

/**
 * The BullMQ job id of a request: the same `(orgId, dedupKey)` is one job while BullMQ keeps it
 * (the notifier's table is what makes it once for good).
 */
export const notifyJobId = (orgId: string, dedupKey: string): string =>
  `n-${createHash('sha256').update(`${orgId}\n${dedupKey}`).digest('hex').slice(0, 32)}`;

/** One job, as `Queue.add(name, data, opts)` / `addBulk` takes it. */
export function notifyJob(input: NotificationInput): { name: 'notify'; data: NotificationRequest; opts: JobsOptions } {
  const data = notificationRequest(input);
  return { name: 'notify', data, opts: { ...NOTIFY_JOB_OPTIONS, jobId: notifyJobId(data.orgId, data.dedupKey) } };
}

/**
 * A job's data. Throws a counted ContractError naming the first bad field (never echoing its
 * value); unknown extra properties are dropped.
 */
export function parseNotificationRequest(data: unknown): NotificationRequest {
  const r = schema.safeParse(data);
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = issue?.path.join('.') || 'job';
    return reject(CONTRACT, `${path}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data as NotificationRequest;
}
