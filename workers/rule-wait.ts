import { hostname } from 'node:os';
import { sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import { type AlarmEvent, publishAlarmChanges, type WrittenAlarm, writeAlarms } from '../lib/alarm-writer.js';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import { type Db, type Tx, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { firedActions, type RuleAction } from '../lib/rule-actions.js';
import type { RuleNotify } from '../lib/rule-notify.js';
import { inScope, type Operator, SEVERITIES, type Severity, scopeIndexOf } from '../lib/rules.js';
import {
  compileWaitRule,
  conditionSource,
  describeWait,
  emptyState,
  onDue,
  type RuleKind,
  step,
  type Timer,
  type WaitReading,
  type WaitRule,
  type WaitState,
} from '../lib/rules-wait.js';
import { type RuleActionRunner, safeActions } from './rule-actions.js';
import { type RuleNotifier, safeNotify } from './rule-notify.js';

const timersTotal = counter('rulr_rule_timers_total', 'Durable rule timers that came due, by outcome', ['outcome']);
const waitAlarmsTotal = counter('rulr_rule_wait_alarms_total', 'Alarms raised and cleared by waiting rules (readings and timers)', [
  'change',
]);
const stepsTotal = counter('rulr_rule_wait_evaluations_total', 'Waiting rules stepped with a reading (one per rule and device per job)');
const badStateTotal = counter('rulr_rule_wait_invalid_total', 'Waiting rules or stored rule states that could not be used, skipped');

/** How long a cached rule set is trusted without a version change. */
const RULES_TTL_MS = 60_000;

/** A waiting rule as the evaluator needs it. */
export interface LoadedWaitRule {
  id: string;
  severity: Severity;
  alarmType: string;
  sitePath: string | null;
  profileId: string | null;
  wait: WaitRule;
  source: string;
  notify: RuleNotify | null;
  actions: RuleAction[];
}

interface DeviceScope {
  id: string;
  profileId: string | null;
  siteId: string | null;
  sitePath: string | null;
}

type Event = AlarmEvent;
/** An alarm change of a rule with a notify action, enqueued after commit. */
interface Note {
  rule: LoadedWaitRule;
  change: 'raised' | 'cleared';
  alarm: WrittenAlarm;
}

/** This process, as `rule_timer_firings.worker` and `schedule_runs.worker` name it. */
export const WORKER_ID = `${hostname()}:${process.pid}`;

const alarmKey = (deviceId: string, type: string) => `${deviceId}\u0000${type}`;
const stateKey = (ruleId: string, deviceId: string) => `${ruleId}\u0000${deviceId}`;

/** A stored state, or an empty one when it is not of the expected shape (counted). */
function parseState(raw: unknown): WaitState {
  const s = raw as Partial<WaitState> | null;
  if (!s || typeof s !== 'object' || typeof s.latest !== 'object' || !Array.isArray(s.hits)) {
    badStateTotal.inc();
    return emptyState();
  }
  return { latest: s.latest ?? {}, previous: s.previous ?? {}, since: s.since ?? null, hits: s.hits, lastTs: s.lastTs ?? null };
}

/** Sets the tenant of the rest of a transaction that began as the system (to claim across organizations). */
async function enterTenant(tx: Tx, orgId: string): Promise<void> {
  await sql`select set_config('role', 'rulr_app', true), set_config('rulr.org_id', ${orgId}, true)`.execute(tx);
}

export interface RuleWaitOptions {
  /** enqueues the notify action's requests after commit */
  notifier?: RuleNotifier;
  /** runs the rules' device actions in the alarm change's transaction */
  actions?: RuleActionRunner;
  db: Db;
  redis: Redis;
  /** `REDIS_PREFIX` */
  prefix: string;
  logger: Logger;
}

/** One alarm change a waiting rule decided. */
interface Change {
  rule: LoadedWaitRule;
  deviceId: string;
  decision: 'raise' | 'clear' | 'keep';
  value: number | null;
  ts: number | null;
  /** a timer's due time (ms): when the condition was met, for a change no reading decided */
  dueAt?: number | undefined;
  alarmId?: string | undefined;
  /** the open alarm's severity as read */
  severity?: string | undefined;
}

/**
 * Rules that wait (docs/alarms-rules.md): duration, repeating, compound and rate-of-change
 * conditions and no-data rules. `evaluate` applies a job's readings (called by the rule-eval worker
 * after the threshold rules); `sweep` fires the durable timers that came due (`rule_device_state.due_at`),
 * claimed with `for update skip locked` so that each fires once whichever workers process claims it,
 * and a process killed mid-claim leaves the row to the next one.
 */
export class RuleWait {
  private readonly rules = new LRUCache<string, { version: string | null; rules: LoadedWaitRule[]; at: number }>({ max: 10_000 });

  constructor(private readonly o: RuleWaitOptions) {}

  /** The organization's enabled waiting rules, cached until its rules version changes. */
  async rulesFor(orgId: string): Promise<LoadedWaitRule[]> {
    const version = await this.o.redis.get(rulesVersionKey(this.o.prefix, orgId));
    const hit = this.rules.get(orgId);
    if (hit && hit.version === version && Date.now() - hit.at < RULES_TTL_MS) return hit.rules;
    const rows = await withTenant(this.o.db, orgId, async (tx) => {
      const { rows } = await sql<{
        id: string;
        kind: RuleKind;
        metric: string;
        operator: Operator | null;
        threshold: number | null;
        clear_threshold: number | null;
        expression: string | null;
        for_seconds: number | null;
        repeat_count: number | null;
        window_seconds: number | null;
        no_data_seconds: number | null;
        severity: Severity;
        alarm_type: string;
        auto_clear: boolean;
        notify: unknown;
        actions: unknown;
        site_path: string | null;
        profile_id: string | null;
      }>`
        select r.id, r.kind, r.metric, r.operator, r.threshold, r.clear_threshold, r.expression, r.for_seconds, r.repeat_count,
               r.window_seconds, r.no_data_seconds, r.severity, r.alarm_type, r.auto_clear, r.notify, r.actions, s.path::text as site_path, r.profile_id
        from rules r left join sites s on s.id = r.site_id and s.org_id = ${orgId}
        where r.org_id = ${orgId} and r.enabled and r.deleted_at is null
          and (r.kind <> 'threshold' or r.for_seconds is not null or r.repeat_count is not null)
        order by r.created_at, r.id`.execute(tx);
      return rows;
    });
    const rank = new Map(SEVERITIES.map((s, i) => [s, i]));
    const rules: LoadedWaitRule[] = [];
    for (const r of rows) {
      const shape = {
        kind: r.kind,
        metric: r.metric,
        operator: r.operator,
        threshold: r.threshold,
        clearThreshold: r.clear_threshold,
        expression: r.expression,
        forSeconds: r.for_seconds,
        repeatCount: r.repeat_count,
        windowSeconds: r.window_seconds,
        noDataSeconds: r.no_data_seconds,
        autoClear: r.auto_clear,
      };
      try {
        rules.push({
          id: r.id,
          severity: r.severity,
          alarmType: r.alarm_type,
          sitePath: r.site_path,
          profileId: r.profile_id,
          wait: compileWaitRule(shape),
          source: conditionSource(shape),
          notify: safeNotify(r.notify),
          actions: safeActions(r.actions),
        });
      } catch (e) {
        badStateTotal.inc();
        this.o.logger.warn({ ruleId: r.id, err: (e as Error).message }, 'waiting rule skipped: its definition does not compile');
      }
    }
    rules.sort((a, b) => (rank.get(a.severity) ?? 9) - (rank.get(b.severity) ?? 9));
    this.rules.set(orgId, { version, rules, at: Date.now() });
    return rules;
  }

  /**
   * Applies one job's readings to the organization's waiting rules: per rule and device in scope, the
   * stored state is locked, stepped (lib/rules-wait.ts) and written back with its timer, and alarms
   * are raised, refreshed or cleared, all in one tenant transaction. Returns the alarm changes.
   */
  async evaluate(
    orgId: string,
    readings: readonly { deviceId: string; metric: string; ts: number; value: number | null }[],
  ): Promise<{ raised: number; cleared: number }> {
    const rules = await this.rulesFor(orgId);
    if (!rules.length) return { raised: 0, cleared: 0 };
    const watched = new Set(rules.flatMap((r) => r.wait.metrics));
    const byDevice = new Map<string, WaitReading[]>();
    for (const r of readings) {
      if (r.value === null || !watched.has(r.metric)) continue;
      const list = byDevice.get(r.deviceId) ?? [];
      list.push({ metric: r.metric, ts: r.ts, value: r.value });
      byDevice.set(r.deviceId, list);
    }
    if (!byDevice.size) return { raised: 0, cleared: 0 };
    const now = Date.now();
    const events: Event[] = [];
    const notes: Note[] = [];
    const dispatch: string[] = [];
    const devices = new Map<string, DeviceScope>();
    const result = await withTenant(this.o.db, orgId, async (tx) => {
      for (const d of await scopes(tx, orgId, [...byDevice.keys()])) devices.set(d.id, d);
      const pairs: { rule: LoadedWaitRule; deviceId: string; readings: WaitReading[] }[] = [];
      const index = scopeIndexOf(rules);
      for (const [deviceId, list] of byDevice) {
        const device = devices.get(deviceId);
        if (!device) continue;
        for (const rule of index.forDevice(device)) {
          const mine = list.filter((r) => rule.wait.metrics.includes(r.metric));
          if (mine.length) pairs.push({ rule, deviceId, readings: mine });
        }
      }
      if (!pairs.length) return { raised: 0, cleared: 0 };
      stepsTotal.inc(pairs.length);
      // lock in one order (rule, device) so concurrent jobs and the timer sweep never deadlock
      pairs.sort((a, b) => (a.rule.id < b.rule.id ? -1 : a.rule.id > b.rule.id ? 1 : a.deviceId < b.deviceId ? -1 : 1));
      const ruleIds = pairs.map((p) => p.rule.id);
      const deviceIds = pairs.map((p) => p.deviceId);
      await sql`
        insert into rule_device_state (rule_id, device_id, org_id, state)
        select r, d, ${orgId}, ${JSON.stringify(emptyState())}::jsonb from unnest(${ruleIds}::uuid[], ${deviceIds}::uuid[]) as p(r, d)
        on conflict do nothing`.execute(tx);
      const { rows: stored } = await sql<{
        rule_id: string;
        device_id: string;
        state: unknown;
        due_at: Date | null;
        due_action: Timer['action'] | null;
      }>`
        select s.rule_id, s.device_id, s.state, s.due_at, s.due_action from rule_device_state s
        join unnest(${ruleIds}::uuid[], ${deviceIds}::uuid[]) as p(r, d) on s.rule_id = p.r and s.device_id = p.d
        where s.org_id = ${orgId}
        order by s.rule_id, s.device_id
        for update of s`.execute(tx);
      const states = new Map(stored.map((r) => [stateKey(r.rule_id, r.device_id), r]));
      const open = await openAlarms(tx, orgId, [...new Set(deviceIds)], [...new Set(pairs.map((p) => p.rule.alarmType))]);
      const changes: Change[] = [];
      const updates: { ruleId: string; deviceId: string; state: WaitState; timer: Timer | null }[] = [];
      const decided = new Set<string>();
      for (const p of pairs) {
        const row = states.get(stateKey(p.rule.id, p.deviceId));
        const prior = row ? parseState(row.state) : emptyState();
        const timer = row?.due_at && row.due_action ? { dueAt: row.due_at.getTime(), action: row.due_action } : null;
        const akey = alarmKey(p.deviceId, p.rule.alarmType);
        const cur = open.get(akey);
        const s = step(p.rule.wait, prior, p.readings, cur !== undefined, now, timer);
        updates.push({ ruleId: p.rule.id, deviceId: p.deviceId, state: s.state, timer: s.timer });
        // rules sharing an alarm type share the alarm: the most severe rule decides (rules are sorted)
        if (s.decision === 'none' || decided.has(akey)) continue;
        decided.add(akey);
        changes.push({
          rule: p.rule,
          deviceId: p.deviceId,
          decision: s.decision,
          value: s.value,
          ts: s.ts,
          alarmId: cur?.id,
          severity: cur?.severity,
        });
      }
      await writeStates(tx, orgId, updates);
      return applyChanges(tx, orgId, changes, { events, notes, dispatch, actions: this.o.actions });
    });
    await this.publish(orgId, events, devices);
    await this.notify(orgId, notes, devices);
    await this.o.actions?.dispatch(orgId, dispatch);
    return result;
  }

  /**
   * Fires due timers: claims up to `batch` due rows of one organization (the most overdue first) with
   * `for update skip locked`, decides each (lib/rules-wait.ts `onDue`), records the firing
   * (`rule_timer_firings`, unique per rule, device, due time and action), applies the alarm change and
   * moves or drops the timer, all in one transaction. Returns the timers fired, 0 when none was due.
   */
  async sweep(batch = 200, onClaim?: (n: number) => Promise<void>): Promise<number> {
    const events: Event[] = [];
    const notes: Note[] = [];
    const dispatch: string[] = [];
    const devices = new Map<string, DeviceScope>();
    let orgId: string | null = null;
    const fired = await this.o.db.transaction().execute(async (tx) => {
      const { rows: first } = await sql<{ org_id: string }>`
        select org_id from rule_device_state where due_at <= now() order by due_at limit 1 for update skip locked`.execute(tx);
      const org = first[0]?.org_id;
      if (!org) return 0;
      orgId = org;
      const { rows: due } = await sql<{ rule_id: string; device_id: string; state: unknown; due_at: Date; due_action: Timer['action'] }>`
        select rule_id, device_id, state, due_at, due_action from rule_device_state
        where org_id = ${org} and due_at <= now() order by due_at limit ${batch} for update skip locked`.execute(tx);
      if (!due.length) return 0;
      await onClaim?.(due.length);
      const rules = new Map((await this.rulesFor(org)).map((r) => [r.id, r]));
      await enterTenant(tx, org);
      for (const d of await scopes(tx, org, [...new Set(due.map((r) => r.device_id))])) devices.set(d.id, d);
      const live = due.filter((r) => rules.has(r.rule_id));
      const open = await openAlarms(
        tx,
        org,
        [...new Set(live.map((r) => r.device_id))],
        [...new Set(live.map((r) => (rules.get(r.rule_id) as LoadedWaitRule).alarmType))],
      );
      const now = Date.now();
      const changes: Change[] = [];
      const updates: { ruleId: string; deviceId: string; state: WaitState; timer: Timer | null }[] = [];
      const firings: { ruleId: string; deviceId: string; dueAt: Date; action: string; outcome: string }[] = [];
      const decided = new Set<string>();
      for (const row of due) {
        const rule = rules.get(row.rule_id);
        const device = devices.get(row.device_id);
        const state = parseState(row.state);
        // a disabled or deleted rule, or a device gone out of scope: the timer is dropped
        if (!rule || !device || !inScope(rule, device)) {
          updates.push({ ruleId: row.rule_id, deviceId: row.device_id, state, timer: null });
          timersTotal.inc({ outcome: 'dropped' });
          continue;
        }
        const akey = alarmKey(row.device_id, rule.alarmType);
        const cur = open.get(akey);
        const timer: Timer = { dueAt: row.due_at.getTime(), action: row.due_action };
        const r = onDue(rule.wait, state, timer, cur !== undefined, now);
        updates.push({ ruleId: rule.id, deviceId: row.device_id, state, timer: r.timer });
        let outcome = 'none';
        if ((r.decision === 'raise' || r.decision === 'clear') && !decided.has(akey)) {
          decided.add(akey);
          outcome = r.decision === 'raise' ? 'raised' : 'cleared';
          const value = rule.wait.metrics[0] ? (state.latest[rule.wait.metrics[0]]?.[1] ?? null) : null;
          changes.push({
            rule,
            deviceId: row.device_id,
            decision: r.decision,
            value,
            ts: null,
            dueAt: timer.dueAt,
            alarmId: cur?.id,
            severity: cur?.severity,
          });
        }
        firings.push({ ruleId: rule.id, deviceId: row.device_id, dueAt: row.due_at, action: row.due_action, outcome });
        timersTotal.inc({ outcome });
      }
      await writeStates(tx, org, updates);
      if (firings.length) {
        await sql`
          insert into rule_timer_firings (org_id, rule_id, device_id, due_at, action, outcome, worker)
          select ${org}, r, d, t, a, o, ${WORKER_ID}
          from unnest(${firings.map((f) => f.ruleId)}::uuid[], ${firings.map((f) => f.deviceId)}::uuid[], ${firings.map((f) => f.dueAt)}::timestamptz[],
                      ${firings.map((f) => f.action)}::text[], ${firings.map((f) => f.outcome)}::text[]) as f(r, d, t, a, o)
          on conflict do nothing`.execute(tx);
      }
      await applyChanges(tx, org, changes, { events, notes, dispatch, actions: this.o.actions });
      return due.length;
    });
    if (orgId && events.length) await this.publish(orgId, events, devices);
    if (orgId && notes.length) await this.notify(orgId, notes, devices);
    if (orgId) await this.o.actions?.dispatch(orgId, dispatch);
    return fired;
  }

  /**
   * Gives every in-scope device of each enabled NO_DATA rule a timer, so that a device that never
   * reports (or stopped before the rule existed) raises too: its silence counts from the later of the
   * rule's last change and the device's creation. Idempotent (existing states are left alone). With
   * `since`, only rules changed and devices created since then are looked at (the full pass joins
   * every NO_DATA rule with every device: seconds with thousands of rules), see {@link RuleTimers}.
   */
  async seedNoData(since?: Date): Promise<number> {
    const recent = since ? sql`and (r.updated_at >= ${since} or d.created_at >= ${since})` : sql``;
    const { numAffectedRows } = await sql`
      insert into rule_device_state (rule_id, device_id, org_id, state, due_at, due_action)
      select r.id, d.id, r.org_id, ${JSON.stringify(emptyState())}::jsonb,
             greatest(r.updated_at, d.created_at) + make_interval(secs => r.no_data_seconds), 'raise'
      from rules r
      join devices d on d.org_id = r.org_id and d.decommissioned_at is null and (r.profile_id is null or d.profile_id = r.profile_id)
      left join sites rs on rs.id = r.site_id
      left join sites ds on ds.id = d.site_id
      where r.kind = 'no_data' and r.enabled and r.deleted_at is null and (r.site_id is null or ds.path <@ rs.path) ${recent}
      on conflict do nothing`.execute(this.o.db);
    return Number(numAffectedRows ?? 0);
  }

  private async notify(orgId: string, notes: Note[], devices: Map<string, DeviceScope>): Promise<void> {
    if (!this.o.notifier || !notes.length) return;
    const at = Date.now();
    await this.o.notifier.enqueue(
      notes.map((n) => ({
        orgId,
        ruleId: n.rule.id,
        notify: n.rule.notify as RuleNotify,
        change: n.change,
        alarm: {
          id: n.alarm.id,
          deviceId: n.alarm.deviceId,
          type: n.rule.alarmType,
          severity: n.alarm.severity as Severity,
          value: n.alarm.value,
          message: describeWait(n.rule.wait, n.rule.source),
        },
        siteId: devices.get(n.alarm.deviceId)?.siteId ?? null,
        at,
      })),
    );
  }

  private publish(orgId: string, events: Event[], devices: Map<string, DeviceScope>): Promise<void> {
    return publishAlarmChanges(this.o, orgId, events, devices);
  }
}

async function scopes(tx: Tx, orgId: string, ids: string[]): Promise<DeviceScope[]> {
  const { rows } = await sql<DeviceScope>`
    select d.id, d.profile_id as "profileId", d.site_id as "siteId", s.path::text as "sitePath"
    from devices d left join sites s on s.id = d.site_id and s.org_id = ${orgId}
    where d.org_id = ${orgId} and d.id = any(${ids}::uuid[]) and d.decommissioned_at is null`.execute(tx);
  return rows;
}

async function openAlarms(
  tx: Tx,
  orgId: string,
  deviceIds: string[],
  types: string[],
): Promise<Map<string, { id: string; severity: string }>> {
  if (!deviceIds.length) return new Map();
  const { rows } = await sql<{ id: string; device_id: string; type: string; severity: string }>`
    select id, device_id, type, severity from alarms
    where org_id = ${orgId} and cleared_at is null and device_id = any(${deviceIds}::uuid[]) and type = any(${types}::text[])`.execute(tx);
  return new Map(rows.map((r) => [alarmKey(r.device_id, r.type), { id: r.id, severity: r.severity }]));
}

async function writeStates(tx: Tx, orgId: string, updates: { ruleId: string; deviceId: string; state: WaitState; timer: Timer | null }[]) {
  if (!updates.length) return;
  await sql`
    update rule_device_state s set state = v.state, due_at = v.due_at, due_action = v.due_action, updated_at = now()
    from unnest(${updates.map((u) => u.ruleId)}::uuid[], ${updates.map((u) => u.deviceId)}::uuid[], ${updates.map((u) => JSON.stringify(u.state))}::jsonb[],
                ${updates.map((u) => (u.timer ? new Date(u.timer.dueAt) : null))}::timestamptz[], ${updates.map((u) => u.timer?.action ?? null)}::text[])
         as v(rule_id, device_id, state, due_at, due_action)
    where s.org_id = ${orgId} and s.rule_id = v.rule_id and s.device_id = v.device_id`.execute(tx);
}

/** Raises, refreshes and clears the decided alarms through the one alarm writer; events are collected for after commit. */
async function applyChanges(
  tx: Tx,
  orgId: string,
  changes: Change[],
  out: { events: Event[]; notes: Note[]; dispatch: string[]; actions?: RuleActionRunner | undefined },
): Promise<{ raised: number; cleared: number }> {
  const { events, notes } = out;
  const message = (r: LoadedWaitRule) => describeWait(r.wait, r.source);
  const raises = changes.filter((c) => c.decision === 'raise' && !c.alarmId);
  const clears = changes.filter((c) => c.decision === 'clear' && c.alarmId);
  const keeps = changes.filter((c) => c.decision === 'keep' && c.alarmId);
  const written = await writeAlarms(tx, orgId, {
    raise: raises.map((r) => ({
      deviceId: r.deviceId,
      ruleId: r.rule.id,
      type: r.rule.alarmType,
      severity: r.rule.severity,
      message: message(r.rule),
      value: r.value,
      readingTs: r.ts,
      at: r.ts ?? r.dueAt ?? null,
      actor: `rule:${r.rule.id}`,
    })),
    refresh: keeps.map((k) => ({
      id: k.alarmId as string,
      value: k.value,
      readingTs: k.ts,
      at: k.ts ?? k.dueAt ?? null,
      breach: true,
      severity: k.rule.severity,
      previousSeverity: k.severity,
      actor: `rule:${k.rule.id}`,
    })),
    clear: clears.map((c) => ({
      id: c.alarmId as string,
      value: c.value,
      readingTs: c.ts,
      at: c.ts ?? c.dueAt ?? null,
      actor: `rule:${c.rule.id}`,
    })),
  });
  events.push(...written.events);
  const byRule = new Map(changes.map((c) => [c.rule.id, c.rule]));
  for (const a of written.raised) {
    const rule = byRule.get(a.ruleId ?? '');
    if (rule?.notify) notes.push({ rule, change: 'raised', alarm: a });
  }
  const clearedBy = new Map(clears.map((c) => [c.alarmId, c.rule]));
  for (const a of written.cleared) {
    const rule = clearedBy.get(a.id);
    if (rule?.notify) notes.push({ rule, change: 'cleared', alarm: a });
  }
  const fired = firedActions(written, byRule, clearedBy);
  if (fired.length && out.actions) out.dispatch.push(...(await out.actions.run(tx, orgId, fired)).deviceIds);
  const raised = written.raised.length;
  const cleared = written.cleared.length;
  if (raised) waitAlarmsTotal.inc({ change: 'raised' }, raised);
  if (cleared) waitAlarmsTotal.inc({ change: 'cleared' }, cleared);
  return { raised, cleared };
}

export interface RuleTimersOptions {
  wait: RuleWait;
  logger: Logger;
  /** How often due timers are looked for. @default 1000 */
  tickMs?: number;
  /** How often NO_DATA rules' new devices and changed rules get their first timer ({@link RuleWait.seedNoData}). @default 30000 */
  seedMs?: number;
  /** How often the full pass runs (every rule with every device). @default 600000 */
  fullSeedMs?: number;
  /** Timers fired per transaction. @default 200 */
  batch?: number;
}

/**
 * The durable timer loop of the workers role: every `tickMs` it fires what came due (each timer once,
 * across every workers process; a process killed mid-claim leaves it to the next, see
 * {@link RuleWait.sweep}), and every `seedMs` gives NO_DATA rules' silent devices their timers.
 * Timers live in PostgreSQL, so a restart loses none and a timer overdue at start fires at once.
 */
export class RuleTimers {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private closed = false;
  private lastSeed = 0;
  private lastFullSeed = 0;

  constructor(private readonly o: RuleTimersOptions) {}

  start(): this {
    const loop = () => {
      if (this.closed) return;
      this.running = this.tick()
        .catch((e: unknown) => this.o.logger.warn({ err: (e as Error).message }, 'rule timers: tick failed; retried'))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(loop, this.o.tickMs ?? 1000);
        });
    };
    loop();
    return this;
  }

  /** One round: seed when due, then fire due timers until none is left (at most 50 batches). */
  async tick(): Promise<number> {
    const now = Date.now();
    if (now - this.lastFullSeed >= (this.o.fullSeedMs ?? 600_000)) {
      this.lastFullSeed = now;
      this.lastSeed = now;
      await this.o.wait.seedNoData();
    } else if (now - this.lastSeed >= (this.o.seedMs ?? 30_000)) {
      // a minute of overlap covers the clocks of this process and the database
      const since = new Date(this.lastSeed - 60_000);
      this.lastSeed = now;
      await this.o.wait.seedNoData(since);
    }
    let total = 0;
    for (let i = 0; i < 50 && !this.closed; i++) {
      const n = await this.o.wait.sweep(this.o.batch ?? 200);
      if (!n) break;
      total += n;
    }
    return total;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
