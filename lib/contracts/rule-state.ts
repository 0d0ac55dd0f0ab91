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

/** {@link addRuleStatsBatch}'s script: per key, the four writes of {@link addRuleStats}. */
const ADD_STATS = `local now = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'evaluations', 1)
  redis.call('HINCRBY', key, 'readings', ARGV[i * 2])
  redis.call('HINCRBY', key, 'matches', ARGV[i * 2 + 1])
  redis.call('HSET', key, 'lastEvaluatedAt', now)
end
return #KEYS`;

/** Rules per script call of {@link addRuleStatsBatch} (bounds how long one call holds Redis). */
const STATS_CHUNK = 1000;

/**
 * Adds one evaluation of each rule to its counters, as {@link addRuleStats} does for one, in one
 * command per 1,000 rules (a Lua script) instead of four per rule: a job of 10,000 rules' organization
 * touches hundreds of rules, and four commands each were most of the evaluator's Redis traffic.
 */
export function addRuleStatsBatch(
  p: { eval(script: string, numKeys: number, ...args: (string | number)[]): unknown },
  prefix: string,
  perRule: Iterable<[ruleId: string, n: { readings: number; matched: number }]>,
  now: number,
): void {
  let keys: string[] = [];
  let args: (string | number)[] = [now];
  const flush = () => {
    if (keys.length) p.eval(ADD_STATS, keys.length, ...keys, ...args);
    keys = [];
    args = [now];
  };
  for (const [ruleId, n] of perRule) {
    keys.push(ruleStatsKey(prefix, ruleId));
    args.push(n.readings, n.matched);
    if (keys.length >= STATS_CHUNK) flush();
  }
  flush();
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
