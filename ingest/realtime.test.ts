import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { latestKey, parseLatestHash, parseStatusHash, statusKey } from '../lib/contracts/device-state.js';
import { createRedis } from '../lib/redis.js';
import { REDIS_URL } from '../test/support/env.js';
import { type DeviceReadings, Realtime } from './realtime.js';

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
      // what the scripts wrote is what the readers' contract parses, with nothing rejected
      expect(parseLatestHash(await redis.hgetall(latestKey(prefix, 'd1')))).toEqual({
        readings: [
          { metric: 'mode', ts: 2000, value: null, text: odd },
          { metric: 'on', ts: 3000, value: 1, text: 'true' },
          { metric: 'power', ts: 2000, value: 1.5, text: null },
        ],
        invalid: 0,
      });
      expect(parseStatusHash(await redis.hgetall(statusKey(prefix, 'd1')))).toEqual({
        status: { online: true, lastSeen: 3000, since: 5000, state: null },
        invalid: 0,
      });
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
