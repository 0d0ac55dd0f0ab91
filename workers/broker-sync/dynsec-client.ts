import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

/** One command of Mosquitto's dynamic-security control API (`$CONTROL/dynamic-security/v1`). */
export interface DynsecCommand {
  command: string;
  [field: string]: unknown;
}

/** Its answer: `error` set when it failed, `data` for the read commands. */
export interface DynsecResponse {
  command: string;
  error?: string;
  data?: Record<string, unknown>;
}

const CONTROL = '$CONTROL/dynamic-security/v1';
const RESPONSE = `${CONTROL}/response`;
/** retained by Mosquitto: "mosquitto version 2.0.11" */
const VERSION = '$SYS/broker/version';

export interface DynsecClientOptions {
  url: string;
  username: string;
  password: string;
  /** extra connection options (a CA for mqtts://) */
  connect?: Partial<IClientOptions>;
  /** how long one control message may take: Mosquitto 2.0 rewrites its whole file per command @default 300000 */
  timeoutMs?: number;
}

/**
 * A connection to Mosquitto's dynamic-security plugin as its admin. `send` publishes one control
 * message and resolves with the plugin's responses, in command order (the plugin answers each
 * message with one message to the sender only); messages go one at a time.
 */
export class DynsecClient {
  private client?: MqttClient;
  private chain: Promise<unknown> = Promise.resolve();
  private waiting?: { resolve: (r: DynsecResponse[]) => void; reject: (e: Error) => void };
  /** control messages sent so far */
  messagesSent = 0;
  /** what the broker said its version is (`$SYS/broker/version`), if it did within a moment of connecting */
  brokerVersion?: string;

  constructor(private readonly o: DynsecClientOptions) {}

  async connect(): Promise<void> {
    const c = await mqtt.connectAsync(this.o.url, {
      ...this.o.connect,
      clientId: `rulr-dynsec-sync-${randomBytes(6).toString('hex')}`,
      username: this.o.username,
      password: this.o.password,
      protocolVersion: 5,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      ...(process.env.DEBUG ? {} : { log: () => undefined }),
    });
    let versionHeard: () => void = () => undefined;
    const version = new Promise<void>((r) => {
      versionHeard = r;
    });
    c.on('message', (topic, payload) => {
      if (topic === VERSION) {
        this.brokerVersion = payload.toString('utf8').slice(0, 100);
        versionHeard();
        return;
      }
      if (topic !== RESPONSE || !this.waiting) return;
      const w = this.waiting;
      this.waiting = undefined;
      try {
        const doc = JSON.parse(payload.toString('utf8')) as { responses?: DynsecResponse[] };
        if (!Array.isArray(doc.responses)) throw new Error('no responses');
        w.resolve(doc.responses);
      } catch (e) {
        w.reject(new Error(`dynamic security answered something unreadable: ${(e as Error).message}`));
      }
    });
    c.on('error', () => undefined);
    const granted = await c.subscribeAsync(RESPONSE, { qos: 1 });
    if (granted.some((g) => g.qos > 2)) throw new Error(`${this.o.username} may not read ${RESPONSE}`);
    // the admin of `mosquitto_ctrl dynsec init` may read $SYS; if it may not, the version stays unknown
    const sys = await c.subscribeAsync(VERSION, { qos: 0 }).catch(() => []);
    if (sys.some((g) => g.qos <= 2)) {
      await Promise.race([version, new Promise((r) => setTimeout(r, 2000))]);
      await c.unsubscribeAsync(VERSION).catch(() => undefined);
    }
    this.client = c;
  }

  /** Sends `commands` as one message; rejects on timeout or a lost connection (the caller reconciles later). */
  send(commands: DynsecCommand[]): Promise<DynsecResponse[]> {
    const run = () =>
      new Promise<DynsecResponse[]>((resolve, reject) => {
        const c = this.client;
        if (!c?.connected) return reject(new Error('not connected to the broker'));
        const timer = setTimeout(() => {
          this.waiting = undefined;
          reject(new Error('dynamic security did not answer in time'));
        }, this.o.timeoutMs ?? 300_000);
        this.waiting = {
          resolve: (r) => {
            clearTimeout(timer);
            if (r.length !== commands.length) reject(new Error(`${r.length} responses to ${commands.length} commands`));
            else resolve(r);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        this.messagesSent++;
        c.publish(CONTROL, JSON.stringify({ commands }), { qos: 1 }, (err) => {
          if (err) this.waiting?.reject(err);
        });
      });
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    return p;
  }

  async close(): Promise<void> {
    this.waiting?.reject(new Error('closed'));
    await this.client?.endAsync().catch(() => undefined);
  }
}
