import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { REDIS_URL } from '../../test/support/env.js';
import { addRuleStats, addRuleStatsBatch, parseRuleStats, ruleStatsKey, rulesVersionKey } from './rule-state.js';

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

  it('adds a batch of rules in one script call to the same hashes as one rule at a time (real Redis)', async () => {
    const redis = new Redis(REDIS_URL);
    const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
    try {
      const one = redis.pipeline();
      addRuleStats(one, prefix, 'a', { readings: 4, matched: 1 }, 1000);
      addRuleStats(one, prefix, 'b', { readings: 2, matched: 0 }, 1000);
      await one.exec();
      const batch = redis.pipeline();
      const perRule = Array.from({ length: 1500 }, (_, i): [string, { readings: number; matched: number }] => [
        i === 0 ? 'a' : i === 1 ? 'b' : `r${i}`,
        { readings: 3, matched: i % 2 },
      ]);
      addRuleStatsBatch(batch, prefix, perRule, 2000);
      expect(batch.length).toBe(2); // 1,000 rules per call
      await batch.exec();
      expect(parseRuleStats(await redis.hgetall(ruleStatsKey(prefix, 'a')))).toEqual({
        evaluations: 2,
        readings: 7,
        matches: 1,
        lastEvaluatedAt: new Date(2000),
      });
      expect(parseRuleStats(await redis.hgetall(ruleStatsKey(prefix, 'b')))).toEqual({
        evaluations: 2,
        readings: 5,
        matches: 1,
        lastEvaluatedAt: new Date(2000),
      });
      expect(parseRuleStats(await redis.hgetall(ruleStatsKey(prefix, 'r1499')))).toMatchObject({ evaluations: 1, readings: 3, matches: 1 });
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    }
  });
});
