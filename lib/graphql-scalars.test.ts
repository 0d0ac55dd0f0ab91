import { describe, expect, it } from 'vitest';
import { decodeTimeIdCursor, encodeCursor, isPgTimestamptz } from './graphql-scalars.js';

const ID = '6f1c2b9e-1d2a-4c3b-8e4f-5a6b7c8d9e0f';

describe('keyset cursors', () => {
  it('round-trips a timestamptz and an id', () => {
    expect(decodeTimeIdCursor(encodeCursor(['2026-11-27 10:48:23.154652+00', ID]))).toEqual(['2026-11-27 10:48:23.154652+00', ID]);
  });

  it('accepts only real instants in the form PostgreSQL prints', () => {
    expect(isPgTimestamptz('2026-02-28 23:59:59+00')).toBe(true);
    expect(isPgTimestamptz('2026-02-30 10:00:00+00')).toBe(false);
    expect(isPgTimestamptz('2026-13-01 10:00:00+00')).toBe(false);
    expect(isPgTimestamptz('2026-01-01 24:00:00+00')).toBe(false);
    expect(isPgTimestamptz('2026-01-01T10:00:00Z')).toBe(false);
  });

  it('refuses forged and foreign cursors with BAD_USER_INPUT', () => {
    for (const c of [
      encodeCursor(['2026-02-30 10:00:00+00', ID]),
      encodeCursor(['2026-01-01 10:00:00+00', 'x']),
      'not base64 json',
      encodeCursor([1, 2, 3]),
    ]) {
      expect(() => decodeTimeIdCursor(c)).toThrow(expect.objectContaining({ code: 'BAD_USER_INPUT', message: 'invalid cursor' }));
    }
  });
});
