import { describe, expect, it } from 'vitest';
import { conditionProblem, decide, describeMatch, inScope, passes, ScopeIndex } from './rules.js';

describe('rule conditions', () => {
  it('compares a value with the threshold for every operator', () => {
    expect([passes('gt', 10, 11), passes('gt', 10, 10)]).toEqual([true, false]);
    expect([passes('gte', 10, 10), passes('gte', 10, 9)]).toEqual([true, false]);
    expect([passes('lt', 10, 9), passes('lt', 10, 10)]).toEqual([true, false]);
    expect([passes('lte', 10, 10), passes('lte', 10, 11)]).toEqual([true, false]);
    expect([passes('eq', 1, 1), passes('eq', 1, 0)]).toEqual([true, false]);
    expect([passes('neq', 1, 0), passes('neq', 1, 1)]).toEqual([true, false]);
  });

  it('raises on a breach, keeps while the value stays past the clear threshold and clears after it', () => {
    const c = { operator: 'gt' as const, threshold: 253, clearThreshold: 248 };
    expect(decide(c, 250, false)).toBe('none');
    expect(decide(c, 254, false)).toBe('raise');
    expect(decide(c, 250, true)).toBe('keep');
    expect(decide(c, 248, true)).toBe('clear');
    expect(decide(c, 240, true, false)).toBe('keep');
  });

  it('clears at the threshold itself when there is no clear threshold', () => {
    const c = { operator: 'lt' as const, threshold: 0.1 };
    expect(decide(c, 0.05, false)).toBe('raise');
    expect(decide(c, 0.1, true)).toBe('clear');
  });

  it('refuses thresholds that are not finite and clear thresholds on the wrong side', () => {
    expect(conditionProblem({ operator: 'gt', threshold: Number.NaN })).toMatch(/finite/);
    expect(conditionProblem({ operator: 'gt', threshold: 250, clearThreshold: 260 })).toMatch(/above/);
    expect(conditionProblem({ operator: 'lt', threshold: 250, clearThreshold: 240 })).toMatch(/below/);
    expect(conditionProblem({ operator: 'eq', threshold: 1, clearThreshold: 1 })).toMatch(/only/);
    expect(conditionProblem({ operator: 'gte', threshold: 250, clearThreshold: 245 })).toBeNull();
    expect(conditionProblem({ operator: 'neq', threshold: 1, clearThreshold: null })).toBeNull();
  });

  it('scopes a rule to a site subtree by path prefix at label boundaries, and to a profile', () => {
    const rule = { sitePath: 'a.b', profileId: 'p' };
    expect(inScope(rule, { sitePath: 'a.b', profileId: 'p' })).toBe(true);
    expect(inScope(rule, { sitePath: 'a.b.c', profileId: 'p' })).toBe(true);
    expect(inScope(rule, { sitePath: 'a.bc', profileId: 'p' })).toBe(false);
    expect(inScope(rule, { sitePath: 'a', profileId: 'p' })).toBe(false);
    expect(inScope(rule, { sitePath: null, profileId: 'p' })).toBe(false);
    expect(inScope(rule, { sitePath: 'a.b', profileId: 'q' })).toBe(false);
    expect(inScope({ sitePath: null, profileId: null }, { sitePath: null, profileId: null })).toBe(true);
  });

  it('describes a match for the alarm message', () => {
    expect(describeMatch('voltage', { operator: 'gte', threshold: 253 }, 260.5)).toBe('voltage 260.5 ≥ 253');
  });
});

describe('the scope index', () => {
  it('finds the same rules as inScope, in the given order', () => {
    const rules = [
      { id: 'a', sitePath: null, profileId: null },
      { id: 'b', sitePath: 'c1.s1', profileId: 'p1' },
      { id: 'c', sitePath: 'c1', profileId: null },
      { id: 'd', sitePath: 'c2', profileId: null },
      { id: 'e', sitePath: null, profileId: 'p2' },
      { id: 'f', sitePath: 'c1.s1.x', profileId: null },
    ];
    const index = new ScopeIndex(rules);
    const devices = [
      { sitePath: 'c1.s1', profileId: 'p1' },
      { sitePath: 'c1.s10', profileId: 'p1' },
      { sitePath: null, profileId: 'p2' },
      { sitePath: 'c2.s3', profileId: null },
    ];
    for (const d of devices) expect(index.forDevice(d).map((r) => r.id)).toEqual(rules.filter((r) => inScope(r, d)).map((r) => r.id));
    expect(index.forDevice(devices[0] as (typeof devices)[number]).map((r) => r.id)).toEqual(['a', 'b', 'c']);
  });
});
