import DataLoader from 'dataloader';
import type { ExecutionRow, RuleRow, RuleStats, RulesRepositories } from './repositories/index.js';

/** One `Rule.executions` request: the rule and how many of its newest executions. */
export interface ExecutionsKey {
  ruleId: string;
  first: number;
}

/**
 * Per-request loaders of the rules subgraph, bound to the caller's organization: one SQL statement
 * (or one Redis pipeline) per batch, so `_entities` for many rules, or a page of rules with their
 * stats and executions, costs a constant number of round trips.
 */
export interface RulesLoaders {
  /** rule id → the rule (deleted ones included) when it is the organization's, else null */
  rule: DataLoader<string, RuleRow | null>;
  stats: DataLoader<string, RuleStats>;
  executions: DataLoader<ExecutionsKey, ExecutionRow[], string>;
}

export function createLoaders(repos: RulesRepositories, orgId: string): RulesLoaders {
  const repo = repos.rules;
  const opts = { maxBatchSize: 1000 };
  return {
    rule: new DataLoader(async (ids) => {
      const rows = new Map((await repo.byIds(orgId, ids)).map((r) => [r.id, r]));
      return ids.map((id) => rows.get(id) ?? null);
    }, opts),
    stats: new DataLoader((ids) => repo.stats(ids), opts),
    executions: new DataLoader(
      async (keys) => {
        // One lateral read per rule, as deep as its largest `first` in the batch.
        const depth = new Map<string, number>();
        for (const k of keys) depth.set(k.ruleId, Math.max(depth.get(k.ruleId) ?? 0, k.first));
        const byRule = new Map<string, ExecutionRow[]>();
        for (const row of await repo.executions(
          orgId,
          [...depth].map(([ruleId, first]) => ({ ruleId, first })),
        )) {
          const list = byRule.get(row.ruleId) ?? [];
          list.push(row);
          byRule.set(row.ruleId, list);
        }
        return keys.map((k) => (byRule.get(k.ruleId) ?? []).slice(0, k.first));
      },
      { ...opts, cacheKeyFn: (k) => `${k.ruleId}:${k.first}` },
    ),
  };
}
