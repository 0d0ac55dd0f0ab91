import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AckGate } from './ack-gate.js';
import { type Broker, startNoDropBroker } from './testing/broker.js';

const clients: MqttClient[] = [];
let broker: Broker;

beforeAll(async () => {
  broker = await startNoDropBroker();
});
afterAll(async () => {
  await broker.stop();
});

function open(clientId: string, keepalive = 60): { c: MqttClient; ready: Promise<void> } {
  const c = mqtt.connect(broker.url, {
    clientId,
    keepalive,
    protocolVersion: 5,
    clean: false,
    properties: { sessionExpiryInterval: 60 },
    reconnectPeriod: 0,
  });
  clients.push(c);
  const ready = new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return { c, ready };
}

async function connect(clientId: string): Promise<MqttClient> {
  const { c, ready } = open(clientId);
  await ready;
  return c;
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function subscriber(clientId: string, topic: string, keepalive = 60) {
  // Handlers go on before CONNACK: a resumed session redelivers at once.
  const { c, ready } = open(clientId, keepalive);
  const gate = new AckGate(c);
  const got: { id: number; payload: string; conn: number }[] = [];
  const sent: number[] = [];
  c.on('packetsend', (p) => {
    if (p.cmd === 'puback') sent.push((p as { messageId: number }).messageId);
  });
  c.on('message', (_t, payload, packet) =>
    got.push({ id: packet.messageId as number, payload: payload.toString(), conn: gate.connection }),
  );
  await ready;
  await c.subscribeAsync(topic, { qos: 1 });
  return { c, gate, got, sent };
}

afterEach(async () => {
  for (const c of clients.splice(0)) await c.endAsync(true).catch(() => undefined);
});

describe('AckGate (relies on mqtt.js internals: an upgrade that breaks them fails here)', () => {
  it('should find the mqtt.js internals it wraps', async () => {
    const c = await connect(`gate-${randomUUID()}`);
    expect(typeof (c as unknown as { _sendPacket: unknown })._sendPacket).toBe('function');
    expect(() => new AckGate(c)).not.toThrow();
  });

  it('should keep reading while PUBACKs are held, and the broker should redeliver them all after a crash', async () => {
    const topic = `test/gate/${randomUUID()}`;
    const id = `gate-${randomUUID()}`;
    const s1 = await subscriber(id, topic);
    const pub = await connect(`pub-${randomUUID()}`);
    for (let i = 0; i < 200; i++) pub.publish(topic, String(i), { qos: 1 });
    await until(() => s1.got.length === 200).catch((e) => {
      throw new Error(`${e.message}: got ${s1.got.length}`);
    });
    expect(s1.gate.held).toBe(200);
    expect(s1.sent).toEqual([]);
    // Crash: the socket dies without a DISCONNECT and nothing was acknowledged.
    await s1.c.endAsync(true);

    const s2 = await subscriber(id, topic);
    await until(() => s2.got.length === 200);
    expect(s2.got.map((g) => g.payload)).toEqual(Array.from({ length: 200 }, (_, i) => String(i)));

    // Released out of order, written in arrival order, only as far as the contiguous released prefix.
    const ids = s2.got.map((g) => g.id);
    for (const mid of ids.slice(100).reverse()) s2.gate.release(mid, s2.gate.connection);
    expect(s2.sent).toEqual([]);
    for (const mid of ids.slice(0, 100)) s2.gate.release(mid, s2.gate.connection);
    expect(s2.sent).toEqual(ids);
    expect(s2.gate.held).toBe(0);
    await new Promise((r) => setTimeout(r, 200));
    await s2.c.endAsync();

    const s3 = await subscriber(id, topic);
    await new Promise((r) => setTimeout(r, 500));
    expect(s3.got).toEqual([]);
  });

  it('should ignore releases from an earlier connection', async () => {
    const topic = `test/gate/${randomUUID()}`;
    const s = await subscriber(`gate-${randomUUID()}`, topic);
    const pub = await connect(`pub-${randomUUID()}`);
    pub.publish(topic, 'x', { qos: 1 });
    await until(() => s.got.length === 1);
    s.gate.release(s.got[0]?.id as number, s.gate.connection + 1);
    expect(s.sent).toEqual([]);
  });

  it('should stop reading while paused and read on after resume', async () => {
    const topic = `test/gate/${randomUUID()}`;
    const s = await subscriber(`gate-${randomUUID()}`, topic);
    s.gate.pause();
    const pub = await connect(`pub-${randomUUID()}`);
    for (let i = 0; i < 20; i++) pub.publish(topic, String(i), { qos: 1 });
    await new Promise((r) => setTimeout(r, 500));
    expect(s.got.length).toBe(1);
    s.gate.resume();
    await until(() => s.got.length === 20);
  });

  it('should keep the connection alive past the keepalive while paused', async () => {
    const topic = `test/gate/${randomUUID()}`;
    const s = await subscriber(`gate-${randomUUID()}`, topic, 1);
    let closed = 0;
    s.c.on('close', () => closed++);
    s.gate.pause();
    const pub = await connect(`pub-${randomUUID()}`);
    for (let i = 0; i < 5; i++) pub.publish(topic, String(i), { qos: 1 });
    await new Promise((r) => setTimeout(r, 4000));
    expect(closed).toBe(0);
    expect(s.c.connected).toBe(true);
    s.gate.resume();
    await until(() => s.got.length === 5);
    expect(s.got.every((g) => g.conn === s.gate.connection && g.conn > 0)).toBe(true);
  });

  it('should keep the connection alive while packets arrive but the PINGRESP is late', async () => {
    const topic = `test/gate/${randomUUID()}`;
    const s = await subscriber(`gate-${randomUUID()}`, topic, 1);
    // A PINGRESP stuck behind a backlog of PUBLISH packets: mqtt.js alone times out after 1.5 keepalives.
    let pings = 0;
    (s.c as unknown as { sendPing: () => void }).sendPing = () => {
      pings++;
    };
    let closed = 0;
    s.c.on('close', () => closed++);
    s.c.on('message', (_t, _p, packet) => s.gate.release(packet.messageId as number, s.gate.connection));
    const pub = await connect(`pub-${randomUUID()}`);
    for (let i = 0; i < 40; i++) {
      pub.publish(topic, String(i), { qos: 1 });
      await new Promise((r) => setTimeout(r, 100));
    }
    await until(() => s.got.length === 40);
    expect(closed).toBe(0);
    expect(s.c.connected).toBe(true);
    expect(pings).toBeGreaterThan(0);
  });

  it('should give no ticket to messages read after the connection closed', async () => {
    const topic = `test/gate/${randomUUID()}`;
    const s = await subscriber(`gate-${randomUUID()}`, topic);
    expect(s.gate.connection).toBeGreaterThan(0);
    await s.c.endAsync(true);
    expect(s.gate.connection).toBe(-1);
  });
});
