import { describe, expect, it } from 'vitest';
import { BadInputError } from '../../lib/errors.js';
import { encodeCursor } from '../../lib/graphql-scalars.js';
import { checkFirst, parseRuleCursor, parseRuleInput, parseRulePatch } from './validation.js';

const base = { name: 'Overvoltage', metric: 'voltage', operator: 'gt', threshold: 253, severity: 'major' };

describe('rules input validation', () => {
  it('fills the defaults of a new rule: alarm type from the name, enabled, auto-clearing, unscoped', () => {
    expect(parseRuleInput({ ...base, name: '  Overvoltage  ' })).toEqual({
      name: 'Overvoltage',
      description: '',
      enabled: true,
      metric: 'voltage',
      operator: 'gt',
      threshold: 253,
      clearThreshold: null,
      severity: 'major',
      alarmType: 'Overvoltage',
      autoClear: true,
      siteId: null,
      profileId: null,
      kind: 'threshold',
      expression: null,
      forSeconds: null,
      repeatCount: null,
      windowSeconds: null,
      noDataSeconds: null,
      clearOnDisable: false,
      notify: null,
      actions: [],
    });
  });

  it('refuses empty names, long descriptions and metric names ingest would not accept', () => {
    expect(() => parseRuleInput({ ...base, name: '   ' })).toThrow('input.name: must not be empty');
    expect(() => parseRuleInput({ ...base, description: 'x'.repeat(2001) })).toThrow(/^input.description/);
    expect(() => parseRuleInput({ ...base, metric: '1voltage' })).toThrow(/^input.metric: must start with a letter/);
    expect(() => parseRuleInput({ ...base, metric: 'volt age' })).toThrow(BadInputError);
    expect(() => parseRuleInput({ ...base, metric: `v${'x'.repeat(64)}` })).toThrow(BadInputError);
    expect(parseRuleInput({ ...base, metric: 'phase_a.voltage-rms' }).metric).toBe('phase_a.voltage-rms');
  });

  it('refuses thresholds that are not finite numbers', () => {
    expect(() => parseRuleInput({ ...base, threshold: Number.NaN })).toThrow('input.threshold: must be a finite number');
    expect(() => parseRuleInput({ ...base, clearThreshold: Number.POSITIVE_INFINITY })).toThrow(/^input.clearThreshold/);
  });

  it('refuses a clear threshold on the raising side, or with an equality operator', () => {
    expect(() => parseRuleInput({ ...base, clearThreshold: 260 })).toThrow('clearThreshold must not be above threshold for GT/GTE');
    expect(() => parseRuleInput({ ...base, operator: 'lt', threshold: 10, clearThreshold: 5 })).toThrow(
      'clearThreshold must not be below threshold for LT/LTE',
    );
    expect(() => parseRuleInput({ ...base, operator: 'eq', clearThreshold: 253 })).toThrow(
      'clearThreshold applies only to GT, GTE, LT and LTE',
    );
    expect(parseRuleInput({ ...base, clearThreshold: 250 }).clearThreshold).toBe(250);
  });

  it('refuses scope ids that are not uuids', () => {
    expect(() => parseRuleInput({ ...base, siteId: 'site-1' })).toThrow('input.siteId: must be a uuid');
    expect(() => parseRuleInput({ ...base, profileId: '' })).toThrow('input.profileId: must be a uuid');
  });

  it('keeps only the fields an update sets, and lets null remove only the optional ones', () => {
    expect(parseRulePatch({ threshold: 240 })).toEqual({ threshold: 240 });
    expect(parseRulePatch({ siteId: null, profileId: null, clearThreshold: null })).toEqual({
      siteId: null,
      profileId: null,
      clearThreshold: null,
    });
    expect(() => parseRulePatch({ name: null })).toThrow('input.name: must not be null');
    expect(() => parseRulePatch({ severity: null })).toThrow('input.severity: must not be null');
    expect(() => parseRulePatch({ alarmType: '' })).toThrow('input.alarmType: must not be empty');
  });

  it('accepts only cursors of its own list', () => {
    const key = ['2026-01-05 10:00:00.123456+00', '3f1c1c0e-6a56-4b5e-9d2f-0e1b2c3d4e5f'];
    expect(parseRuleCursor(encodeCursor(key))).toEqual(key);
    expect(() => parseRuleCursor(encodeCursor(['yesterday', key[1] as string]))).toThrow('invalid cursor');
    expect(() => parseRuleCursor(encodeCursor([key[0] as string, 'not-a-uuid']))).toThrow('invalid cursor');
    expect(() => parseRuleCursor('%%%')).toThrow(BadInputError);
  });

  it('bounds page sizes', () => {
    expect(checkFirst(1, 500)).toBe(1);
    expect(() => checkFirst(0, 500)).toThrow('first must be between 1 and 500');
    expect(() => checkFirst(501, 500)).toThrow(BadInputError);
  });
});
