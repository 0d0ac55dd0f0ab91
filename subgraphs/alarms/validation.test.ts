import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeCursor } from '../../lib/graphql-scalars.js';
import { alarmFilterSchema, check, decodeAlarmCursor, noteSchema, pageSchema, raiseAlarmSchema } from './validation.js';

describe('alarms input validation', () => {
  it('round-trips a cursor holding a microsecond timestamp and an id', () => {
    const id = randomUUID();
    expect(decodeAlarmCursor(encodeCursor(['2026-01-31 12:00:00.123456+00', id]))).toEqual({
      raisedAt: '2026-01-31 12:00:00.123456+00',
      id,
    });
  });

  it('refuses cursors it did not make', () => {
    for (const bad of ['%%%', encodeCursor(['2026-01-31', randomUUID()]), encodeCursor(['2026-01-31 12:00:00+00', 'id']), 'W10']) {
      expect(() => decodeAlarmCursor(bad)).toThrow('invalid cursor');
    }
  });

  it('trims the alarm type and names the offending field', () => {
    const input = { deviceId: randomUUID(), type: '  Overvoltage ', severity: 'major' };
    expect(check(raiseAlarmSchema, input, 'input').type).toBe('Overvoltage');
    expect(() => check(raiseAlarmSchema, { ...input, type: ' ' }, 'input')).toThrow('input.type: must not be empty');
    expect(() => check(raiseAlarmSchema, { ...input, deviceId: 'x' }, 'input')).toThrow('input.deviceId: must be a uuid');
    expect(() => check(pageSchema, { first: 501 }, '')).toThrow('first: first must be between 1 and 500');
  });

  it('turns a blank note into none', () => {
    expect(check(noteSchema, '   ', 'note')).toBeNull();
    expect(check(noteSchema, undefined, 'note')).toBeNull();
    expect(check(noteSchema, ' done ', 'note')).toBe('done');
  });

  it('accepts statuses and lower-case severities in a filter', () => {
    expect(check(alarmFilterSchema, { status: ['ACTIVE_ACK'], severity: ['critical'] }, 'filter')).toEqual({
      status: ['ACTIVE_ACK'],
      severity: ['critical'],
    });
    expect(() => check(alarmFilterSchema, { severity: ['CRITICAL'] }, 'filter')).toThrow('filter.severity.0');
  });
});
