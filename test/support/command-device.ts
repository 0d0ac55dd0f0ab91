import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import {
  type CommandMessage,
  deviceCommandReplyTopic,
  deviceCommandTopic,
  encodeCommandReply,
  parseCommandMessage,
} from '../../lib/contracts/commands.js';

/** How a test device answers a command. */
export type Behaviour = 'succeed' | 'fail' | 'silent' | 'receive-only';

/**
 * A device written in the test: connects with a persistent session, subscribes to its command
 * topic at QoS 1, announces itself online (optionally with a state) and answers every command by
 * `behaviour`. It executes each command id once (as the contract asks devices to), counting every
 * delivery in `deliveries` and every execution in `executed`.
 */
export class TestDevice {
  readonly received: CommandMessage[] = [];
  /** command id → how many times the broker delivered it */
  readonly deliveries = new Map<string, number>();
  readonly executed: string[] = [];
  behaviour: Behaviour = 'succeed';
  /** commands this device never answers (whatever `behaviour` says) */
  ignore: (m: CommandMessage) => boolean = () => false;
  state: Record<string, unknown> = {};
  private client?: MqttClient;
  private readonly clientId = `dev-${randomUUID()}`;

  constructor(
    readonly deviceId: string,
    private readonly url: string,
  ) {}

  async connect(o: { state?: Record<string, unknown>; announce?: boolean } = {}): Promise<this> {
    const c = mqtt.connect(this.url, {
      clientId: this.clientId,
      protocolVersion: 5,
      clean: false,
      properties: { sessionExpiryInterval: 300 },
      reconnectPeriod: 0,
    });
    await new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve());
      c.once('error', reject);
    });
    c.on('message', (_topic, payload) => this.onCommand(payload));
    await c.subscribeAsync(deviceCommandTopic(this.deviceId), { qos: 1 });
    this.client = c;
    if (o.state) this.state = { ...this.state, ...o.state };
    if (o.announce !== false) await this.announce();
    return this;
  }

  /** `devices/{id}/status` online, with the current state. */
  async announce(state = this.state): Promise<void> {
    await this.client?.publishAsync(`devices/${this.deviceId}/status`, JSON.stringify({ online: true, state }), { qos: 1 });
  }

  async reply(body: Record<string, unknown> | string, deviceId = this.deviceId): Promise<void> {
    await this.client?.publishAsync(deviceCommandReplyTopic(deviceId), typeof body === 'string' ? body : JSON.stringify(body), { qos: 1 });
  }

  private onCommand(payload: Buffer): void {
    const m = parseCommandMessage(payload);
    this.received.push(m);
    this.deliveries.set(m.id, (this.deliveries.get(m.id) ?? 0) + 1);
    if (this.executed.includes(m.id)) return void this.reply({ id: m.id, status: 'succeeded', result: { duplicate: true } });
    if (this.behaviour === 'silent' || this.ignore(m)) return;
    this.executed.push(m.id);
    void (async () => {
      await this.reply(encodeCommandReply({ id: m.id, status: 'received' }));
      if (this.behaviour === 'receive-only') return;
      if (this.behaviour === 'fail') return this.reply({ id: m.id, status: 'failed', error: 'lamp driver fault' });
      if (m.name === 'setState') this.state = { ...this.state, ...(m.params.desired as Record<string, unknown>) };
      if (m.name === 'setDim') this.state = { ...this.state, level: m.params.level };
      await this.reply({ id: m.id, status: 'succeeded', result: { ...this.state } });
    })();
  }

  /** Drops the connection without a clean disconnect (the session keeps its subscription). */
  async drop(): Promise<void> {
    this.client?.stream.destroy();
    await this.client?.endAsync(true);
    this.client = undefined;
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
    this.client = undefined;
  }
}
