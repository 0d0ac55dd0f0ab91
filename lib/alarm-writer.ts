import { sql } from 'kysely';
import type { AlarmChange } from './alarms.js';
import { alarmChangedEvent, eventsChannel } from './contracts/events.js';
import type { Tx } from './db.js';
import type { Logger } from './logger.js';
import type { Redis } from './redis.js';

/**
 * The one writer of automatic alarm changes (docs/alarms-rules.md, "One alarm writer"): threshold
 * rules (workers/rule-eval.ts), rules that wait and their timers (workers/rule-wait.ts) and the
 * program detectors (workers/programs-detect.ts) decide, this module writes. Each kind of change is
 * one set-based statement whatever the batch size, with its history rows in the same statement, in
 * the caller's tenant transaction; `alarmChanged` events are published after commit with
 * {@link publishAlarmChanges}.
 *
 * Times: `at` is the time of the reading that decided (device time, ms), capped at the database's
 * `now()` so a device clock running ahead never dates an alarm in the future; null (a timer, a
 * detector run) means `now()`. `readingTs` is stored as the alarm's `reading_ts`: a refresh or clear
 * carrying an older reading than the alarm already reflects changes nothing (jobs may run out of order).
 */

/** A new alarm; a concurrent or earlier open alarm of the same device and type wins (the unique index). */
export interface RaiseAlarm {
  deviceId: string;
  ruleId: string | null;
  type: string;
  severity: string;
  message: string;
  value: number | null;
  /** device time of the deciding reading (ms), null: none */
  readingTs: number | null;
  /** when it happened (ms), null: now() */
  at: number | null;
  /** `raised_by` and the history actor (`rule:<id>`, `program:detector`) */
  actor: string;
}

/** An open alarm seen again (or its severity changed): value, reading time, severity, occurrences. */
export interface RefreshAlarm {
  id: string;
  value: number | null;
  readingTs: number | null;
  at: number | null;
  /** the condition was met again: `occurrences` + 1, `last_at` moves, an UPDATED event */
  breach: boolean;
  severity: string;
  /** the severity the caller read; a different `severity` writes an `updated` history entry */
  previousSeverity?: string | undefined;
  actor: string;
}

/** An open alarm to clear. */
export interface ClearAlarm {
  id: string;
  value: number | null;
  readingTs: number | null;
  at: number | null;
  actor: string;
  /** history note, e.g. `rule disabled` */
  note?: string | null;
}

/** An alarm a statement changed. */
export interface WrittenAlarm {
  id: string;
  deviceId: string;
  ruleId: string | null;
  type: string;
  severity: string;
  value: number | null;
}

export interface AlarmWrites {
  raised: WrittenAlarm[];
  /** refreshed alarms that emit UPDATED (a new breach or a new severity) */
  updated: WrittenAlarm[];
  cleared: WrittenAlarm[];
  /** `alarmChanged` events for {@link publishAlarmChanges}, in the order written */
  events: AlarmEvent[];
}

export type AlarmEvent = [AlarmChange, { id: string; deviceId: string; severity: string }];

const RETURNING = sql`a.id, a.device_id as "deviceId", a.rule_id as "ruleId", a.type, a.severity, a.value`;
/** the deciding moment: the reading's time capped at now(), or now() */
const AT = sql`least(now(), coalesce(to_timestamp(v.at::float8 / 1000), now()))`;
/** a change carrying a reading applies only to an alarm that reflects an older one */
const NEWER = sql`(v.ts is null or a.reading_ts is null or a.reading_ts < v.ts)`;

/** Inserts new alarms and their `raised` history rows (one statement); returns those inserted. */
export async function raiseAlarms(tx: Tx, orgId: string, raises: readonly RaiseAlarm[]): Promise<WrittenAlarm[]> {
  if (!raises.length) return [];
  const { rows } = await sql<WrittenAlarm>`
    with a as (
      insert into alarms (org_id, device_id, rule_id, type, severity, message, value, reading_ts, raised_by, raised_at, last_at)
      select ${orgId}::uuid, v.device_id, v.rule_id, v.type, v.severity, left(v.message, 2000), v.value, v.ts, v.actor, ${AT}, ${AT}
      from unnest(${raises.map((r) => r.deviceId)}::uuid[], ${raises.map((r) => r.ruleId)}::uuid[], ${raises.map((r) => r.type)}::text[],
                  ${raises.map((r) => r.severity)}::text[], ${raises.map((r) => r.message)}::text[], ${raises.map((r) => r.value)}::float8[],
                  ${raises.map((r) => r.readingTs)}::int8[], ${raises.map((r) => r.at)}::int8[], ${raises.map((r) => r.actor)}::text[])
           as v(device_id, rule_id, type, severity, message, value, ts, at, actor)
      on conflict (org_id, device_id, type) where cleared_at is null do nothing
      returning *
    ), e as (
      insert into alarm_events (org_id, alarm_id, kind, actor, value)
      select ${orgId}::uuid, a.id, 'raised', a.raised_by, a.value from a
    )
    select ${RETURNING} from a`.execute(tx);
  return rows;
}

/**
 * Refreshes open alarms (one statement, `updated` history rows for severity changes in it); returns
 * the refreshed alarms that emit UPDATED: a breach (occurrence count grew) or a severity change.
 */
export async function refreshAlarms(tx: Tx, orgId: string, refreshes: readonly RefreshAlarm[]): Promise<WrittenAlarm[]> {
  if (!refreshes.length) return [];
  const resevered = refreshes.map((r) => r.previousSeverity !== undefined && r.previousSeverity !== r.severity);
  const { rows } = await sql<WrittenAlarm & { emit: boolean }>`
    with a as (
      update alarms a set
        value = coalesce(v.value, a.value),
        reading_ts = coalesce(v.ts, a.reading_ts),
        severity = v.severity,
        occurrences = a.occurrences + v.breach::int,
        last_at = case when v.breach then greatest(a.last_at, ${AT}) else a.last_at end
      from unnest(${refreshes.map((r) => r.id)}::uuid[], ${refreshes.map((r) => r.value)}::float8[], ${refreshes.map((r) => r.readingTs)}::int8[],
                  ${refreshes.map((r) => r.at)}::int8[], ${refreshes.map((r) => r.breach)}::bool[], ${refreshes.map((r) => r.severity)}::text[],
                  ${resevered}::bool[], ${refreshes.map((r) => r.actor)}::text[])
           as v(id, value, ts, at, breach, severity, resevered, actor)
      where a.id = v.id and a.org_id = ${orgId}::uuid and a.cleared_at is null and ${NEWER}
      returning ${RETURNING}, v.breach, v.resevered, v.actor
    ), e as (
      insert into alarm_events (org_id, alarm_id, kind, actor, note)
      select ${orgId}::uuid, a.id, 'updated', a.actor, 'severity ' || a.severity from a where a.resevered
    )
    select a.id, a."deviceId", a."ruleId", a.type, a.severity, a.value, (a.breach or a.resevered) as emit from a`.execute(tx);
  return rows.filter((r) => r.emit).map(({ emit: _e, ...a }) => a);
}

/** Clears open alarms with their `cleared` history rows (one statement); returns those cleared. */
export async function clearAlarms(tx: Tx, orgId: string, clears: readonly ClearAlarm[]): Promise<WrittenAlarm[]> {
  if (!clears.length) return [];
  const { rows } = await sql<WrittenAlarm>`
    with a as (
      update alarms a set
        value = coalesce(v.value, a.value),
        reading_ts = coalesce(v.ts, a.reading_ts),
        cleared_at = greatest(a.raised_at, ${AT}),
        cleared_by = v.actor
      from unnest(${clears.map((c) => c.id)}::uuid[], ${clears.map((c) => c.value)}::float8[], ${clears.map((c) => c.readingTs)}::int8[],
                  ${clears.map((c) => c.at)}::int8[], ${clears.map((c) => c.actor)}::text[], ${clears.map((c) => c.note ?? null)}::text[])
           as v(id, value, ts, at, actor, note)
      where a.id = v.id and a.org_id = ${orgId}::uuid and a.cleared_at is null and ${NEWER}
      returning ${RETURNING}, v.actor, v.note
    ), e as (
      insert into alarm_events (org_id, alarm_id, kind, actor, value, note)
      select ${orgId}::uuid, a.id, 'cleared', a.actor, a.value, a.note from a
    )
    select a.id, a."deviceId", a."ruleId", a.type, a.severity, a.value from a`.execute(tx);
  return rows;
}

/** Raises, refreshes and clears a batch of decided changes (three statements at most) with their events. */
export async function writeAlarms(
  tx: Tx,
  orgId: string,
  batch: { raise?: readonly RaiseAlarm[]; refresh?: readonly RefreshAlarm[]; clear?: readonly ClearAlarm[] },
): Promise<AlarmWrites> {
  const raised = await raiseAlarms(tx, orgId, batch.raise ?? []);
  const updated = await refreshAlarms(tx, orgId, batch.refresh ?? []);
  const cleared = await clearAlarms(tx, orgId, batch.clear ?? []);
  const ev = (change: AlarmChange, list: WrittenAlarm[]): AlarmEvent[] =>
    list.map((a) => [change, { id: a.id, deviceId: a.deviceId, severity: a.severity }]);
  return { raised, updated, cleared, events: [...ev('raised', raised), ...ev('updated', updated), ...ev('cleared', cleared)] };
}

/** Adds `alarmChanged` publishes of committed changes to a Redis pipeline (to share a round trip with other writes). */
export function queueAlarmEvents(
  p: ReturnType<Redis['pipeline']>,
  prefix: string,
  orgId: string,
  events: readonly AlarmEvent[],
  devices: ReadonlyMap<string, { siteId: string | null; sitePath: string | null }>,
  now = Date.now(),
): void {
  const channel = eventsChannel(prefix, orgId);
  for (const [change, a] of events) {
    p.publish(channel, alarmChangedEvent(orgId, change, a, devices.get(a.deviceId) ?? { siteId: null, sitePath: null }, now));
  }
}

/**
 * Publishes committed changes as `alarmChanged` (one pipeline). Never throws: the alarms are stored,
 * and a retry of the evaluation would find them applied; a failure is logged.
 */
export async function publishAlarmChanges(
  o: { redis: Redis; prefix: string; logger: Logger },
  orgId: string,
  events: readonly AlarmEvent[],
  devices: ReadonlyMap<string, { siteId: string | null; sitePath: string | null }>,
  now = Date.now(),
): Promise<void> {
  if (!events.length) return;
  const p = o.redis.pipeline();
  queueAlarmEvents(p, o.prefix, orgId, events, devices, now);
  try {
    await p.exec();
  } catch (e) {
    o.logger.warn({ orgId, err: (e as Error).message }, 'publishing alarm events failed');
  }
}
