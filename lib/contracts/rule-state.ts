/**
 * Redis state about rules shared by the rules subgraph and the `rule-eval` workers:
 *
 * - `<prefix>rules:ver:<orgId>`: a counter the rules subgraph increments (INCR) after every committed
 *   change to an organization's rules; workers compare it with the version of their cached copy
 *   ({@link rulesVersionKey}).
 * - `<prefix>rules:stats:<ruleId>`: a hash of one rule's evaluation counters, `evaluations`,
 *   `readings`, `matches` (HINCRBY) and `lastEvaluatedAt` (ms), written by workers
 *   ({@link addRuleStats}) and read by the rules subgraph ({@link parseRuleStats}).
 */

export const rulesVersionKey = (prefix: string, orgId: string) => `${prefix}rules:ver:${orgId}`;
export const ruleStatsKey = (prefix: string, ruleId: string) => `${prefix}rules:stats:${ruleId}`;

export interface RuleStats {
  evaluations: number;
  readings: number;
  matches: number;
  lastEvaluatedAt: Date | null;
}

/** Adds one evaluation of a rule to its counters, in the caller's pipeline. */
export function addRuleStats(
  p: { hincrby(key: string, field: string, n: number): unknown; hset(key: string, field: string, value: number): unknown },
  prefix: string,
  ruleId: string,
  n: { readings: number; matched: number },
  now: number,
): void {
  const key = ruleStatsKey(prefix, ruleId);
  p.hincrby(key, 'evaluations', 1);
  p.hincrby(key, 'readings', n.readings);
  p.hincrby(key, 'matches', n.matched);
  p.hset(key, 'lastEvaluatedAt', now);
}

/**
 * A rule stats hash as numbers. Counters are only ever incremented, so a missing or unreadable one
 * is zero (and `lastEvaluatedAt` null): a rule never evaluated has no hash at all.
 */
export function parseRuleStats(hash: Record<string, string> | null | undefined): RuleStats {
  const n = (k: string) => {
    const v = Number(hash?.[k]);
    return Number.isFinite(v) ? v : 0;
  };
  const last = Number(hash?.lastEvaluatedAt);
  return {
    evaluations: n('evaluations'),
    readings: n('readings'),
    matches: n('matches'),
    lastEvaluatedAt: hash?.lastEvaluatedAt && Number.isFinite(last) ? new Date(last) : null,
  };
}
