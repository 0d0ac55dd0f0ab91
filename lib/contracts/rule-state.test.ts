import { describe, expect, it } from 'vitest';
import { addRuleStats, parseRuleStats, ruleStatsKey, rulesVersionKey } from './rule-state.js';

describe('rule state contract', () => {
  it('names the version counter per organization and the stats hash per rule', () => {
    expect(rulesVersionKey('p:', 'o1')).toBe('p:rules:ver:o1');
    expect(ruleStatsKey('p:', 'r1')).toBe('p:rules:stats:r1');
  });

  it('reads back the counters it adds, as Redis returns them (text)', () => {
    const hash: Record<string, string> = {};
    const p = {
      hincrby: (key: string, field: string, n: number) => {
        expect(key).toBe('p:rules:stats:r1');
        hash[field] = String(Number(hash[field] ?? 0) + n);
      },
      hset: (_key: string, field: string, value: number) => {
        hash[field] = String(value);
      },
    };
    addRuleStats(p, 'p:', 'r1', { readings: 4, matched: 1 }, 1000);
    addRuleStats(p, 'p:', 'r1', { readings: 2, matched: 0 }, 2000);
    expect(parseRuleStats(hash)).toEqual({ evaluations: 2, readings: 6, matches: 1, lastEvaluatedAt: new Date(2000) });
  });

  it('reads a rule never evaluated, and unreadable counters, as zero', () => {
    expect(parseRuleStats(null)).toEqual({ evaluations: 0, readings: 0, matches: 0, lastEvaluatedAt: null });
    expect(parseRuleStats({ evaluations: 'x', readings: '3', lastEvaluatedAt: 'soon' })).toEqual({
      evaluations: 0,
      readings: 3,
      matches: 0,
      lastEvaluatedAt: null,
    });
  });
});
