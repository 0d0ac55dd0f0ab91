import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { rejectedCount } from './contract.js';
import {
  encodeLatestValue,
  latestKey,
  numericLatest,
  parseLatestHash,
  parseLatestValue,
  parseStatusHash,
  statusKey,
} from './device-state.js';

describe('device state contract: latest values', () => {
  it('names the hashes of a device under the prefix', () => {
    expect(latestKey('p:', 'd1')).toBe('p:latest:d1');
    expect(statusKey('p:', 'd1')).toBe('p:status:d1');
  });

  it('reads back what it writes: numbers, booleans as 1/0 with their text, strings of any characters', () => {
    for (const r of [
      { ts: 1, value: 12.5, text: null },
      { ts: 2, value: 1, text: 'true' },
      { ts: 3, value: null, text: 'dim "50%"\n⚡\\\u0000' },
    ]) {
      const raw = encodeLatestValue(r);
      expect(raw).toBe(JSON.stringify({ ts: r.ts, v: r.value, t: r.text }));
      expect(parseLatestValue(raw)).toEqual(r);
    }
    expect(parseLatestValue(encodeLatestValue({ ts: 4, value: -0, text: null })).value).toBe(0);
  });

  it('rejects corrupt JSON, wrong types and a missing ts with a reason, and counts each rejection', async () => {
    const before = await rejectedCount('device-state.latest');
    expect(rejectionOf(() => parseLatestValue('{"ts":1,'))).toBe('not JSON');
    expect(rejectionOf(() => parseLatestValue('{"ts":1,"v":2} junk'))).toBe('not JSON');
    expect(rejectionOf(() => parseLatestValue('[1,2]'))).toBe('not an object');
    expect(rejectionOf(() => parseLatestValue('{"v":2}'))).toBe('ts must be a millisecond timestamp');
    expect(rejectionOf(() => parseLatestValue('{"ts":"2026-01-01","v":2}'))).toBe('ts must be a millisecond timestamp');
    expect(rejectionOf(() => parseLatestValue('{"ts":1.5,"v":2}'))).toBe('ts must be a millisecond timestamp');
    expect(rejectionOf(() => parseLatestValue('{"ts":1,"v":"12"}'))).toBe('v must be a finite number or null');
    expect(rejectionOf(() => parseLatestValue('{"ts":1,"v":true}'))).toBe('v must be a finite number or null');
    expect(rejectionOf(() => parseLatestValue('{"ts":1,"v":null,"t":5}'))).toBe('t must be a string or null');
    expect(await rejectedCount('device-state.latest')).toBe(before + 9);
  });

  it('reads absent v and t as null and ignores extra properties', () => {
    expect(parseLatestValue('{"ts":7,"unit":"W"}')).toEqual({ ts: 7, value: null, text: null });
  });

  it('skips and counts the corrupt fields of a hash and keeps the others, sorted by metric', () => {
    const { readings, invalid } = parseLatestHash({
      b: encodeLatestValue({ ts: 2, value: 1.5, text: null }),
      a: encodeLatestValue({ ts: 1, value: null, text: 'on' }),
      c: 'not json',
      d: '{"v":1}',
    });
    expect(readings).toEqual([
      { metric: 'a', ts: 1, value: null, text: 'on' },
      { metric: 'b', ts: 2, value: 1.5, text: null },
    ]);
    expect(invalid).toBe(2);
  });

  it('reads one field as a number, or null when absent, corrupt or a string', () => {
    expect(numericLatest(encodeLatestValue({ ts: 5, value: 230, text: null }))).toEqual({ ts: 5, value: 230 });
    expect(numericLatest(encodeLatestValue({ ts: 5, value: 0, text: 'false' }))).toEqual({ ts: 5, value: 0 });
    expect(numericLatest(encodeLatestValue({ ts: 5, value: null, text: 'high' }))).toBeNull();
    expect(numericLatest(null)).toBeNull();
    expect(numericLatest(undefined)).toBeNull();
    expect(numericLatest('{"v":230}')).toBeNull();
  });
});

describe('device state contract: status', () => {
  it('reads a device never heard from as offline and never seen, which is not corrupt', () => {
    expect(parseStatusHash({})).toEqual({ status: { online: false, lastSeen: null, since: null, state: null }, invalid: 0 });
  });

  it('reads the fields ingest writes', () => {
    expect(parseStatusHash({ online: '1', lastSeen: '5000', since: '4000', state: '{"fw":"1.2.3"}' })).toEqual({
      status: { online: true, lastSeen: 5000, since: 4000, state: { fw: '1.2.3' } },
      invalid: 0,
    });
  });

  it('reads each corrupt field as absent and counts it, keeping the others', async () => {
    const before = await rejectedCount('device-state.status');
    expect(parseStatusHash({ online: 'yes', lastSeen: '12abc', since: '-1', state: '[1]' })).toEqual({
      status: { online: false, lastSeen: null, since: null, state: null },
      invalid: 4,
    });
    expect(parseStatusHash({ online: '1', lastSeen: '5000', state: '{"fw":' })).toEqual({
      status: { online: true, lastSeen: 5000, since: null, state: null },
      invalid: 1,
    });
    expect(await rejectedCount('device-state.status')).toBe(before + 5);
  });
});
