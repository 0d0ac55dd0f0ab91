/**
 * Threshold rules as pure logic, shared by the rules subgraph (validation, dry runs) and the
 * `rule-eval` worker (evaluation). No I/O here; the queue, its job and the rules' Redis keys are
 * contracts (lib/contracts/rule-eval.ts, rule-state.ts). See docs/alarms-rules.md.
 */

export const OPERATORS = ['gt', 'gte', 'lt', 'lte', 'eq', 'neq'] as const;
export type Operator = (typeof OPERATORS)[number];

/** Alarm severities, most severe first. */
export const SEVERITIES = ['critical', 'major', 'minor', 'warning', 'indeterminate'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** A rule's test: `value <operator> threshold`; while its alarm is open, the clear test uses `clearThreshold`. */
export interface Condition {
  operator: Operator;
  threshold: number;
  /** Hysteresis: an open alarm clears only once the value no longer passes this threshold. @default threshold */
  clearThreshold?: number | null;
}

/** Does `value` pass `operator threshold`? */
export function passes(operator: Operator, threshold: number, value: number): boolean {
  switch (operator) {
    case 'gt':
      return value > threshold;
    case 'gte':
      return value >= threshold;
    case 'lt':
      return value < threshold;
    case 'lte':
      return value <= threshold;
    case 'eq':
      return value === threshold;
    case 'neq':
      return value !== threshold;
  }
}

/**
 * Why a condition cannot be used, or null. Thresholds must be finite; a clear threshold only makes
 * sense for ordered comparisons and must lie on the clearing side (below a `gt`/`gte` threshold,
 * above a `lt`/`lte` one), or the alarm would clear and raise on the same value.
 */
export function conditionProblem(c: Condition): string | null {
  if (!Number.isFinite(c.threshold)) return 'threshold must be a finite number';
  const ct = c.clearThreshold;
  if (ct === undefined || ct === null) return null;
  if (!Number.isFinite(ct)) return 'clearThreshold must be a finite number';
  if (c.operator === 'eq' || c.operator === 'neq') return 'clearThreshold applies only to GT, GTE, LT and LTE';
  if ((c.operator === 'gt' || c.operator === 'gte') && ct > c.threshold) return 'clearThreshold must not be above threshold for GT/GTE';
  if ((c.operator === 'lt' || c.operator === 'lte') && ct < c.threshold) return 'clearThreshold must not be below threshold for LT/LTE';
  return null;
}

/** What one reading does to a device's alarm of one rule. */
export type Decision = 'raise' | 'keep' | 'clear' | 'none';

/**
 * The decision for a reading, given whether the device's alarm for this rule is open:
 * closed + passes → raise; open + still passes the clear threshold → keep (refresh value);
 * open + no longer passes → clear (or keep, when the rule does not clear automatically).
 */
export function decide(c: Condition, value: number, open: boolean, autoClear = true): Decision {
  if (!open) return passes(c.operator, c.threshold, value) ? 'raise' : 'none';
  const stays = passes(c.operator, c.clearThreshold ?? c.threshold, value);
  if (stays) return 'keep';
  return autoClear ? 'clear' : 'keep';
}

const SYMBOL: Record<Operator, string> = { gt: '>', gte: '≥', lt: '<', lte: '≤', eq: '=', neq: '≠' };

/** The alarm message of a rule's reading, e.g. `voltage 262.1 > 253`. */
export function describeMatch(metric: string, c: Condition, value: number): string {
  return `${metric} ${value} ${SYMBOL[c.operator]} ${c.threshold}`;
}

/** A rule as the evaluator needs it. */
export interface EvalRule extends Condition {
  id: string;
  metric: string;
  severity: Severity;
  alarmType: string;
  autoClear: boolean;
  /** ltree path of the scope site (ids as labels), or null for the whole organization */
  sitePath: string | null;
  profileId: string | null;
  /** device actions (lib/rule-actions.ts), empty: none */
  actions?: readonly import('./rule-actions.js').RuleAction[];
}

/** Is a device (its site's ltree path and its profile) inside a rule's scope? */
export function inScope(
  rule: Pick<EvalRule, 'sitePath' | 'profileId'>,
  device: { sitePath: string | null; profileId: string | null },
): boolean {
  if (rule.profileId && rule.profileId !== device.profileId) return false;
  if (rule.sitePath) {
    const p = device.sitePath;
    if (!p || !(p === rule.sitePath || p.startsWith(`${rule.sitePath}.`))) return false;
  }
  return true;
}

/**
 * An index of rules by scope, so an evaluation looks up a device's rules (its profile or none, × its
 * site's ancestors or none) instead of testing every rule against every device: with 10,000 rules
 * scoped to streets and lamp models, a device meets the ten that concern it. `forDevice` keeps the
 * rules' order (callers sort them most severe first).
 */
export class ScopeIndex<R extends Pick<EvalRule, 'sitePath' | 'profileId'>> {
  private readonly buckets = new Map<string, { i: number; rule: R }[]>();

  constructor(readonly rules: readonly R[]) {
    rules.forEach((rule, i) => {
      const key = `${rule.profileId ?? ''}|${rule.sitePath ?? ''}`;
      const list = this.buckets.get(key) ?? [];
      list.push({ i, rule });
      this.buckets.set(key, list);
    });
  }

  /** answers by (profile, site path): devices of one street and model share theirs */
  private readonly memo = new Map<string, readonly R[]>();

  /**
   * The rules whose scope includes the device, in the order they were given. The list returned is
   * shared by every device of the same profile and site (do not change it).
   */
  forDevice(device: { sitePath: string | null; profileId: string | null }): readonly R[] {
    const key = `${device.profileId ?? ''}|${device.sitePath ?? ''}`;
    let hit = this.memo.get(key);
    if (!hit) {
      hit = this.lookup(device);
      // bounded: a rule list lives until its organization's rules change
      if (this.memo.size < 100_000) this.memo.set(key, hit);
    }
    return hit;
  }

  private lookup(device: { sitePath: string | null; profileId: string | null }): R[] {
    const paths = [''];
    if (device.sitePath) {
      const labels = device.sitePath.split('.');
      for (let n = 1; n <= labels.length; n++) paths.push(labels.slice(0, n).join('.'));
    }
    const profiles = device.profileId ? ['', device.profileId] : [''];
    const hits: { i: number; rule: R }[] = [];
    for (const p of profiles) for (const s of paths) for (const h of this.buckets.get(`${p}|${s}`) ?? []) hits.push(h);
    if (hits.length > 1) hits.sort((a, b) => a.i - b.i);
    return hits.map((h) => h.rule);
  }
}

const indexes = new WeakMap<readonly object[], ScopeIndex<Pick<EvalRule, 'sitePath' | 'profileId'>>>();

/** The {@link ScopeIndex} of a (cached, unchanging) rule list, built once per list. */
export function scopeIndexOf<R extends Pick<EvalRule, 'sitePath' | 'profileId'>>(rules: readonly R[]): ScopeIndex<R> {
  let index = indexes.get(rules) as ScopeIndex<R> | undefined;
  if (!index) {
    index = new ScopeIndex(rules);
    indexes.set(rules, index as unknown as ScopeIndex<Pick<EvalRule, 'sitePath' | 'profileId'>>);
  }
  return index;
}
