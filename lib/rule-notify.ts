/**
 * A rule's `notify` action: who is told when the rule raises (and, with `onClear`, clears) an alarm.
 * Stored as JSON in `rules.notify`, written by the rules subgraph and read by the workers, which
 * enqueue one `notify` request per alarm change through the notifications contract
 * (lib/contracts/notifications.ts). One parser for both. See docs/alarms-rules.md.
 */
import { z } from 'zod';
import { NOTIFICATION_ROLES, type NotificationInput, TEMPLATE_KEY_RE } from './contracts/notifications.js';
import { isUuid } from './db.js';
import type { Severity } from './rules.js';

export interface RuleNotify {
  /** apply the organization's recipient rules (role + site subtree) @default true */
  rules: boolean;
  roles: (typeof NOTIFICATION_ROLES)[number][];
  userIds: string[];
  /** the organization's template of this key, else the built-in `rule.notify` */
  templateKey: string | null;
  /** also notify when the alarm clears @default false */
  onClear: boolean;
}

export const ruleNotifySchema = z.object({
  rules: z.boolean().nullish(),
  roles: z.array(z.enum(NOTIFICATION_ROLES)).max(3, 'at most 3 roles').nullish(),
  userIds: z.array(z.string().refine(isUuid, 'must be a uuid')).max(100, 'at most 100 users').nullish(),
  templateKey: z
    .string()
    .max(100, 'must be at most 100 characters')
    .regex(TEMPLATE_KEY_RE, 'must look like lamp.dark (lower case, dots)')
    .nullish(),
  onClear: z.boolean().nullish(),
});

/** A checked `notify` input or stored value with its defaults; null stays null (no notification). */
export function parseRuleNotify(raw: unknown): RuleNotify | null {
  if (raw === null || raw === undefined) return null;
  const r = ruleNotifySchema.parse(typeof raw === 'string' ? JSON.parse(raw) : raw);
  return {
    rules: r.rules ?? true,
    roles: r.roles ?? [],
    userIds: r.userIds ?? [],
    templateKey: r.templateKey ?? null,
    onClear: r.onClear ?? false,
  };
}

/** One alarm change of a rule that asks to notify. */
export interface RuleAlarmChange {
  orgId: string;
  ruleId: string;
  notify: RuleNotify;
  change: 'raised' | 'cleared';
  alarm: { id: string; deviceId: string; type: string; severity: Severity; value: number | null; message: string };
  siteId: string | null;
  at: number;
}

/**
 * The notifications contract's input for an alarm change, or null when the rule does not notify on
 * it. The dedup key names the alarm and the change, so a retried job or a second workers process
 * enqueues it once; the group key (site + rule) lets the notifier send one digest for a feeder fault
 * that darkens a whole street.
 */
export function ruleNotification(c: RuleAlarmChange): NotificationInput | null {
  if (c.change === 'cleared' && !c.notify.onClear) return null;
  return {
    orgId: c.orgId,
    source: { kind: 'rule', id: c.ruleId },
    event: 'rule.notify',
    siteId: c.siteId,
    severity: c.alarm.severity,
    ...(c.notify.templateKey ? { templateKey: c.notify.templateKey } : {}),
    variables: {
      change: c.change,
      alarmId: c.alarm.id,
      deviceId: c.alarm.deviceId,
      type: c.alarm.type,
      severity: c.alarm.severity,
      message: c.alarm.message.slice(0, 2000),
      value: c.alarm.value,
    },
    recipients: { rules: c.notify.rules, roles: c.notify.roles, userIds: c.notify.userIds, channelIds: [] },
    dedupKey: `rule:${c.ruleId}:alarm:${c.alarm.id}:${c.change}`,
    groupKey: `site:${c.siteId ?? 'none'}:rule:${c.ruleId}`,
    at: c.at,
  };
}
