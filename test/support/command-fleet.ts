import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { deviceCommandReplyTopic, encodeCommandReply, parseCommandMessage } from '../../lib/contracts/commands.js';
import type { Behaviour } from './command-device.js';

const COMMANDS_FILTER = 'devices/+/commands';

/**
 * Many test devices behind one MQTT connection (a site of a thousand lamps without a thousand
 * sockets): subscribes `devices/+/commands` with a persistent session, announces each device
 * online on its own status topic and answers on each device's reply topic, as {@link TestDevice}
 * does for one. Each device executes a command id once (a repeat is answered, not executed);
 * `executed` keeps what every device executed, `deliveries` how often the broker delivered an id.
 */
export class TestFleet {
  /** device id → command ids it executed, in order */
  readonly executed = new Map<string, string[]>();
  /** command id → how many times the broker delivered it */
  readonly deliveries = new Map<string, number>();
  /** every command message received, of any device of the fleet */
  received = 0;
  /** how a device answers @default 'succeed' */
  behaviourOf: (deviceId: string) => Behaviour = () => 'succeed';
  private client?: MqttClient;
  private readonly ids: Set<string>;
  private readonly clientId = `fleet-${randomUUID()}`;

  constructor(
    readonly deviceIds: readonly string[],
    private readonly url: string,
  ) {
    this.ids = new Set(deviceIds);
  }

  async connect(): Promise<this> {
    const c = await mqtt.connectAsync(this.url, {
      clientId: this.clientId,
      protocolVersion: 5,
      clean: false,
      properties: { sessionExpiryInterval: 300 },
      reconnectPeriod: 0,
    });
    c.on('message', (topic, payload) => this.onCommand(topic, payload));
    await c.subscribeAsync(COMMANDS_FILTER, { qos: 1 });
    this.client = c;
    return this;
  }

  /** `devices/{id}/status` online for each device (QoS 1, in parallel). */
  async announce(ids: readonly string[] = this.deviceIds): Promise<void> {
    const c = this.client;
    if (!c) throw new Error('not connected');
    await Promise.all(ids.map((id) => c.publishAsync(`devices/${id}/status`, JSON.stringify({ online: true, state: {} }), { qos: 1 })));
  }

  /** How many commands the devices executed in all. */
  get executions(): number {
    let n = 0;
    for (const l of this.executed.values()) n += l.length;
    return n;
  }

  private reply(deviceId: string, body: Parameters<typeof encodeCommandReply>[0]): Promise<unknown> | undefined {
    return this.client?.publishAsync(deviceCommandReplyTopic(deviceId), encodeCommandReply(body), { qos: 1 });
  }

  private onCommand(topic: string, payload: Buffer): void {
    const deviceId = topic.split('/')[1] as string;
    if (!this.ids.has(deviceId)) return;
    const m = parseCommandMessage(payload);
    this.received++;
    this.deliveries.set(m.id, (this.deliveries.get(m.id) ?? 0) + 1);
    const done = this.executed.get(deviceId) ?? [];
    if (done.includes(m.id)) return void this.reply(deviceId, { id: m.id, status: 'succeeded', result: { duplicate: true } });
    const behaviour = this.behaviourOf(deviceId);
    if (behaviour === 'silent') return;
    done.push(m.id);
    this.executed.set(deviceId, done);
    void (async () => {
      await this.reply(deviceId, { id: m.id, status: 'received' });
      if (behaviour === 'receive-only') return;
      if (behaviour === 'fail') await this.reply(deviceId, { id: m.id, status: 'failed', error: 'lamp driver fault' });
      else await this.reply(deviceId, { id: m.id, status: 'succeeded', result: { name: m.name } });
    })();
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
    this.client = undefined;
  }
}
