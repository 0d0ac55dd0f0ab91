import { hostname } from 'node:os';
import mqtt from 'mqtt';
import { handoffKey } from '../lib/contracts/broker-handoff.js';
import { INGEST_TOPIC_FILTERS, sharedSubscription } from '../lib/contracts/mqtt-topics.js';
import { PROVISION_REQUEST_FILTER } from '../lib/contracts/provisioning.js';
import { createPool } from '../lib/db.js';
import { ServiceServer } from '../lib/http.js';
import { gauge } from '../lib/metrics.js';
import { serviceMqttOptions } from '../lib/mqtt-service.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { BatchWriter } from '../lib/telemetry/writer.js';
import { AckGate } from './ack-gate.js';
import { AttemptLimiter } from './broker-auth/attempts.js';
import { createBrokerAuth } from './broker-auth/create.js';
import { DeviceDirectory } from './devices.js';
import { type Incoming, Pipeline } from './pipeline.js';
import { Provisioning } from './provisioning.js';
import { Realtime } from './realtime.js';

export interface IngestOptions {
  /** health/metrics port @default INGEST_PORT */
  port?: number;
  /** MQTT client id (the persistent session) @default INGEST_CLIENT_ID or `rulr-ingest-<hostname>` */
  clientId?: string;
  /** shared-subscription group @default INGEST_GROUP */
  group?: string;
  /** called after each commit with its messages (bench and tests) */
  onCommit?: (msgs: Incoming[], inserted: number) => void;
}

export interface IngestHandle extends RoleHandle {
  /** resolves once the MQTT subscriptions are granted */
  subscribed: Promise<void>;
  pipeline: Pipeline;
}

const connectedGauge = gauge('rulr_ingest_mqtt_connected', 'Whether ingest is connected to the broker');

/** The subscriptions of one ingest replica (QoS 1, shared by every replica in `group`). */
export const ingestTopics = (group: string) => INGEST_TOPIC_FILTERS.map((f) => sharedSubscription(group, f));

/**
 * The ingest role: MQTT (shared subscriptions, persistent session) → validate → batch → COPY into
 * PostgreSQL → PUBACK after commit → Redis cache, events, rule jobs. See ingest/README.md.
 */
export async function startIngest(ctx: RoleContext, o: IngestOptions = {}): Promise<IngestHandle> {
  const cfg = ctx.config;
  const log = ctx.logger.child({ role: 'ingest' });
  const group = o.group ?? cfg.INGEST_GROUP;
  const clientId = o.clientId ?? cfg.INGEST_CLIENT_ID ?? `rulr-ingest-${hostname()}`.slice(0, 64);

  const pool = createPool(cfg.DATABASE_URL, 2);
  const devices = DeviceDirectory.fromPool(pool, cfg.INGEST_DEVICE_CACHE_TTL_S * 1000);
  const auth = await createBrokerAuth(ctx, log);
  await devices.listen(ctx.redis, cfg.REDIS_PREFIX, log, [auth.credentials]);
  const writers = Array.from({ length: cfg.INGEST_WRITERS }, () => new BatchWriter(cfg.DATABASE_URL));
  // Connected before the broker: a resumed session redelivers at once, and a cold start would
  // otherwise add connection setup to the first batches' latency.
  await Promise.all(writers.map((w) => w.open()));
  const realtime = new Realtime(ctx.redis, cfg.REDIS_PREFIX, cfg.INGEST_RULE_JOB_MAX_READINGS);

  const window = cfg.PROVISION_RATE_WINDOW_S;
  const provisioning = new Provisioning({
    db: ctx.db,
    redis: ctx.redis,
    prefix: cfg.REDIS_PREFIX,
    bySource: new AttemptLimiter(ctx.redis, `${cfg.REDIS_PREFIX}provision:source`, cfg.PROVISION_RATE_LIMIT, window),
    byKey: new AttemptLimiter(ctx.redis, `${cfg.REDIS_PREFIX}provision:key`, cfg.PROVISION_RATE_LIMIT * 10, window),
    handoffKey: cfg.DYNSEC_ENABLED ? handoffKey(cfg.RULR_SECRET) : undefined,
    logger: log,
  });

  const client = mqtt.connect(cfg.MQTT_URL, {
    ...serviceMqttOptions(cfg, 'ingest'),
    clientId,
    protocolVersion: 5,
    clean: false,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    keepalive: 30,
    // mqtt.js logs every packet through `debug` (cheap when off, but per packet at 10,000+ msg/s);
    // with DEBUG set (e.g. DEBUG=mqttjs*) its own logger is kept for troubleshooting.
    ...(process.env.DEBUG ? {} : { log: () => undefined }),
    properties: {
      sessionExpiryInterval: cfg.INGEST_SESSION_EXPIRY_S,
      receiveMaximum: Math.min(65535, cfg.INGEST_MAX_PENDING),
    },
  });
  const gate = new AckGate(client);
  const pipeline = new Pipeline(
    {
      batchSize: cfg.INGEST_BATCH_SIZE,
      batchMs: cfg.INGEST_BATCH_MS,
      maxPending: cfg.INGEST_MAX_PENDING,
      maxPayloadBytes: cfg.INGEST_MAX_PAYLOAD_BYTES,
      deadLetterSummaryMs: cfg.INGEST_DEAD_LETTER_SUMMARY_S * 1000,
      release: (a) => gate.release(a.messageId, a.connection),
      pause: () => gate.pause(),
      resume: () => gate.resume(),
      ...(o.onCommit ? { onCommit: o.onCommit } : {}),
    },
    devices,
    writers,
    realtime,
    log,
  );
  // Handlers are attached before CONNACK: a resumed session redelivers unacknowledged messages at once.
  client.on('message', (topic, payload, packet) => {
    if (topic.startsWith('provision/')) {
      // acknowledged once answered: a replica that stops first leaves it to the broker's redelivery
      const ack = packet.qos > 0 && packet.messageId !== undefined ? { id: packet.messageId, connection: gate.connection } : undefined;
      void provisioning.onMqtt(client, topic, payload).finally(() => ack && gate.release(ack.id, ack.connection));
      return;
    }
    pipeline.push({
      topic,
      payload,
      ...(packet.qos > 0 && packet.messageId !== undefined ? { ack: { messageId: packet.messageId, connection: gate.connection } } : {}),
      received: Date.now(),
    });
  });
  client.on('error', (e) => log.warn({ err: e.message }, 'ingest: mqtt error'));
  client.on('close', () => connectedGauge.set(0));

  const subscribed = new Promise<void>((resolve, reject) => {
    client.on('connect', (connack) => {
      connectedGauge.set(1);
      log.info({ clientId, group, sessionPresent: connack.sessionPresent }, 'ingest: connected');
      // Re-subscribing on a present session is harmless and covers a session the broker expired.
      client.subscribe([...ingestTopics(group), sharedSubscription(group, PROVISION_REQUEST_FILTER)], { qos: 1 }, (err, granted) => {
        if (err) return reject(err);
        const refused = granted?.filter((g) => g.qos > 1) ?? [];
        if (refused.length) return reject(new Error(`subscription refused: ${refused.map((g) => g.topic).join(', ')}`));
        resolve();
      });
    });
  });
  subscribed.catch(() => undefined);

  const silence = setInterval(() => {
    pipeline.checkSilence().catch((e) => log.warn({ err: (e as Error).message }, 'ingest: silence check failed'));
  }, cfg.INGEST_SILENCE_CHECK_S * 1000);
  silence.unref();

  const server = new ServiceServer({
    name: 'ingest',
    port: o.port ?? cfg.INGEST_PORT,
    handle: async (req, res) => (await auth.brokerAuth.handle(req, res)) || provisioning.handle(req, res),
    checks: {
      mqtt: async () => {
        if (!client.connected) throw new Error('not connected to the broker');
      },
      db: async () => {
        await pool.query('select 1');
      },
      // EMQX's reconnecting fleet is answered from memory once this is loaded
      credentials: async () => {
        if (!auth.credentials.loaded) throw new Error('credential directory loading');
      },
    },
  });
  const port = await server.listen();

  let closed = false;
  return {
    name: 'ingest',
    port,
    subscribed,
    pipeline,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(silence);
      // Stop reading, commit and acknowledge what we hold, then leave (the session keeps the rest).
      gate.pause();
      await Promise.race([pipeline.drain(), new Promise((r) => setTimeout(r, 10_000))]);
      pipeline.close();
      await client.endAsync().catch(() => undefined);
      await server.close(2000);
      await realtime.close().catch(() => undefined);
      await auth.close();
      await devices.close();
      for (const w of writers) await w.close();
      await pool.end().catch(() => undefined);
    },
  };
}
