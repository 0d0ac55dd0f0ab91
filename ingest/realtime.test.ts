import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createRedis } from '../lib/redis.js';
import { REDIS_URL } from '../test/support/env.js';
import { type DeviceReadings, Realtime, telemetryEvent } from './realtime.js';

describe('telemetryEvent', () => {
  it('should write the real-time envelope with every reading of the device, as JSON', () => {
    const ts = Date.UTC(2026, 10, 27, 8, 0, 0, 5);
    const d: DeviceReadings = {
      orgId: '0a1b2c3d-4e5f-6789-abcd-ef0123456789',
      deviceId: '12345678-9abc-def0-1234-56789abcdef0',
      siteId: null,
      sitePath: ['north', 'lamp "7"'],
      readings: [
        { metric: 'power', ts, value: 12.5, text: null },
        { metric: 'on', ts, value: 1, text: 'true' },
        { metric: 'mode', ts: ts + 1000, value: null, text: 'dim "50%"\n⚡\\' },
        { metric: 'energy', ts: ts + 1000, value: -0, text: null },
        { metric: 'tiny', ts: ts + 2000, value: 1e-7, text: null },
      ],
    };
    const json = telemetryEvent(d, 42);
    expect(JSON.parse(json)).toEqual({
      field: 'telemetryUpdated',
      orgId: d.orgId,
      filter: { deviceId: d.deviceId, siteId: null, sitePath: ['north', 'lamp "7"'] },
      data: {
        device: { id: d.deviceId },
        readings: [
          { metric: 'power', ts: '2026-11-27T08:00:00.005Z', value: 12.5, text: null },
          { metric: 'on', ts: '2026-11-27T08:00:00.005Z', value: 1, text: 'true' },
          { metric: 'mode', ts: '2026-11-27T08:00:01.005Z', value: null, text: 'dim "50%"\n⚡\\' },
          { metric: 'energy', ts: '2026-11-27T08:00:01.005Z', value: 0, text: null },
          { metric: 'tiny', ts: '2026-11-27T08:00:02.005Z', value: 1e-7, text: null },
        ],
      },
      coalesce: d.deviceId,
      at: 42,
    });
    // Same text as JSON.stringify of that object (key order included).
    expect(json).toBe(JSON.stringify(JSON.parse(json)));
  });
});

describe('Realtime.telemetry', () => {
  it('should keep the newest value of each metric in the latest hash, whatever characters its text holds', async () => {
    const redis = createRedis(REDIS_URL);
    const prefix = `test-rt-${randomUUID()}:`;
    const rt = new Realtime(redis, prefix, 100);
    const device = (readings: DeviceReadings['readings']): DeviceReadings => ({
      orgId: randomUUID(),
      deviceId: 'd1',
      siteId: null,
      sitePath: [],
      readings,
    });
    try {
      const odd = 'a\u001fb\u001ec "q" ⚡\\';
      await rt.telemetry(
        [
          device([
            { metric: 'power', ts: 2000, value: 1.5, text: null },
            { metric: 'mode', ts: 2000, value: null, text: odd },
            { metric: 'power', ts: 1000, value: 3, text: null },
          ]),
        ],
        5000,
      );
      await rt.telemetry(
        [
          device([
            { metric: 'power', ts: 1500, value: 7, text: null },
            { metric: 'on', ts: 3000, value: 1, text: 'true' },
          ]),
        ],
        6000,
      );
      const latest = await redis.hgetall(`${prefix}latest:d1`);
      expect(Object.fromEntries(Object.entries(latest).map(([k, v]) => [k, JSON.parse(v)]))).toEqual({
        power: { ts: 2000, v: 1.5, t: null },
        mode: { ts: 2000, v: null, t: odd },
        on: { ts: 3000, v: 1, t: 'true' },
      });
      expect(await redis.hget(`${prefix}status:d1`, 'lastSeen')).toBe('3000');
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      await rt.close();
      await redis.quit();
    }
  });
});
