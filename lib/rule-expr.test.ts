import { describe, expect, it } from 'vitest';
import { ExpressionError, evaluate, parseExpression } from './rule-expr.js';

const at = (src: string) => {
  try {
    parseExpression(src);
  } catch (e) {
    if (e instanceof ExpressionError) return { position: e.position, reason: e.reason };
    throw e;
  }
  throw new Error(`parsed: ${src}`);
};
const run = (src: string, latest: Record<string, number>, previous: Record<string, [number, number]> = {}) =>
  evaluate(parseExpression(src).ast, {
    latest: Object.fromEntries(Object.entries(latest).map(([k, v]) => [k, [60_000, v] as const])),
    previous,
  });

describe('rule expressions', () => {
  it('parse a compound condition and list its metrics', () => {
    const p = parseExpression('power < 5 and (lampState == true or mode != 2)');
    expect(p.metrics).toEqual(['power', 'lampState', 'mode']);
    expect(p.rates).toEqual([]);
  });

  it('evaluate AND before OR, NOT, arithmetic and comparisons', () => {
    expect(run('a > 1 or b > 1 and c > 1', { a: 2, b: 0, c: 0 })).toBe(true);
    expect(run('(a > 1 or b > 1) and c > 1', { a: 2, b: 0, c: 0 })).toBe(false);
    expect(run('not a > 1', { a: 0 })).toBe(true);
    expect(run('!(a >= 1) || a * 2 + 1 == 7', { a: 3 })).toBe(true);
    expect(run('abs(a - b) > 5', { a: 1, b: 10 })).toBe(true);
    expect(run('-a < 0 && a / 2 <= 1.5e0', { a: 3 })).toBe(true);
    expect(run('lampState == true && power < 5', { lampState: 1, power: 2 })).toBe(true);
  });

  it('are unknown (null) while a metric has no value, except where AND/OR decide without it', () => {
    expect(run('a > 1 and b > 1', { a: 2 })).toBeNull();
    expect(run('a > 1 and b > 1', { a: 0 })).toBe(false);
    expect(run('a > 1 or b > 1', { a: 2 })).toBe(true);
    expect(run('a / b > 1', { a: 1, b: 0 })).toBeNull();
  });

  it('compute rate() as change per minute since the previous reading', () => {
    // 60_000 ms: 10 → 30 over 30 s is +40 per minute
    expect(run('rate(t) > 39', { t: 30 }, { t: [30_000, 10] })).toBe(true);
    expect(run('rate(t) > 41', { t: 30 }, { t: [30_000, 10] })).toBe(false);
    expect(run('rate(t) > 0', { t: 30 })).toBeNull();
    expect(parseExpression('rate(energy) > 2 and power > 0').rates).toEqual(['energy']);
  });

  it('report the position and reason of each error', () => {
    expect(at('power <')).toEqual({ position: 8, reason: "expected a number, a metric or '(' but found the end of the expression" });
    expect(at('power = 5')).toMatchObject({ position: 7, reason: expect.stringContaining("use '=='") });
    expect(at('power')).toMatchObject({ position: 1, reason: expect.stringContaining('compare it, e.g. power == 1') });
    expect(at('(power > 1')).toMatchObject({ position: 11, reason: "expected ')' but found the end of the expression" });
    expect(at('power > 1 lamp')).toMatchObject({ position: 11 });
    expect(at('power > 1 and 3')).toMatchObject({ position: 15, reason: expect.stringContaining('and needs a comparison') });
    expect(at('a > 1 # b')).toEqual({ position: 7, reason: "unexpected character '#'" });
    expect(at('rate(3) > 1')).toMatchObject({ position: 6, reason: expect.stringContaining('metric name') });
    expect(at('(a > 1) + 2 > 1')).toMatchObject({ position: 1, reason: '+ needs a number, not a condition' });
    expect(at('')).toMatchObject({ position: 1, reason: 'the expression is empty' });
    expect(at('1 > 0')).toMatchObject({ reason: 'the expression reads no metric' });
    expect(at(`${'('.repeat(60)}a > 1${')'.repeat(60)}`).reason).toContain('nested more than');
    expect(at('a'.repeat(1001)).reason).toContain('longer than');
  });

  it('never runs JavaScript: code-looking input is a syntax error', () => {
    expect(() => parseExpression('process.exit(1) > 0')).toThrow(ExpressionError);
    expect(() => parseExpression("constructor['x'] > 0")).toThrow(ExpressionError);
  });
});
