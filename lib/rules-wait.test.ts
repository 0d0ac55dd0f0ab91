import { describe, expect, it } from 'vitest';
import { parseExpression } from './rule-expr.js';
import { compileWaitRule, describeWait, emptyState, onDue, replay, step, type WaitRule } from './rules-wait.js';

const MIN = 60_000;
const cond = (src: string, o: Partial<WaitRule> = {}): WaitRule => {
  const p = parseExpression(src);
  return {
    kind: 'condition',
    expr: p.ast,
    metrics: p.metrics,
    forMs: null,
    repeatCount: null,
    windowMs: null,
    noDataMs: null,
    autoClear: true,
    ...o,
  };
};
const r = (metric: string, ts: number, value: number) => ({ metric, ts, value });

describe('a duration rule', () => {
  const rule = cond('power < 5 and lampState == 1', { forMs: 10 * MIN });

  it('asks for a timer when the condition starts to hold, and raises when it comes due without a reading', () => {
    const s = step(rule, emptyState(), [r('lampState', 0, 1), r('power', 0, 2)], false, 0, null);
    expect(s.decision).toBe('none');
    expect(s.timer).toEqual({ dueAt: 10 * MIN, action: 'raise' });
    expect(onDue(rule, s.state, s.timer!, false, 10 * MIN - 1).decision).toBe('none');
    expect(onDue(rule, s.state, s.timer!, false, 10 * MIN)).toEqual({ decision: 'raise', timer: null });
  });

  it('raises from a reading once the condition held long enough, and cancels the timer when it breaks', () => {
    const a = step(rule, emptyState(), [r('lampState', 0, 1), r('power', 0, 2)], false, 0, null);
    const b = step(rule, a.state, [r('power', 3 * MIN, 9)], false, 3 * MIN, a.timer);
    expect(b.timer).toBeNull();
    expect(b.state.since).toBeNull();
    const c = step(rule, b.state, [r('power', 4 * MIN, 1)], false, 4 * MIN, b.timer);
    expect(c.timer).toEqual({ dueAt: 14 * MIN, action: 'raise' });
    const d = step(rule, c.state, [r('power', 14 * MIN, 1)], false, 14 * MIN, c.timer);
    expect(d.decision).toBe('raise');
    expect(d.value).toBe(1);
  });

  it('clears an open alarm when the condition no longer holds, and ignores readings older than the newest applied', () => {
    const a = step(rule, emptyState(), [r('lampState', 0, 1), r('power', 0, 2), r('power', 11 * MIN, 2)], false, 0, null);
    expect(a.decision).toBe('raise');
    expect(step(rule, a.state, [r('power', 5 * MIN, 50)], true, 0, null).decision).toBe('none');
    expect(step(rule, a.state, [r('lampState', 12 * MIN, 0)], true, 0, null).decision).toBe('clear');
  });

  it('keeps a stale timer from raising after the condition broke', () => {
    const a = step(rule, emptyState(), [r('lampState', 0, 1), r('power', 0, 2)], false, 0, null);
    const b = step(rule, a.state, [r('power', MIN, 10)], false, MIN, a.timer);
    expect(onDue(rule, b.state, a.timer!, false, 10 * MIN).decision).toBe('none');
  });
});

describe('a repeating rule', () => {
  const rule = cond('voltage > 253', { repeatCount: 3, windowMs: 10 * MIN });
  it('raises on the third breach within the window, not on three spread wider', () => {
    const spread = step(
      rule,
      emptyState(),
      [r('voltage', 0, 260), r('voltage', 6 * MIN, 260), r('voltage', 12 * MIN, 260)],
      false,
      0,
      null,
    );
    expect(spread.decision).toBe('none');
    const close = step(
      rule,
      emptyState(),
      [r('voltage', 0, 260), r('voltage', MIN, 200), r('voltage', 2 * MIN, 260), r('voltage', 3 * MIN, 260)],
      false,
      0,
      null,
    );
    expect(close.decision).toBe('raise');
    expect(close.timer).toEqual({ dueAt: 13 * MIN, action: 'clear' });
  });
  it('clears when a whole window passes without a breach', () => {
    const s = step(rule, emptyState(), [r('voltage', 0, 260), r('voltage', 1, 260), r('voltage', 2, 260)], false, 0, null);
    expect(onDue(rule, s.state, s.timer!, true, 10 * MIN + 2)).toEqual({ decision: 'clear', timer: null });
  });
});

describe('the stored state', () => {
  it('keeps only the newest repeatCount hits, with the decisions of the whole history', () => {
    const rule = cond('voltage > 253', { repeatCount: 3, windowMs: 10 * MIN });
    let state = emptyState();
    let open = false;
    const decisions: string[] = [];
    for (let i = 0; i < 20; i++) {
      const s = step(rule, state, [r('voltage', i * MIN, i === 4 || i === 5 ? 200 : 260)], open, 0, null);
      decisions.push(s.decision);
      if (s.decision === 'raise') open = true;
      state = s.state;
      expect(state.hits.length).toBeLessThanOrEqual(3);
    }
    // the third breach raises; later breaches keep the alarm, the two low readings change nothing
    expect(decisions.slice(0, 3)).toEqual(['none', 'none', 'raise']);
    expect(decisions.slice(3).every((d) => d === 'keep' || d === 'none')).toBe(true);
    expect(state.hits).toEqual([17 * MIN, 18 * MIN, 19 * MIN]);
  });

  it('keeps previous samples only for the metrics a compiled rule reads through rate()', () => {
    const rule = compileWaitRule({
      kind: 'expression',
      metric: 'temperature',
      operator: null,
      threshold: null,
      clearThreshold: null,
      expression: 'rate(temperature) > 5 and power > 1',
      forSeconds: null,
      repeatCount: null,
      windowSeconds: null,
      noDataSeconds: null,
      autoClear: true,
    });
    const a = step(rule, emptyState(), [r('temperature', 0, 20), r('power', 0, 2)], false, 0, null);
    const b = step(rule, a.state, [r('temperature', 30_000, 24), r('power', 30_000, 3)], false, 0, null);
    expect(b.state.previous).toEqual({ temperature: [0, 20] });
    expect(b.decision).toBe('raise');
  });
});

describe('a rate-of-change rule', () => {
  it('compares the change per minute between two readings', () => {
    const rule = cond('rate(temperature) > 5');
    const a = step(rule, emptyState(), [r('temperature', 0, 20)], false, 0, null);
    expect(a.decision).toBe('none');
    expect(step(rule, a.state, [r('temperature', 30_000, 22)], false, 0, null).decision).toBe('none');
    expect(step(rule, a.state, [r('temperature', 30_000, 24)], false, 0, null).decision).toBe('raise');
  });
});

describe('a no-data rule', () => {
  const rule: WaitRule = {
    kind: 'no_data',
    expr: null,
    metrics: ['power'],
    forMs: null,
    repeatCount: null,
    windowMs: null,
    noDataMs: 15 * MIN,
    autoClear: true,
  };
  it('restarts its timer from arrival on every reading, raises when it comes due, and clears on the next reading', () => {
    const a = step(rule, emptyState(), [r('power', 0, 3)], false, 1000, null);
    expect(a.timer).toEqual({ dueAt: 1000 + 15 * MIN, action: 'raise' });
    expect(step(rule, a.state, [r('voltage', 5, 230)], false, 2000, a.timer).timer).toEqual(a.timer);
    expect(onDue(rule, a.state, a.timer!, false, 1000 + 15 * MIN).decision).toBe('raise');
    expect(step(rule, a.state, [r('power', 20 * MIN, 3)], true, 20 * MIN, null).decision).toBe('clear');
    expect(describeWait(rule, '')).toBe('no power reading for 15 min');
  });
});

describe('a replay of stored readings', () => {
  it('raises a duration alarm from its timer between readings, and a no-data alarm for a silent stretch', () => {
    const rule = cond('power < 5', { forMs: 10 * MIN });
    const readings = [r('power', 0, 1), r('power', 30 * MIN, 1), r('power', 31 * MIN, 50)];
    expect(replay(rule, readings, 0, 60 * MIN)).toEqual([
      { change: 'raise', ts: 10 * MIN, value: null },
      { change: 'clear', ts: 31 * MIN, value: 50 },
    ]);
    const silent: WaitRule = {
      kind: 'no_data',
      expr: null,
      metrics: ['power'],
      forMs: null,
      repeatCount: null,
      windowMs: null,
      noDataMs: 15 * MIN,
      autoClear: true,
    };
    expect(replay(silent, [r('power', 5 * MIN, 1), r('power', 40 * MIN, 1)], 0, 60 * MIN)).toEqual([
      { change: 'raise', ts: 20 * MIN, value: null },
      { change: 'clear', ts: 40 * MIN, value: 1 },
      { change: 'raise', ts: 55 * MIN, value: null },
    ]);
  });

  it('compiles a threshold rule with hysteresis into the same condition', () => {
    const rule = compileWaitRule({
      kind: 'threshold',
      metric: 'v',
      operator: 'gt',
      threshold: 253,
      clearThreshold: 250,
      expression: null,
      forSeconds: 60,
      repeatCount: null,
      windowSeconds: null,
      noDataSeconds: null,
      autoClear: true,
    });
    const events = replay(rule, [r('v', 0, 260), r('v', 2 * MIN, 251), r('v', 3 * MIN, 249)], 0, 10 * MIN);
    expect(events).toEqual([
      { change: 'raise', ts: MIN, value: null },
      { change: 'clear', ts: 3 * MIN, value: 249 },
    ]);
  });
});
