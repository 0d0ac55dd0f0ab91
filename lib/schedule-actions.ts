/**
 * What a cron schedule does at each occurrence, stored as JSON in `schedules.action`: written by the
 * rules subgraph, read and run by the workers (workers/schedules.ts). One builder and one parser, so a
 * corrupt row is refused the same way everywhere.
 */
import { z } from 'zod';
import { isUuid } from './db.js';

export const SCHEDULE_ACTION_KINDS = ['alarm_report', 'enable_rule', 'disable_rule'] as const;
export type ScheduleActionKind = (typeof SCHEDULE_ACTION_KINDS)[number];

const uuid = z.string().refine(isUuid, 'must be a uuid');

const actionSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('alarm_report'), siteId: uuid.nullable() }),
  z.object({ kind: z.literal('enable_rule'), ruleId: uuid }),
  z.object({ kind: z.literal('disable_rule'), ruleId: uuid }),
]);

export type ScheduleAction = z.infer<typeof actionSchema>;

/** The stored JSON of an action. */
export const scheduleActionJson = (a: ScheduleAction): string => JSON.stringify(actionSchema.parse(a));

/** A stored action, or throws with the reason (a corrupt row). */
export function parseScheduleAction(raw: unknown): ScheduleAction {
  const r = actionSchema.safeParse(typeof raw === 'string' ? JSON.parse(raw) : raw);
  if (!r.success)
    throw new Error(`invalid schedule action: ${r.error.issues.map((i) => `${i.path.join('.') || 'action'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** The active alarm counts an `alarm_report` run records. */
export interface AlarmReport {
  siteId: string | null;
  active: number;
  unacknowledged: number;
  bySeverity: Record<string, number>;
}
