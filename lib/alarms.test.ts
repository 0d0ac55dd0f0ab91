import { describe, expect, it } from 'vitest';
import { afterAction, statusOf, statusPredicate } from './alarms.js';

describe('alarm life cycle', () => {
  it('derives the four statuses from cleared and acknowledged times', () => {
    expect(statusOf({ cleared_at: null, acknowledged_at: null })).toBe('ACTIVE_UNACK');
    expect(statusOf({ cleared_at: null, acknowledged_at: new Date() })).toBe('ACTIVE_ACK');
    expect(statusOf({ cleared_at: new Date(), acknowledged_at: null })).toBe('CLEARED_UNACK');
    expect(statusOf({ cleared_at: new Date(), acknowledged_at: new Date() })).toBe('CLEARED_ACK');
  });

  it('moves forward on acknowledge and clear and treats repeats as no-ops', () => {
    expect(afterAction('ACTIVE_UNACK', 'acknowledge')).toBe('ACTIVE_ACK');
    expect(afterAction('CLEARED_UNACK', 'acknowledge')).toBe('CLEARED_ACK');
    expect(afterAction('ACTIVE_ACK', 'acknowledge')).toBeNull();
    expect(afterAction('ACTIVE_UNACK', 'clear')).toBe('CLEARED_UNACK');
    expect(afterAction('ACTIVE_ACK', 'clear')).toBe('CLEARED_ACK');
    expect(afterAction('CLEARED_UNACK', 'clear')).toBeNull();
    expect(afterAction('CLEARED_ACK', 'clear')).toBeNull();
  });

  it('maps statuses to column conditions', () => {
    expect(statusPredicate('ACTIVE_ACK')).toEqual({ cleared: false, acknowledged: true });
    expect(statusPredicate('CLEARED_UNACK')).toEqual({ cleared: true, acknowledged: false });
  });
});
