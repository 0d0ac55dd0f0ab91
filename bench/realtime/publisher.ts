// Telemetry publisher of `npm run bench:realtime`: `rate` messages per second for `durationS`
// seconds over MQTT (QoS 1), round-robin over the devices, each one device's readings stamped with
// the publish time in ms. Started by the parent over IPC; reports how many it published.
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { createRedis } from '../../lib/redis.js';

export type PublisherCommand =
  | {
      cmd: 'publish';
      url: string;
      rate: number;
      durationS: number;
      deviceIds: string[];
      /** `--source redis`: publish ingest's event envelope straight to this Redis channel (gateway alone, no MQTT/ingest). */
      redis?: { url: string; channel: string; orgId: string; siteOf: Record<string, string> };
    }
  | { cmd: 'exit' };
export type PublisherMessage = { type: 'done'; published: number; ms: number; lateTicks: number };

interface Sink {
  send(deviceId: string, ts: number, power: number, dim: number): Promise<unknown>;
  end(): Promise<unknown>;
}

async function mqttSink(url: string): Promise<Sink> {
  const client = await mqtt.connectAsync(url, {
    clientId: `bench-rt-pub-${randomBytes(3).toString('hex')}`,
    protocolVersion: 5,
    reconnectPeriod: 0,
  });
  return {
    send: (id, ts, power, dim) =>
      client.publishAsync(`devices/${id}/telemetry`, `{"ts":${ts},"values":{"power":${power},"dim":${dim}}}`, { qos: 1 }),
    end: () => client.endAsync(),
  };
}

function redisSink(o: NonNullable<Extract<PublisherCommand, { cmd: 'publish' }>['redis']>): Sink {
  const redis = createRedis(o.url);
  return {
    send: (id, ts, power, dim) => {
      const site = o.siteOf[id];
      return redis.publish(
        o.channel,
        JSON.stringify({
          field: 'telemetryUpdated',
          orgId: o.orgId,
          filter: { deviceId: id, siteId: site, sitePath: [site] },
          data: {
            device: { id },
            readings: [
              { metric: 'power', ts, value: power, text: null },
              { metric: 'dim', ts, value: dim, text: null },
            ],
          },
          coalesce: id,
          at: ts,
        }),
      );
    },
    end: () => redis.quit(),
  };
}

async function publish(c: Extract<PublisherCommand, { cmd: 'publish' }>): Promise<void> {
  const client = c.redis ? redisSink(c.redis) : await mqttSink(c.url);
  const perTick = c.rate / 100;
  const ticks = c.durationS * 100;
  const t0 = performance.now();
  let carry = 0;
  let published = 0;
  let lateTicks = 0;
  const pending = new Set<Promise<unknown>>();
  for (let tick = 0; tick < ticks; tick++) {
    const wait = t0 + tick * 10 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    else if (wait < -20) lateTicks++;
    carry += perTick;
    const n = Math.floor(carry);
    carry -= n;
    for (let i = 0; i < n; i++) {
      const id = c.deviceIds[published % c.deviceIds.length] as string;
      const p = client.send(id, Date.now(), (published % 2500) / 10, published % 100);
      published++;
      pending.add(p);
      void p.finally(() => pending.delete(p));
    }
  }
  await Promise.all(pending);
  const ms = performance.now() - t0;
  await client.end();
  process.send?.({ type: 'done', published, ms, lateTicks } satisfies PublisherMessage);
}

process.on('message', (c: PublisherCommand) => {
  if (c.cmd === 'publish') {
    publish(c).catch((e) => {
      console.error('publisher:', e);
      process.exit(1);
    });
  } else process.exit(0);
});
process.on('disconnect', () => process.exit(0));
setTimeout(() => process.exit(0), Number(process.env.BENCH_CHILD_MAX_MS ?? 900_000)).unref();
