import { hostname } from 'node:os';
import { sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import { type AlarmEvent, publishAlarmChanges, writeAlarms } from '../lib/alarm-writer.js';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import { type Db, type Tx, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { firedActions, type RuleAction } from '../lib/rule-actions.js';
import { inScope, type Operator, SEVERITIES, type Severity, scopeIndexOf } from '../lib/rules.js';
import {
  compileWaitRule,
  conditionSource,
  describeWait,
  emptyState,
  onDue,
  type RuleKind,
  type StepResult,
  step,
  type Timer,
  type WaitReading,
  type WaitRule,
  type WaitState,
} from '../lib/rules-wait.js';
import { type RuleActionRunner, safeActions } from './rule-actions.js';

const timersTotal = counter('rulr_rule_timers_total', 'Durable rule timers that came due, by outcome', ['outcome']);
const waitAlarmsTotal = counter('rulr_rule_wait_alarms_total', 'Alarms raised and cleared by waiting rules (readings and timers)', [
  'change',
]);
const stateCacheTotal = counter(
  'rulr_rule_wait_state_cache_total',
  'Waiting-rule states by where a job found them: hit (memory), miss (read from PostgreSQL), stale (changed by another process, read again)',
  ['outcome'],
);
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
  actions: RuleAction[];
}

export interface DeviceScope {
  id: string;
  profileId: string | null;
  siteId: string | null;
  sitePath: string | null;
}

/** A reading of a rule-eval job (lib/contracts/rule-eval.ts). */
type JobReading = { deviceId: string; metric: string; ts: number; value: number | null };

/**
 * A waiting rule's state of one device as this process last committed it (or read it), with the
 * `rule_device_state.version` PostgreSQL gave that row (migration 0052).
 */
export interface CachedState {
  version: number;
  state: WaitState;
  timer: Timer | null;
}

/** One rule and device of a job. */
interface Pair {
  rule: LoadedWaitRule;
  deviceId: string;
  readings: WaitReading[];
  key: string;
  /** the state stepped from: this process's memory, or the row read in this transaction */
  base: CachedState | null;
  /** `base` was read from PostgreSQL in this transaction (else: this process's memory) */
  read?: boolean;
  result: StepResult | null;
  /** the row's version as this transaction leaves it; null: not known (a memory copy left untouched) */
  version: number | null;
}

/** What a job's waiting rules collect for after commit. */
export interface WaitOut {
  events: AlarmEvent[];
  dispatch: string[];
}

/** What a job's waiting rules did; `written` goes to {@link RuleWait.remember} after commit. */
export interface WaitOutcome {
  raised: number;
  cleared: number;
  written: [string, CachedState][];
  /** with `alsoRead`: the open alarms read (of the waiting rules' types as read before their writes) */
  open: Map<string, OpenAlarm> | null;
}

/**
 * Most waiting-rule states (rule × device) one process keeps in memory (least recently used dropped):
 * about 1.4 KB each in V8 (a state of two samples), so some 140 MB at the default (`RULE_STATE_CACHE_MAX`).
 */
export const STATE_CACHE_MAX = 100_000;

const watchedOf = new WeakMap<readonly LoadedWaitRule[], Set<string>>();
/** The metrics some rule of a (cached, unchanging) rule list reads. */
function watchedMetrics(rules: readonly LoadedWaitRule[]): Set<string> {
  let w = watchedOf.get(rules);
  if (!w) {
    w = new Set(rules.flatMap((r) => r.wait.metrics));
    watchedOf.set(rules, w);
  }
  return w;
}

type Event = AlarmEvent;
/** This process, as `rule_timer_firings.worker` and `schedule_runs.worker` name it. */
export const WORKER_ID = `${hostname()}:${process.pid}`;

/** The key of a device's alarm of one type (rule-eval's maps use the same: a pre-read map is shared). */
export const alarmKey = (deviceId: string, type: string) => `${deviceId}\u0000${type}`;
const stateKey = (ruleId: string, deviceId: string) => `${ruleId}\u0000${deviceId}`;
const EMPTY_STATE = JSON.stringify(emptyState());

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
  /** runs the rules' device actions in the alarm change's transaction */
  actions?: RuleActionRunner;
  db: Db;
  redis: Redis;
  /** `REDIS_PREFIX` */
  prefix: string;
  logger: Logger;
  /** waiting-rule states kept in memory between jobs. @default {@link STATE_CACHE_MAX} */
  stateCacheMax?: number;
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
  /** states of rule × device between jobs, validated against `rule_device_state.version` on write */
  private readonly states: LRUCache<string, CachedState>;

  constructor(private readonly o: RuleWaitOptions) {
    this.states = new LRUCache({ max: o.stateCacheMax ?? STATE_CACHE_MAX });
  }

  /**
   * The organization's enabled waiting rules, cached until its rules version changes. `version`: the
   * caller already read `rules:ver:<org>` (one GET per job for both kinds of rules).
   */
  async rulesFor(orgId: string, version?: string | null): Promise<LoadedWaitRule[]> {
    if (version === undefined) version = await this.o.redis.get(rulesVersionKey(this.o.prefix, orgId));
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
        actions: unknown;
        site_path: string | null;
        profile_id: string | null;
      }>`
        select r.id, r.kind, r.metric, r.operator, r.threshold, r.clear_threshold, r.expression, r.for_seconds, r.repeat_count,
               r.window_seconds, r.no_data_seconds, r.severity, r.alarm_type, r.auto_clear, r.actions, s.path::text as site_path, r.profile_id
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
   * A job's readings that some waiting rule watches, by device (numbers and booleans), or null when
   * none is: pure, before any transaction.
   */
  readingsByDevice(rules: readonly LoadedWaitRule[], readings: readonly JobReading[]): Map<string, WaitReading[]> | null {
    if (!rules.length) return null;
    const watched = watchedMetrics(rules);
    let byDevice: Map<string, WaitReading[]> | null = null;
    for (const r of readings) {
      if (r.value === null || !watched.has(r.metric)) continue;
      byDevice ??= new Map();
      const list = byDevice.get(r.deviceId);
      const w = { metric: r.metric, ts: r.ts, value: r.value };
      if (list) list.push(w);
      else byDevice.set(r.deviceId, [w]);
    }
    return byDevice;
  }

  /**
   * Applies one job's readings to the organization's waiting rules in the caller's tenant transaction
   * (the rule-eval job's one transaction): per rule and device in scope, the state is taken from this
   * process's memory (or read from PostgreSQL when it is not there), stepped (lib/rules-wait.ts), and written
   * back with its timer only where a reading changed it, `where version = <the version stepped from>`:
   * a row another process changed since (a second workers replica, the timer sweep) is read again under
   * its lock and stepped afresh. Alarms are raised, refreshed or cleared in the same transaction; events
   * and dispatches are collected in `out` for after commit, and the states written are returned
   * for {@link remember} once the transaction committed.
   */
  async apply(
    tx: Tx,
    orgId: string,
    rules: readonly LoadedWaitRule[],
    byDevice: ReadonlyMap<string, WaitReading[]>,
    devices: ReadonlyMap<string, DeviceScope>,
    out: WaitOut,
    alsoRead?: { deviceIds: Iterable<string>; types: Iterable<string> },
  ): Promise<WaitOutcome> {
    const index = scopeIndexOf(rules);
    const pairs: Pair[] = [];
    for (const [deviceId, list] of byDevice) {
      const device = devices.get(deviceId);
      if (!device) continue;
      for (const rule of index.forDevice(device)) {
        const metrics = rule.wait.metrics;
        let mine: WaitReading[] | null = null;
        for (const r of list) {
          if (!metrics.includes(r.metric)) continue;
          if (mine) mine.push(r);
          else mine = [r];
        }
        if (mine) pairs.push({ rule, deviceId, readings: mine, key: stateKey(rule.id, deviceId), base: null, result: null, version: null });
      }
    }
    if (!pairs.length) return { raised: 0, cleared: 0, written: [], open: null };
    stepsTotal.inc(pairs.length);
    // lock in one order (rule, device) so concurrent jobs and the timer sweep never deadlock
    pairs.sort((a, b) => (a.rule.id < b.rule.id ? -1 : a.rule.id > b.rule.id ? 1 : a.deviceId < b.deviceId ? -1 : 1));
    // The memory copy is taken before the alarms are read: a copy that another job of this process
    // commits later is then older than the row, and the version check below finds it.
    const misses: Pair[] = [];
    for (const p of pairs) {
      const hit = this.states.get(p.key);
      if (hit) {
        p.base = hit;
        stateCacheTotal.inc({ outcome: 'hit' });
      } else misses.push(p);
    }
    if (misses.length) {
      stateCacheTotal.inc({ outcome: 'miss' }, misses.length);
      await loadStates(tx, orgId, misses, false);
    }
    // with `alsoRead`, the threshold rules' open alarms come in the same statement
    const open = alsoRead
      ? await openAlarms(
          tx,
          orgId,
          [...new Set([...uniqueDevices(pairs), ...alsoRead.deviceIds])],
          [...new Set([...uniqueTypes(pairs), ...alsoRead.types])],
        )
      : await openAlarms(tx, orgId, uniqueDevices(pairs), uniqueTypes(pairs));
    const now = Date.now();
    stepAll(pairs, open, now);
    const stale = await writeStates(tx, orgId, pairs);
    if (stale.length) {
      // changed by another process since this one wrote it: read again under the row lock, with the
      // alarms as they are now, and step afresh (the lock holds until commit: this write cannot miss)
      stateCacheTotal.inc({ outcome: 'stale' }, stale.length);
      await loadStates(tx, orgId, stale, true);
      const fresh = await openAlarms(tx, orgId, uniqueDevices(stale), uniqueTypes(stale));
      for (const p of stale) open.delete(alarmKey(p.deviceId, p.rule.alarmType));
      for (const [k, v] of fresh) open.set(k, v);
      stepAll(stale, open, now);
      if ((await writeStates(tx, orgId, stale)).length) throw new Error('rule states changed under their row locks');
    }
    const changes: Change[] = [];
    const decided = new Set<string>();
    const written: [string, CachedState][] = [];
    for (const p of pairs) {
      const s = p.result as StepResult;
      if (p.version !== null) written.push([p.key, { version: p.version, state: s.state, timer: s.timer }]);
    }
    // Rules sharing an alarm type share the alarm: the most severe rule with a decision decides
    // (`rules` comes most severe first); the pairs themselves are in lock order, not that one.
    const priority = new Map(rules.map((r, i) => [r.id, i]));
    const byPriority = [...pairs].sort((a, b) => (priority.get(a.rule.id) ?? 0) - (priority.get(b.rule.id) ?? 0));
    for (const p of byPriority) {
      const s = p.result as StepResult;
      if (s.decision === 'none') continue;
      const akey = alarmKey(p.deviceId, p.rule.alarmType);
      if (decided.has(akey)) continue;
      decided.add(akey);
      const cur = open.get(akey);
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
    // what was read of the other alarm types (nothing here writes them)
    const openRead = alsoRead ? open : null;
    const r = await applyChanges(tx, orgId, changes, { ...out, actions: this.o.actions });
    return { ...r, written, open: openRead };
  }

  /**
   * Keeps the states a committed job wrote, for the next job (call only after commit: a rolled-back
   * write must not be remembered). A copy older than the one already held is ignored.
   */
  remember(written: readonly [string, CachedState][]): void {
    for (const [key, entry] of written) {
      const had = this.states.get(key);
      if (had && had.version > entry.version) continue;
      this.states.set(key, entry);
    }
  }

  /** Forgets every state held in memory (as a restart does). */
  forgetStates(): void {
    this.states.clear();
  }

  /**
   * Fires due timers: claims up to `batch` due rows of one organization (the most overdue first) with
   * `for update skip locked`, decides each (lib/rules-wait.ts `onDue`), records the firing
   * (`rule_timer_firings`, unique per rule, device, due time and action), applies the alarm change and
   * moves or drops the timer, all in one transaction. Returns the timers fired, 0 when none was due.
   */
  async sweep(batch = 200, onClaim?: (n: number) => Promise<void>): Promise<number> {
    const events: Event[] = [];
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
      await writeTimerStates(tx, org, updates);
      if (firings.length) {
        await sql`
          insert into rule_timer_firings (org_id, rule_id, device_id, due_at, action, outcome, worker)
          select ${org}, r, d, t, a, o, ${WORKER_ID}
          from unnest(${firings.map((f) => f.ruleId)}::uuid[], ${firings.map((f) => f.deviceId)}::uuid[], ${firings.map((f) => f.dueAt)}::timestamptz[],
                      ${firings.map((f) => f.action)}::text[], ${firings.map((f) => f.outcome)}::text[]) as f(r, d, t, a, o)
          on conflict do nothing`.execute(tx);
      }
      await applyChanges(tx, org, changes, { events, dispatch, actions: this.o.actions });
      return due.length;
    });
    if (orgId && events.length) await this.publish(orgId, events, devices);
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

  private publish(orgId: string, events: Event[], devices: Map<string, DeviceScope>): Promise<void> {
    return publishAlarmChanges(this.o, orgId, events, devices);
  }
}

const uniqueDevices = (pairs: readonly Pair[]) => [...new Set(pairs.map((p) => p.deviceId))];
const uniqueTypes = (pairs: readonly Pair[]) => [...new Set(pairs.map((p) => p.rule.alarmType))];

/**
 * Reads the states of `pairs` (created empty where missing): the rows this process has no copy of
 * (read without a lock: the versioned write locks them, in the same (rule, device) order as every other
 * row of the job), or, with `lock`, whose copy went stale (locked, in (rule, device) order).
 */
async function loadStates(tx: Tx, orgId: string, pairs: Pair[], lock: boolean): Promise<void> {
  const ruleIds = pairs.map((p) => p.rule.id);
  const deviceIds = pairs.map((p) => p.deviceId);
  await sql`
    insert into rule_device_state (rule_id, device_id, org_id, state)
    select r, d, ${orgId}, ${EMPTY_STATE}::jsonb from unnest(${ruleIds}::uuid[], ${deviceIds}::uuid[]) as p(r, d)
    on conflict do nothing`.execute(tx);
  const { rows } = await sql<{
    rule_id: string;
    device_id: string;
    state: unknown;
    due_at: Date | null;
    due_action: Timer['action'] | null;
    version: number;
  }>`
    select s.rule_id, s.device_id, s.state, s.due_at, s.due_action, s.version from rule_device_state s
    join unnest(${ruleIds}::uuid[], ${deviceIds}::uuid[]) as p(r, d) on s.rule_id = p.r and s.device_id = p.d
    where s.org_id = ${orgId}
    order by s.rule_id, s.device_id
    ${lock ? sql`for update of s` : sql``}`.execute(tx);
  const byKey = new Map(rows.map((r) => [stateKey(r.rule_id, r.device_id), r]));
  for (const p of pairs) {
    const row = byKey.get(p.key);
    p.read = true;
    // a row gone at once (its rule's condition changed, its device deleted): stepped from empty, and
    // its write finds no row (the job fails and is retried)
    p.base = row
      ? {
          version: row.version,
          state: parseState(row.state),
          timer: row.due_at && row.due_action ? { dueAt: row.due_at.getTime(), action: row.due_action } : null,
        }
      : { version: -1, state: emptyState(), timer: null };
  }
}

/** Steps every pair from its base state with its readings (pure). */
function stepAll(pairs: readonly Pair[], open: ReadonlyMap<string, unknown>, now: number): void {
  for (const p of pairs) {
    const b = p.base as CachedState;
    p.result = step(p.rule.wait, b.state, p.readings, open.has(alarmKey(p.deviceId, p.rule.alarmType)), now, b.timer);
  }
}

const sameTimer = (a: Timer | null, b: Timer | null) =>
  a === b || (a !== null && b !== null && a.dueAt === b.dueAt && a.action === b.action);

/**
 * Writes the states a reading changed, one statement for the batch, each only if its row still has
 * the version it was stepped from (the version trigger gives it a new one); returns the pairs whose
 * row had moved on (changed by another process since). Pairs left unchanged keep the version read.
 */
async function writeStates(tx: Tx, orgId: string, pairs: readonly Pair[]): Promise<Pair[]> {
  const changed: Pair[] = [];
  for (const p of pairs) {
    const b = p.base as CachedState;
    const r = p.result as StepResult;
    if (r.state.lastTs !== b.state.lastTs || !sameTimer(r.timer, b.timer)) changed.push(p);
    else p.version = p.read ? b.version : null;
  }
  if (!changed.length) return [];
  const batch = JSON.stringify(
    changed.map((p) => {
      const r = p.result as StepResult;
      return {
        r: p.rule.id,
        d: p.deviceId,
        v: (p.base as CachedState).version,
        s: r.state,
        t: r.timer ? new Date(r.timer.dueAt).toISOString() : null,
        a: r.timer?.action ?? null,
      };
    }),
  );
  const { rows } = await sql<{ rule_id: string; device_id: string; version: number }>`
    update rule_device_state s set state = v.s, due_at = v.t, due_action = v.a, updated_at = now()
    from jsonb_to_recordset(${batch}::jsonb) as v(r uuid, d uuid, v bigint, s jsonb, t timestamptz, a text)
    where s.org_id = ${orgId} and s.rule_id = v.r and s.device_id = v.d and s.version = v.v
    returning s.rule_id, s.device_id, s.version`.execute(tx);
  const got = new Map(rows.map((r) => [stateKey(r.rule_id, r.device_id), r.version]));
  const stale: Pair[] = [];
  for (const p of changed) {
    const v = got.get(p.key);
    p.version = v ?? null;
    if (v === undefined) stale.push(p);
  }
  return stale;
}

/** The scope (profile, site, site path) of the organization's devices in service among `ids`. */
export async function scopes(tx: Tx, orgId: string, ids: string[]): Promise<DeviceScope[]> {
  const { rows } = await sql<DeviceScope>`
    select d.id, d.profile_id as "profileId", d.site_id as "siteId", s.path::text as "sitePath"
    from devices d left join sites s on s.id = d.site_id and s.org_id = ${orgId}
    where d.org_id = ${orgId} and d.id = any(${ids}::uuid[]) and d.decommissioned_at is null`.execute(tx);
  return rows;
}

/** An open alarm as the decisions read it. */
export interface OpenAlarm {
  id: string;
  severity: string;
  readingTs: number | null;
}

/** The open alarms of these devices and types, by {@link alarmKey}. */
export async function openAlarms(tx: Tx, orgId: string, deviceIds: string[], types: string[]): Promise<Map<string, OpenAlarm>> {
  if (!deviceIds.length) return new Map();
  const { rows } = await sql<{ id: string; device_id: string; type: string; severity: string; reading_ts: number | null }>`
    select id, device_id, type, severity, reading_ts from alarms
    where org_id = ${orgId} and cleared_at is null and device_id = any(${deviceIds}::uuid[]) and type = any(${types}::text[])`.execute(tx);
  return new Map(rows.map((r) => [alarmKey(r.device_id, r.type), { id: r.id, severity: r.severity, readingTs: r.reading_ts }]));
}

/** The sweep's writes of the rows it claimed (the version trigger moves their versions: memory copies elsewhere go stale). */
async function writeTimerStates(
  tx: Tx,
  orgId: string,
  updates: { ruleId: string; deviceId: string; state: WaitState; timer: Timer | null }[],
) {
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
  out: { events: Event[]; dispatch: string[]; actions?: RuleActionRunner | undefined },
): Promise<{ raised: number; cleared: number }> {
  const { events } = out;
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
  const clearedBy = new Map(clears.map((c) => [c.alarmId, c.rule]));
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
