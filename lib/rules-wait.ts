/**
 * Rules that wait, as pure logic: a condition that must hold for a duration ("power < 5 while
 * lampState == 1, for 10 minutes"), that must be met N times in a window ("3 times in 10 minutes"),
 * a compound or rate-of-change condition (lib/rule-expr.ts), and no data for N seconds. Each rule
 * keeps a small state per device between jobs (latest samples, since when the condition holds, the
 * recent hits), and asks for a **timer** when something must happen without a new reading: the
 * workers store the timer durably (`rule_device_state.due_at`) and call {@link onDue} when it comes.
 * No I/O here. See docs/alarms-rules.md.
 */
import { type Cmp, type Expr, evaluate, parseExpression, type Sample } from './rule-expr.js';
import type { Operator } from './rules.js';

/** A stateful rule as the evaluator needs it. */
export interface WaitRule {
  kind: 'condition' | 'no_data';
  /** `condition`: raises when this holds (with `forMs` / `repeatCount` when set) */
  expr: Expr | null;
  /** `condition`: an open alarm stays while this holds (hysteresis); default `expr` */
  holdExpr?: Expr | null;
  /** metrics the rule reads (`no_data`: the silent metric; empty: any metric) */
  metrics: readonly string[];
  /** metrics read through `rate()` */
  rates?: readonly string[];
  /** the condition must hold for this long (device time) */
  forMs: number | null;
  /** the condition must be met by this many readings within `windowMs` */
  repeatCount: number | null;
  windowMs: number | null;
  /** `no_data`: raise after this long without a reading */
  noDataMs: number | null;
  autoClear: boolean;
}

/** What a rule remembers of one device between jobs (stored as JSON). */
export interface WaitState {
  latest: Record<string, Sample>;
  previous: Record<string, Sample>;
  /** device time since which the condition holds without a break (duration rules) */
  since: number | null;
  /** device times of the readings that met the condition within the window (repeating rules) */
  hits: number[];
  /** device time of the newest reading applied (older ones are ignored) */
  lastTs: number | null;
}

/** Something to do at `dueAt` (ms since epoch) if no reading changes it first. */
export interface Timer {
  dueAt: number;
  action: 'raise' | 'clear';
}

export type WaitDecision = 'raise' | 'keep' | 'clear' | 'none';

export interface StepResult {
  state: WaitState;
  decision: WaitDecision;
  /** the timer to keep (null: none) */
  timer: Timer | null;
  /** the value that decided (the first metric's latest), for the alarm */
  value: number | null;
  /** device time of the deciding reading */
  ts: number | null;
}

export const emptyState = (): WaitState => ({ latest: {}, previous: {}, since: null, hits: [], lastTs: null });

/** A reading of one device. */
export interface WaitReading {
  metric: string;
  ts: number;
  value: number;
}

/**
 * Applies a device's new readings (any order; older than the state's newest are ignored) to a rule
 * whose alarm for the device is `open` or not. `now` is the wall clock (no-data timers count from
 * arrival, so a device with a wrong clock cannot postpone its own silence alarm).
 */
export function step(
  rule: WaitRule,
  prior: WaitState,
  readings: readonly WaitReading[],
  open: boolean,
  now: number,
  timer: Timer | null,
): StepResult {
  // `previous` is read only by rate(): kept for the rule's `rates` alone (every metric when a rule does
  // not say); of the hits, a repeating rule needs only the newest `repeatCount` (enough to decide, and
  // the last one times the clear). The decisions are those of the whole history; the stored state stays small.
  const rates = rule.rates;
  const state: WaitState = {
    latest: { ...prior.latest },
    previous: rates && !rates.length ? {} : { ...prior.previous },
    since: prior.since,
    hits: [...prior.hits],
    lastTs: prior.lastTs,
  };
  const fresh = readings
    .filter((r) => (rule.metrics.length === 0 || rule.metrics.includes(r.metric)) && (state.lastTs === null || r.ts > state.lastTs))
    .sort((a, b) => a.ts - b.ts);
  if (!fresh.length) return { state, decision: 'none', timer, value: null, ts: null };

  if (rule.kind === 'no_data') {
    const last = fresh.at(-1) as WaitReading;
    state.lastTs = last.ts;
    state.latest[last.metric] = [last.ts, last.value];
    const next: Timer = { dueAt: now + (rule.noDataMs ?? 0), action: 'raise' };
    return { state, decision: open ? (rule.autoClear ? 'clear' : 'keep') : 'none', timer: next, value: last.value, ts: last.ts };
  }

  let isOpen = open;
  let kept = false;
  let decidedTs: number | null = null;
  let next = timer;
  const note = (d: 'raise' | 'keep' | 'clear', ts: number) => {
    if (d !== 'clear') kept = true;
    decidedTs = ts;
  };
  // several metrics of one device time are applied together before evaluating
  for (let i = 0; i < fresh.length; ) {
    const ts = (fresh[i] as WaitReading).ts;
    for (; i < fresh.length && (fresh[i] as WaitReading).ts === ts; i++) {
      const r = fresh[i] as WaitReading;
      const had = state.latest[r.metric];
      if (had && (!rates || rates.includes(r.metric))) state.previous[r.metric] = had;
      state.latest[r.metric] = [r.ts, r.value];
    }
    state.lastTs = ts;
    const cond = evaluate(rule.expr as Expr, state);
    if (cond === null) continue;
    const holds = isOpen ? evaluate(rule.holdExpr ?? (rule.expr as Expr), state) : cond;

    if (rule.repeatCount && rule.windowMs) {
      const from = ts - rule.windowMs;
      state.hits = state.hits.filter((h) => h > from);
      if (cond) {
        state.hits.push(ts);
        if (state.hits.length > rule.repeatCount) state.hits.splice(0, state.hits.length - rule.repeatCount);
      }
      if (cond && state.hits.length >= rule.repeatCount) {
        note(isOpen ? 'keep' : 'raise', ts);
        isOpen = true;
      }
      // a repeating alarm clears once a whole window passes without a hit
      const lastHit = state.hits.at(-1);
      next = isOpen && rule.autoClear && lastHit !== undefined ? { dueAt: lastHit + rule.windowMs, action: 'clear' } : null;
      continue;
    }

    if (!cond) state.since = null;
    else state.since ??= ts;

    if (isOpen) {
      if (holds) note('keep', ts);
      else if (rule.autoClear) {
        note('clear', ts);
        isOpen = false;
      }
      next = null;
      continue;
    }
    if (!cond) {
      next = null;
      continue;
    }
    if (!rule.forMs || ts - (state.since as number) >= rule.forMs) {
      note('raise', ts);
      isOpen = true;
      next = null;
    } else {
      next = { dueAt: (state.since as number) + rule.forMs, action: 'raise' };
    }
  }
  // a raise and a clear within one job net out: only the change from `open` to the final state is stored
  const decision: WaitDecision = open === isOpen ? (isOpen && kept ? 'keep' : 'none') : isOpen ? 'raise' : 'clear';
  const first = rule.metrics[0];
  const value = first ? (state.latest[first]?.[1] ?? null) : null;
  return { state, decision, timer: next, value, ts: decidedTs };
}

/**
 * A timer came due at `now` with no reading since: a duration rule whose condition still holds (as
 * last reported) raises; a silent device raises its no-data alarm; a repeating alarm whose window
 * passed without a hit clears. Returns what to do and the timer to keep.
 */
export function onDue(
  rule: WaitRule,
  state: WaitState,
  timer: Timer,
  open: boolean,
  now: number,
): { decision: WaitDecision; timer: Timer | null } {
  if (now < timer.dueAt) return { decision: 'none', timer };
  if (timer.action === 'clear') {
    const lastHit = state.hits.at(-1);
    if (rule.windowMs && lastHit !== undefined && lastHit + rule.windowMs > now)
      return { decision: 'none', timer: { dueAt: lastHit + rule.windowMs, action: 'clear' } };
    return { decision: open && rule.autoClear ? 'clear' : 'none', timer: null };
  }
  if (open) return { decision: 'none', timer: null };
  if (rule.kind === 'no_data') return { decision: 'raise', timer: null };
  if (state.since === null || !rule.forMs) return { decision: 'none', timer: null };
  return { decision: 'raise', timer: null };
}

/** The alarm message of a stateful rule's decision. */
export function describeWait(rule: WaitRule, source: string): string {
  if (rule.kind === 'no_data') {
    const what = rule.metrics[0] ? `no ${rule.metrics[0]} reading` : 'no reading';
    return `${what} for ${formatDuration(rule.noDataMs ?? 0)}`;
  }
  if (rule.repeatCount && rule.windowMs) return `${source}: ${rule.repeatCount} times in ${formatDuration(rule.windowMs)}`;
  if (rule.forMs) return `${source} for ${formatDuration(rule.forMs)}`;
  return source;
}

export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s % 3600 === 0 && s >= 3600) return `${s / 3600} h`;
  if (s % 60 === 0 && s >= 60) return `${s / 60} min`;
  return `${s} s`;
}

/** Rule kinds (upper-case in GraphQL). */
export const RULE_KINDS = ['threshold', 'expression', 'no_data'] as const;
export type RuleKind = (typeof RULE_KINDS)[number];

/** The stored fields that decide how a rule evaluates. */
export interface RuleShape {
  kind: RuleKind;
  metric: string;
  operator: Operator | null;
  threshold: number | null;
  clearThreshold: number | null;
  expression: string | null;
  forSeconds: number | null;
  repeatCount: number | null;
  windowSeconds: number | null;
  noDataSeconds: number | null;
  autoClear: boolean;
}

/** Rules the stateless threshold path cannot evaluate: they keep state per device (and may need timers). */
export const isWaiting = (r: Pick<RuleShape, 'kind' | 'forSeconds' | 'repeatCount'>) =>
  r.kind !== 'threshold' || r.forSeconds !== null || r.repeatCount !== null;

const CMP: Record<Operator, Cmp> = { gt: '>', gte: '>=', lt: '<', lte: '<=', eq: '==', neq: '!=' };
const SYMBOLS: Record<Operator, string> = { gt: '>', gte: '>=', lt: '<', lte: '<=', eq: '==', neq: '!=' };

/** The condition of a rule as source text (a threshold rule as the expression it is equivalent to). */
export function conditionSource(r: RuleShape): string {
  if (r.kind === 'expression') return r.expression ?? '';
  if (r.kind === 'no_data') return `no ${r.metric}`;
  return `${r.metric} ${SYMBOLS[r.operator as Operator]} ${r.threshold}`;
}

/** A stored rule as a {@link WaitRule} (throws ExpressionError for a bad expression: validated on write). */
export function compileWaitRule(r: RuleShape): WaitRule {
  const base = {
    forMs: r.forSeconds === null ? null : r.forSeconds * 1000,
    repeatCount: r.repeatCount,
    windowMs: r.windowSeconds === null ? null : r.windowSeconds * 1000,
    autoClear: r.autoClear,
  };
  if (r.kind === 'no_data')
    return { kind: 'no_data', expr: null, metrics: [r.metric], rates: [], noDataMs: (r.noDataSeconds ?? 0) * 1000, ...base };
  if (r.kind === 'expression') {
    const p = parseExpression(r.expression ?? '');
    return { kind: 'condition', expr: p.ast, metrics: p.metrics, rates: p.rates, noDataMs: null, ...base };
  }
  const op = r.operator as Operator;
  const metric: Expr = { t: 'metric', name: r.metric };
  const expr: Expr = { t: 'cmp', op: CMP[op], l: metric, r: { t: 'num', v: r.threshold as number } };
  const holdExpr: Expr | null =
    r.clearThreshold === null ? null : { t: 'cmp', op: CMP[op], l: metric, r: { t: 'num', v: r.clearThreshold } };
  return { kind: 'condition', expr, holdExpr, metrics: [r.metric], rates: [], noDataMs: null, ...base };
}

/** An alarm a replay would have raised (or cleared). */
export interface ReplayEvent {
  change: 'raise' | 'clear';
  ts: number;
  value: number | null;
}

/**
 * Replays one device's stored readings of a time window through a rule, as the workers would have
 * evaluated them live, timers included (`dryRunRule` with a window). Readings must be of this device;
 * any order. The device starts with no open alarm and no state at `from`; timers due by `to` fire.
 */
export function replay(rule: WaitRule, readings: readonly WaitReading[], from: number, to: number): ReplayEvent[] {
  const out: ReplayEvent[] = [];
  let state = emptyState();
  let open = false;
  let timer: Timer | null = rule.kind === 'no_data' ? { dueAt: from + (rule.noDataMs ?? 0), action: 'raise' } : null;
  const fire = (until: number) => {
    while (timer && timer.dueAt <= until) {
      const at = timer.dueAt;
      const r = onDue(rule, state, timer, open, at);
      if (r.decision === 'raise') {
        open = true;
        out.push({ change: 'raise', ts: at, value: null });
      } else if (r.decision === 'clear') {
        open = false;
        out.push({ change: 'clear', ts: at, value: null });
      }
      timer = r.timer && r.timer.dueAt > at ? r.timer : null;
    }
  };
  const sorted = [...readings].sort((a, b) => a.ts - b.ts);
  for (let i = 0; i < sorted.length; ) {
    const ts = (sorted[i] as WaitReading).ts;
    const group: WaitReading[] = [];
    for (; i < sorted.length && (sorted[i] as WaitReading).ts === ts; i++) group.push(sorted[i] as WaitReading);
    fire(ts - 1);
    const s = step(rule, state, group, open, ts, timer);
    state = s.state;
    timer = s.timer;
    if (s.decision === 'raise') {
      open = true;
      out.push({ change: 'raise', ts, value: s.value });
    } else if (s.decision === 'clear') {
      open = false;
      out.push({ change: 'clear', ts, value: s.value });
    }
  }
  fire(to);
  return out;
}
