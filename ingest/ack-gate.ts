import type { MqttClient } from 'mqtt';

interface Held {
  id: number;
  packet: unknown;
  ready: boolean;
}

/**
 * Holds QoS 1 PUBACKs until the batch holding their messages has committed, while the client keeps
 * reading. mqtt.js 5.16 sends the PUBACK from `handlePublish` through the private `_sendPacket` and
 * processes no further packet until that call's callback runs; so this module (the ONLY place that
 * relies on mqtt.js internals) wraps `_sendPacket`: a `puback` is queued and its callback is called at
 * once (reading continues), and queued PUBACKs are written in arrival order once released.
 *
 * Packet ids belong to one connection: when it closes, held PUBACKs are discarded, messages still
 * parsed from the dead connection get no ticket (`connection` is -1 until the next CONNACK), and the
 * broker redelivers them on the resumed session. `pause()` withholds the read callback instead,
 * which stops mqtt.js from reading (TCP back-pressure reaches the broker); while paused, PINGREQs
 * keep the broker's keepalive satisfied and the client's keepalive timer is re-armed, since the
 * PINGRESP cannot be read until reading resumes. mqtt.js only counts a PINGRESP (or an ack of its
 * own publishes) as a sign of life, and a PINGRESP queued behind thousands of PUBLISH packets of a
 * backlog arrives late: so every half keepalive in which packets were read, the gate sends a PINGREQ
 * itself (the broker sees the client alive even while no PUBACK is due) and re-arms the client's
 * keepalive timer; with nothing read, mqtt.js's own keepalive runs as usual and detects a dead
 * connection. `ack-gate.test.ts` fails loudly if an mqtt.js upgrade changes any of this.
 */
export class AckGate {
  private queue: Held[] = [];
  private head = 0;
  private readonly byId = new Map<number, Held>();
  private generation = 0;
  private live = false;
  private paused = false;
  private stalled: (() => void)[] = [];
  private keepalive?: NodeJS.Timeout;
  private corked = false;
  /** packets were read since the last keepalive tick */
  private reading = false;
  private readonly send: (packet: unknown) => void;

  constructor(private readonly client: MqttClient) {
    const c = client as unknown as Record<string, unknown>;
    for (const m of ['_sendPacket', 'sendPing', 'reschedulePing']) {
      if (typeof c[m] !== 'function') {
        throw new Error(`AckGate: mqtt.js no longer has MqttClient.${m}; ingest cannot hold PUBACKs (see ingest/ack-gate.ts)`);
      }
    }
    const original = (c._sendPacket as (...a: unknown[]) => void).bind(client);
    this.send = (packet) => original(packet);
    c._sendPacket = (packet: { cmd?: string; messageId?: number }, cb?: () => void, ...rest: unknown[]) => {
      if (packet?.cmd !== 'puback' || typeof packet.messageId !== 'number') return original(packet, cb, ...rest);
      if (this.live) {
        const entry = { id: packet.messageId, packet, ready: false };
        this.queue.push(entry);
        this.byId.set(entry.id, entry);
      }
      if (this.paused && cb) this.stalled.push(cb);
      else cb?.();
    };
    client.on('packetreceive', () => {
      this.reading = true;
    });
    client.on('connect', () => {
      this.generation++;
      this.live = true;
      this.arm();
    });
    client.on('close', () => this.reset());
  }

  /** One timer per connection, every half keepalive (see the class comment). */
  private arm(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    const every = Math.max(500, ((this.client.keepalive || 60) * 1000) / 2);
    this.reading = false;
    this.keepalive = setInterval(() => {
      if (!this.client.connected) return;
      if (!this.paused && !this.reading) return;
      this.reading = false;
      this.client.sendPing();
      this.client.reschedulePing(true);
    }, every);
    this.keepalive.unref();
  }

  /** Ticket generation for a message arriving now; -1 (never acknowledged) between connections. */
  get connection(): number {
    return this.live ? this.generation : -1;
  }

  /** PUBACKs held (not yet written). */
  get held(): number {
    return this.queue.length - this.head;
  }

  /** Marks the message acknowledged; ready PUBACKs at the head of the queue are written in order. */
  release(messageId: number, connection: number): void {
    if (!this.live || connection !== this.generation) return;
    const e = this.byId.get(messageId);
    if (!e) return;
    e.ready = true;
    this.flush();
  }

  /** Stops mqtt.js from reading further packets until `resume()`. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    const s = this.stalled.splice(0);
    for (const cb of s) cb();
  }

  private flush(): void {
    while (this.head < this.queue.length) {
      const e = this.queue[this.head];
      if (!e?.ready) break;
      this.head++;
      if (this.byId.get(e.id) === e) this.byId.delete(e.id);
      this.cork();
      this.send(e.packet);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** PUBACKs released in one tick (a committed batch) leave in one socket write instead of one each. */
  private cork(): void {
    if (this.corked) return;
    const stream = this.client.stream as { cork?: () => void; uncork?: () => void } | undefined;
    if (!stream?.cork || !stream.uncork) return;
    stream.cork();
    this.corked = true;
    process.nextTick(() => {
      this.corked = false;
      stream.uncork?.();
    });
  }

  private reset(): void {
    this.live = false;
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = undefined;
    this.queue = [];
    this.head = 0;
    this.byId.clear();
    // The dead connection's reader may be waiting on us: let it finish (its packets get no tickets).
    const s = this.stalled.splice(0);
    for (const cb of s) cb();
  }
}
