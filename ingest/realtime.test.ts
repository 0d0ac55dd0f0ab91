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

describe('Realtime.telemetry over many devices', () => {
  it('should touch every device across script chunks and publish one array per organization, in batch order', async () => {
    const redis = createRedis(REDIS_URL);
    const sub = createRedis(REDIS_URL);
    const prefix = `test-rt-${randomUUID()}:`;
    const rt = new Realtime(redis, prefix, 100);
    const orgs = [randomUUID(), randomUUID()];
    const messages: { org: string; doc: unknown }[] = [];
    sub.on('message', (channel: string, m: string) => messages.push({ org: channel.slice(`${prefix}events:`.length), doc: JSON.parse(m) }));
    // more devices than one touch call takes (250), alternating between two organizations
    const batch: DeviceReadings[] = Array.from({ length: 600 }, (_, i) => ({
      orgId: orgs[i % 2] as string,
      deviceId: `dev${i}`,
      siteId: null,
      sitePath: [],
      readings: [{ metric: 'power', ts: 1000 + i, value: i, text: null }],
    }));
    const watcher = createRedis(REDIS_URL);
    const unheard: string[] = [];
    watcher.on('pmessage', (_p: string, _c: string, m: string) => unheard.push(m));
    try {
      // Nobody subscribed to the organizations' channels (a pattern subscriber does not count): the
      // hashes are written, no event is built or published.
      await watcher.psubscribe(`${prefix}events:*`);
      await rt.telemetry(batch.slice(0, 10), 4000);
      expect(await redis.hget(`${prefix}status:dev3`, 'lastSeen')).toBe('1003');
      await new Promise((r) => setTimeout(r, 50));
      expect(unheard).toEqual([]);
      await redis.del(...batch.slice(0, 10).flatMap((d) => [`${prefix}status:${d.deviceId}`, `${prefix}latest:${d.deviceId}`]));

      await sub.subscribe(...orgs.map((o) => `${prefix}events:${o}`));
      await rt.telemetry(batch, 5000);
      const eventsOf = (org: string, field: string) =>
        messages
          .filter((m) => m.org === org)
          .flatMap((m) => {
            expect(Array.isArray(m.doc)).toBe(true);
            return m.doc as { field: string; orgId: string; data: { device: { id: string } } }[];
          })
          .filter((e) => e.field === field);
      await until(() => messages.length >= 4);
      for (const [k, org] of orgs.entries()) {
        const mine = batch.filter((_, i) => i % 2 === k).map((d) => d.deviceId);
        // telemetry of each device once, in the batch's order, then its first-seen online transition
        expect(eventsOf(org, 'telemetryUpdated').map((e) => e.data.device.id)).toEqual(mine);
        expect(eventsOf(org, 'deviceStatusChanged').map((e) => e.data.device.id)).toEqual(mine);
        expect(eventsOf(org, 'telemetryUpdated').every((e) => e.orgId === org)).toBe(true);
      }
      for (const i of [0, 249, 250, 599]) {
        expect(JSON.parse((await redis.hget(`${prefix}latest:dev${i}`, 'power')) as string)).toEqual({ ts: 1000 + i, v: i, t: null });
        expect(await redis.hmget(`${prefix}status:dev${i}`, 'online', 'lastSeen')).toEqual(['1', String(1000 + i)]);
      }
      // a second batch is no transition: no status events
      const before = messages.length;
      await rt.telemetry(batch.slice(0, 300), 6000);
      await until(() => messages.length >= before + 2);
      await new Promise((r) => setTimeout(r, 50));
      expect(
        messages
          .slice(before)
          .flatMap((m) => m.doc as { field: string }[])
          .every((e) => e.field === 'telemetryUpdated'),
      ).toBe(true);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      await rt.close();
      await watcher.quit();
      await sub.quit();
      await redis.quit();
    }
  });
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
