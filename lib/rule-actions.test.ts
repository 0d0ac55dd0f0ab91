import { describe, expect, it } from 'vitest';
import { BadInputError } from './errors.js';
import { checkActionsAgainstSpecs, firedActions, parseRuleActions } from './rule-actions.js';

const SPECS = [
  {
    name: 'setDim',
    params: { type: 'object', properties: { level: { type: 'integer', maximum: 100 } }, required: ['level'] },
    timeoutSeconds: 10,
  },
];

const fieldOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BadInputError);
    return (e as BadInputError).details?.field as string | undefined;
  }
  throw new Error('expected BAD_USER_INPUT');
};

describe('rule actions', () => {
  it('fill their defaults: trigger raise, params {}', () => {
    expect(parseRuleActions(null)).toEqual([]);
    expect(
      parseRuleActions([
        { kind: 'command', name: 'reboot' },
        { kind: 'setDesiredState', patch: { level: 0 }, trigger: 'clear' },
      ]),
    ).toEqual([
      { kind: 'command', trigger: 'raise', name: 'reboot', params: {} },
      { kind: 'setDesiredState', trigger: 'clear', patch: { level: 0 } },
    ]);
  });

  it('refuse fields that do not fit the kind, naming them', () => {
    expect(fieldOf(() => parseRuleActions({ kind: 'command' }))).toBe('input.actions');
    expect(fieldOf(() => parseRuleActions(Array.from({ length: 6 }, () => ({ kind: 'command', name: 'a' }))))).toBe('input.actions');
    expect(fieldOf(() => parseRuleActions([{ kind: 'launch' }]))).toBe('input.actions[0].kind');
    expect(fieldOf(() => parseRuleActions([{ kind: 'command', name: '1bad' }]))).toBe('input.actions[0].name');
    expect(fieldOf(() => parseRuleActions([{ kind: 'setDesiredState', patch: { a: 'x'.repeat(9000) } }]))).toBe('input.actions[0].patch');
    expect(fieldOf(() => parseRuleActions([{ kind: 'command', name: 'x', params: [] }]))).toBe('input.actions[0].params');
  });

  it('check commands against a profile’s specs', () => {
    const actions = parseRuleActions([{ kind: 'command', name: 'setDim', params: { level: 101 } }]);
    expect(fieldOf(() => checkActionsAgainstSpecs(actions, SPECS))).toBe('input.actions[0].params.level');
    expect(fieldOf(() => checkActionsAgainstSpecs(parseRuleActions([{ kind: 'command', name: 'reboot' }]), SPECS))).toBe(
      'input.actions[0].name',
    );
    expect(() =>
      checkActionsAgainstSpecs(parseRuleActions([{ kind: 'command', name: 'setDim', params: { level: 5 } }]), SPECS),
    ).not.toThrow();
  });

  it('fire on the written changes only: raises by the raising rule, clears by the clearing rule', () => {
    const raiseRule = { id: 'r1', actions: parseRuleActions([{ kind: 'command', name: 'a' }]) };
    const clearRule = { id: 'r2', actions: parseRuleActions([{ kind: 'command', name: 'b', trigger: 'clear' }]) };
    const fired = firedActions(
      {
        raised: [
          { id: 'a1', deviceId: 'd1', ruleId: 'r1' },
          { id: 'a2', deviceId: 'd2', ruleId: 'r2' },
        ],
        cleared: [{ id: 'a3', deviceId: 'd3' }],
      },
      new Map([
        ['r1', raiseRule],
        ['r2', clearRule],
      ]),
      new Map([['a3', clearRule]]),
    );
    expect(fired.map((f) => [f.ruleId, f.deviceId, f.trigger])).toEqual([
      ['r1', 'd1', 'raise'],
      ['r2', 'd3', 'clear'],
    ]);
  });
});
