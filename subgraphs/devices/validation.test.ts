import { describe, expect, it } from 'vitest';
import { BadInputError } from '../../lib/errors.js';
import { check, checkId, createDeviceSchema, decodeCursor, deviceFilterSchema, encodeCursor, pageSchema } from './validation.js';

describe('devices input validation', () => {
  it('round-trips a cursor and refuses one it did not make', () => {
    expect(decodeCursor(encodeCursor('SL-000001'))).toBe('SL-000001');
    expect(() => decodeCursor(Buffer.from('x:SL-1').toString('base64url'))).toThrow(BadInputError);
    expect(() => decodeCursor('not base64!')).toThrow('after: not a cursor returned by this API');
  });

  it('names the offending field in the message', () => {
    expect(() => check(createDeviceSchema, { serial: 'ok', name: 'n', location: { lat: 0, lng: -181 } }, 'input')).toThrow(
      'input.location.lng: longitude must be between -180 and 180',
    );
    expect(() => check(pageSchema, { first: 201 }, '')).toThrow('first: first must be between 1 and 200');
  });

  it('refuses a bounding box whose south edge lies north of its north edge', () => {
    expect(() => check(deviceFilterSchema, { bbox: { minLat: 10, maxLat: 0, minLng: 0, maxLng: 1 } }, 'filter')).toThrow(
      'filter.bbox: minLat must not exceed maxLat',
    );
    expect(check(deviceFilterSchema, { bbox: { minLat: 0, maxLat: 1, minLng: 170, maxLng: -170 } }, 'filter')?.bbox?.minLng).toBe(170);
  });

  it('accepts attributes only as a JSON object', () => {
    expect(() => check(createDeviceSchema, { serial: 's', name: 'n', attributes: [1] }, 'input')).toThrow(/^input.attributes/);
    expect(check(createDeviceSchema, { serial: 's', name: 'n', attributes: { a: [1] } }, 'input').attributes).toEqual({ a: [1] });
  });

  it('allows the documented serial characters and nothing else', () => {
    expect(check(createDeviceSchema, { serial: 'AB.c_d:1-2', name: 'n' }, 'input').serial).toBe('AB.c_d:1-2');
    for (const serial of ['', 'a b', 'ü', 'x'.repeat(129)])
      expect(() => check(createDeviceSchema, { serial, name: 'n' }, 'input')).toThrow(/^input.serial/);
  });

  it('tells malformed ids apart', () => {
    expect(() => checkId('123')).toThrow('id: must be a uuid');
    expect(checkId('0b6e7f8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b')).toBe('0b6e7f8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b');
  });
});
