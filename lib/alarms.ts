/**
 * The alarm life cycle as pure logic, shared by the alarms subgraph (operators' actions) and the
 * `rule-eval` worker (raise and clear). An alarm is active until cleared, and unacknowledged until
 * acknowledged; the two are independent, so there are four statuses (as in ThingsBoard):
 *
 * ```
 * raise ─▶ ACTIVE_UNACK ──ack──▶ ACTIVE_ACK
 *              │ clear               │ clear
 *              ▼                     ▼
 *          CLEARED_UNACK ──ack──▶ CLEARED_ACK   (final)
 * ```
 * A cleared alarm never becomes active again: the next breach raises a new alarm.
 */

export const ALARM_STATUSES = ['ACTIVE_UNACK', 'ACTIVE_ACK', 'CLEARED_UNACK', 'CLEARED_ACK'] as const;
export type AlarmStatus = (typeof ALARM_STATUSES)[number];

/** Kinds of alarm history entries, and of `alarmChanged` events (upper-case in GraphQL). */
export const ALARM_CHANGES = ['raised', 'acknowledged', 'cleared', 'commented', 'assigned', 'updated'] as const;
export type AlarmChange = (typeof ALARM_CHANGES)[number];

export function statusOf(a: { cleared_at: unknown; acknowledged_at: unknown }): AlarmStatus {
  const active = a.cleared_at === null || a.cleared_at === undefined;
  const acked = a.acknowledged_at !== null && a.acknowledged_at !== undefined;
  return active ? (acked ? 'ACTIVE_ACK' : 'ACTIVE_UNACK') : acked ? 'CLEARED_ACK' : 'CLEARED_UNACK';
}

/**
 * The status after an operator's action, or null when the action changes nothing (acknowledging an
 * acknowledged alarm, clearing a cleared one): such repeats succeed without a history entry, so an
 * integrator may retry safely.
 */
export function afterAction(status: AlarmStatus, action: 'acknowledge' | 'clear'): AlarmStatus | null {
  if (action === 'acknowledge') {
    if (status === 'ACTIVE_UNACK') return 'ACTIVE_ACK';
    if (status === 'CLEARED_UNACK') return 'CLEARED_ACK';
    return null;
  }
  if (status === 'ACTIVE_UNACK') return 'CLEARED_UNACK';
  if (status === 'ACTIVE_ACK') return 'CLEARED_ACK';
  return null;
}

/** Statuses as SQL conditions on `cleared_at` / `acknowledged_at` (for filters). */
export function statusPredicate(s: AlarmStatus): { cleared: boolean; acknowledged: boolean } {
  return { cleared: s.startsWith('CLEARED'), acknowledged: s.endsWith('_ACK') };
}
