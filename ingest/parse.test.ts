import { describe, expect, it } from 'vitest';
import {
  decodeJson,
  gatewayDevices,
  gatewayStatus,
  gatewayTelemetry,
  PayloadError,
  parseProfileMetrics,
  parseStatus,
  parseTs,
  telemetryEntries,
  validateEntries,
} from './parse.js';

const NOW = Date.parse('2026-06-01T12:00:00Z');

function reasonOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof PayloadError) return e.reason;
    throw e;
  }
  return 'none';
}

describe('telemetry payload forms', () => {
  it('reads {ts, values} with ts in milliseconds', () => {
    expect(telemetryEntries({ ts: NOW - 1000, values: { t: 1 } }, NOW)).toEqual([{ ts: NOW - 1000, values: { t: 1 } }]);
  });

  it('reads ts as an ISO 8601 string', () => {
    expect(telemetryEntries({ ts: '2026-06-01T11:00:00.250Z', values: { t: 1 } }, NOW)[0]?.ts).toBe(Date.parse('2026-06-01T11:00:00.250Z'));
  });

  it('reads an array of {ts, values}', () => {
    const e = telemetryEntries(
      [
        { ts: NOW - 2, values: { a: 1 } },
        { ts: NOW - 1, values: { a: 2 } },
      ],
      NOW,
    );
    expect(e.map((x) => x.ts)).toEqual([NOW - 2, NOW - 1]);
  });

  it('stamps a flat object of values with the arrival time', () => {
    expect(telemetryEntries({ power: 10, on: true, mode: 'auto' }, NOW)).toEqual([
      { ts: NOW, values: { power: 10, on: true, mode: 'auto' } },
    ]);
  });

  it('refuses timestamps that are not numbers or dates, or far outside now', () => {
    expect(reasonOf(() => parseTs('yesterday', NOW))).toBe('bad_timestamp');
    expect(reasonOf(() => parseTs(12, NOW))).toBe('bad_timestamp');
    expect(reasonOf(() => parseTs(NOW + 2 * 86_400_000, NOW))).toBe('bad_timestamp');
    expect(reasonOf(() => parseTs({}, NOW))).toBe('bad_timestamp');
  });

  it('refuses shapes that are not telemetry', () => {
    expect(reasonOf(() => telemetryEntries(42, NOW))).toBe('bad_shape');
    expect(reasonOf(() => telemetryEntries([], NOW))).toBe('bad_shape');
    expect(reasonOf(() => telemetryEntries({ ts: NOW, values: [1] }, NOW))).toBe('bad_shape');
  });

  it('refuses payloads that are not JSON or are too large', () => {
    expect(reasonOf(() => decodeJson(Buffer.from('{nope'), 100))).toBe('not_json');
    expect(reasonOf(() => decodeJson(Buffer.from(`{"a":"${'x'.repeat(200)}"}`), 100))).toBe('too_large');
  });
});

describe('validateEntries', () => {
  const defs = parseProfileMetrics([
    { name: 'power', type: 'number', min: 0, max: 250 },
    { name: 'on', type: 'boolean' },
    { name: 'mode', type: 'string' },
    { name: 'energy', type: 'number', counter: true },
    { bogus: true },
  ]);

  it('stores numbers in value, booleans as 1/0 with text, strings in text', () => {
    const v = validateEntries([{ ts: NOW, values: { power: 12.5, on: false, mode: 'dim', energy: 3 } }], defs);
    expect(v.readings).toEqual([
      { metric: 'power', ts: NOW, value: 12.5, text: null, counter: false },
      { metric: 'on', ts: NOW, value: 0, text: 'false', counter: false },
      { metric: 'mode', ts: NOW, value: null, text: 'dim', counter: false },
      { metric: 'energy', ts: NOW, value: 3, text: null, counter: true },
    ]);
    expect(v.wrongType).toEqual([]);
  });

  it('keeps the well-typed readings and names the wrong-typed ones', () => {
    const v = validateEntries([{ ts: NOW, values: { power: 'high', on: 1, mode: 'x', nested: { a: 1 } } }], defs);
    expect(v.readings.map((r) => r.metric)).toEqual(['mode']);
    expect(v.wrongType).toEqual(['power', 'on', 'nested']);
  });

  it('refuses a string holding NUL, which PostgreSQL text cannot store', () => {
    const v = validateEntries([{ ts: NOW, values: { mode: 'a\u0000b', power: 1 } }], defs);
    expect(v.readings.map((r) => r.metric)).toEqual(['power']);
    expect(v.wrongType).toEqual(['mode']);
  });

  it('stores out-of-range and unknown metrics but counts them', () => {
    const v = validateEntries([{ ts: NOW, values: { power: 900, humidity: 40 } }], defs);
    expect(v.readings.map((r) => r.metric)).toEqual(['power', 'humidity']);
    expect(v.outOfRange).toBe(1);
    expect(v.unknownMetrics).toBe(1);
  });

  it('infers types when the profile defines no metrics', () => {
    const v = validateEntries([{ ts: NOW, values: { a: 1, b: true, c: 's', d: null } }], new Map());
    expect(v.readings.map((r) => [r.metric, r.value, r.text])).toEqual([
      ['a', 1, null],
      ['b', 1, 'true'],
      ['c', null, 's'],
    ]);
    expect(v.wrongType).toEqual(['d']);
  });
});

describe('status and concentrator payloads', () => {
  it('reads plain and JSON status', () => {
    expect(parseStatus('offline', 100)).toEqual({ online: false });
    expect(parseStatus('{"online":true,"state":{"fw":"1.2"}}', 100)).toEqual({ online: true, state: { fw: '1.2' } });
    expect(reasonOf(() => parseStatus('{"online":"yes"}', 100))).toBe('bad_shape');
  });

  it('reads child telemetry keyed by serial in every form', () => {
    const m = gatewayTelemetry(
      { 'SN-1': [{ ts: NOW - 1, values: { a: 1 } }], 'SN-2': { ts: NOW - 2, values: { a: 2 } }, 'SN-3': { a: 3 } },
      NOW,
    );
    expect([...m.entries()]).toEqual([
      ['SN-1', [{ ts: NOW - 1, values: { a: 1 } }]],
      ['SN-2', [{ ts: NOW - 2, values: { a: 2 } }]],
      ['SN-3', [{ ts: NOW, values: { a: 3 } }]],
    ]);
  });

  it('reads child status and connect lists', () => {
    expect([...gatewayStatus({ 'SN-1': 'offline', 'SN-2': { online: true } }).entries()]).toEqual([
      ['SN-1', { online: false }],
      ['SN-2', { online: true }],
    ]);
    expect(gatewayDevices({ devices: ['SN-1', 'SN-2'] })).toEqual(['SN-1', 'SN-2']);
    expect(reasonOf(() => gatewayDevices({ devices: [1] }))).toBe('bad_shape');
  });
});
