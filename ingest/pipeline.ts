import { type CommandReply, parseCommandReply, parseGatewayCommandReplies, type ReplyItem } from '../lib/contracts/commands.js';
import { ContractError } from '../lib/contracts/contract.js';
import { parseTopic, type Topic } from '../lib/contracts/mqtt-topics.js';
import type { Logger } from '../lib/logger.js';
import { counter, gauge, histogram } from '../lib/metrics.js';
import { RollupCompactor } from '../lib/telemetry/compactor.js';
import type { BatchWriter, DeadLetterRow, Row } from '../lib/telemetry/writer.js';
import { DeadLetterLog } from './dead-letter-log.js';
import type { DeviceDirectory, DeviceInfo } from './devices.js';
import {
  type DeadLetterReason,
  decodeJson,
  type Entry,
  gatewayDevices,
  gatewayStatus,
  gatewayTelemetry,
  PayloadError,
  parseStatus,
  type StatusUpdate,
  telemetryEntries,
  validateEntries,
} from './parse.js';
import type { CommandHandOff, DeviceReadings, Realtime, StatusChange } from './realtime.js';

const messagesTotal = counter('rulr_ingest_messages_total', 'MQTT messages received by ingest', ['kind']);
const readingsTotal = counter('rulr_ingest_readings_total', 'Readings committed (inserted, duplicates excluded)');
const deadLettersTotal = counter('rulr_ingest_dead_letters_total', 'Messages (or parts) sent to dead letters', ['reason']);
const unknownMetricsTotal = counter('rulr_ingest_unknown_metrics_total', 'Stored readings of metrics their profile does not define');
const outOfRangeTotal = counter('rulr_ingest_out_of_range_total', "Stored readings outside their profile's min/max");
const retriesTotal = counter('rulr_ingest_batch_retries_total', 'Batch writes retried after a database error');
const batchSeconds = histogram(
  'rulr_ingest_batch_seconds',
  'Time to commit one batch',
  [],
  [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
);
const pendingGauge = gauge('rulr_ingest_pending_messages', 'Messages received and not yet acknowledged');

/** The topic, or a `bad_topic` PayloadError naming what is wrong with it. */
function topicOf(topic: string): Topic {
  try {
    return parseTopic(topic);
  } catch (e) {
    if (e instanceof ContractError) throw new PayloadError('bad_topic', `topic outside the MQTT contract: ${e.reason}`);
    throw e;
  }
}

const mb = (n: number) => Math.round(n / 1048576);
function memory() {
  const m = process.memoryUsage();
  return { rssMb: mb(m.rss), heapMb: mb(m.heapUsed), externalMb: mb(m.external), buffersMb: mb(m.arrayBuffers) };
}

interface Prepared {
  rows: Row[];
  dead: DeadLetterRow[];
  list: DeviceReadings[];
  statuses: StatusChange[];
  /** command replies and devices that spoke, by organization: handed to the workers before the PUBACK */
  commands: CommandHandOff;
  now: number;
}

const pushTo = <T>(m: Map<string, T[]>, k: string, v: T) => {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
};

/** One received MQTT message and the ticket that acknowledges it. */
export interface Incoming {
  topic: string;
  payload: Buffer;
  /** PUBACK ticket (undefined for QoS 0) */
  ack?: { messageId: number; connection: number };
  received: number;
}

interface Parsed {
  msg: Incoming;
  topic: Topic | null;
  doc?: unknown;
  status?: StatusUpdate;
  entries?: Entry[];
  /** command replies (one from a device; a concentrator's carry their child's serial) */
  replies?: (CommandReply & { serial?: string })[];
  error?: PayloadError;
  /** readings it holds (1 for others): counts towards the batch size */
  size: number;
}

export interface PipelineOptions {
  batchSize: number;
  batchMs: number;
  maxPending: number;
  maxPayloadBytes: number;
  /** acknowledges one message (the ack gate) */
  release(ack: { messageId: number; connection: number }): void;
  /** stop / resume reading from the broker */
  pause(): void;
  resume(): void;
  /** called after each commit with the messages it held (bench, tests) */
  onCommit?: (msgs: Incoming[], inserted: number) => void;
  /** interval of the info-level dead-letter summary (each message is logged at debug) @default 60000 */
  deadLetterSummaryMs?: number;
}

/**
 * Batches messages by size and time, writes each batch in one transaction, and only then
 * acknowledges its messages. A failing write is retried with backoff while new messages queue up to
 * `maxPending`, after which reading stops; nothing is acknowledged until it is stored (or dead-lettered).
 */
export class Pipeline {
  private current: Parsed[] = [];
  private currentSize = 0;
  private timer?: NodeJS.Timeout;
  private pending = 0;
  private paused = false;
  private flushing?: Promise<void>;
  private post: Promise<void> = Promise.resolve();
  private readonly writing: Promise<unknown>[];
  private seq = 0;
  private closed = false;
  /** devices seen by this replica, for the silence check */
  readonly seen = new Map<string, { orgId: string; siteId: string | null; sitePath: string[]; timeoutS: number; lastSeen: number }>();

  constructor(
    private readonly o: PipelineOptions,
    private readonly devices: DeviceDirectory,
    private readonly writers: BatchWriter[],
    private readonly realtime: Realtime,
    private readonly logger: Logger,
  ) {
    this.writing = writers.map(() => Promise.resolve());
    this.deadLetterLog = new DeadLetterLog(logger).start(o.deadLetterSummaryMs ?? 60_000);
    const url = writers[0]?.url;
    if (url) this.compactor = new RollupCompactor({ url, logger }).start();
  }

  /** Folds the rollup deltas the writers append into the rollups (poked after each commit). */
  private readonly compactor?: RollupCompactor;
  /** Dead letters at debug one by one, at info as a periodic summary per reason. */
  readonly deadLetterLog: DeadLetterLog;

  get pendingMessages(): number {
    return this.pending;
  }

  /** Called for every message (synchronously from the MQTT client). */
  push(msg: Incoming): void {
    this.pending++;
    const p = this.parse(msg);
    this.current.push(p);
    this.currentSize += p.size;
    if (this.pending >= this.o.maxPending && !this.paused) {
      this.paused = true;
      this.o.pause();
    }
    if (this.currentSize >= this.o.batchSize) this.kick();
    else if (!this.timer) this.timer = setTimeout(() => this.kick(), this.o.batchMs);
  }

  private parse(msg: Incoming): Parsed {
    const p: Parsed = { msg, topic: null, size: 1 };
    try {
      const topic = topicOf(msg.topic);
      p.topic = topic;
      if (topic.channel === 'reply') {
        if (msg.payload.length > this.o.maxPayloadBytes)
          throw new PayloadError('too_large', `payload of ${msg.payload.length} bytes exceeds ${this.o.maxPayloadBytes}`);
        try {
          p.replies = topic.kind === 'device' ? [parseCommandReply(msg.payload)] : parseGatewayCommandReplies(msg.payload).replies;
        } catch (e) {
          if (e instanceof ContractError) throw new PayloadError('bad_reply', `command reply refused: ${e.reason}`);
          throw e;
        }
      } else if (topic.channel === 'status') {
        if (topic.kind === 'device') p.status = parseStatus(msg.payload, this.o.maxPayloadBytes);
        else p.doc = decodeJson(msg.payload, this.o.maxPayloadBytes);
      } else {
        const doc = decodeJson(msg.payload, this.o.maxPayloadBytes);
        if (topic.kind === 'device') {
          p.entries = telemetryEntries(doc, msg.received);
          let n = 0;
          for (const e of p.entries) for (const _ in e.values) n++;
          p.size = n || 1;
        } else p.doc = doc;
      }
    } catch (e) {
      if (!(e instanceof PayloadError)) throw e;
      p.error = e;
    }
    messagesTotal.inc({ kind: p.topic ? `${p.topic.kind}_${p.topic.channel}` : 'bad_topic' });
    return p;
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.flushing || this.current.length === 0) return;
    let n = 0;
    let size = 0;
    while (n < this.current.length && (n === 0 || size + (this.current[n] as Parsed).size <= this.o.batchSize)) {
      size += (this.current[n] as Parsed).size;
      n++;
    }
    const batch = this.current.splice(0, n);
    this.currentSize -= size;
    this.flushing = this.process(batch).finally(() => {
      this.flushing = undefined;
      if (this.currentSize >= this.o.batchSize) this.kick();
      else if (this.current.length && !this.timer) this.timer = setTimeout(() => this.kick(), this.o.batchMs);
    });
  }

  /** Runs `fn` until it succeeds (backoff up to 5 s); false when the pipeline closed meanwhile. */
  private async retry<T>(what: string, batch: Parsed[], fn: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false }> {
    for (let attempt = 0; ; attempt++) {
      try {
        return { ok: true, value: await fn() };
      } catch (e) {
        if (this.closed) return { ok: false };
        retriesTotal.inc();
        const wait = Math.min(5000, 100 * 2 ** Math.min(attempt, 6));
        this.logger.warn({ err: (e as Error).message, attempt, waitMs: wait, messages: batch.length }, `ingest: ${what} failed, retrying`);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /**
   * Prepare (device lookup, validation), then the database stage on one of the writers (each writes
   * one batch at a time, in its own transaction), then the Redis stage and the acknowledgements,
   * chained in batch order. The next batch is prepared while earlier ones are written.
   */
  private async process(batch: Parsed[]): Promise<void> {
    const t0 = performance.now();
    const prepared = await this.retry('device lookup', batch, () => this.prepare(batch));
    if (!prepared.ok) return;
    const { rows, dead, list, statuses, commands, now } = prepared.value;
    const rowCount = rows.length;
    // Only the tickets are needed from here on: let the parsed payloads go.
    for (const p of batch) {
      p.entries = undefined;
      p.doc = undefined;
    }
    const slot = this.seq++ % this.writers.length;
    const writer = this.writers[slot] as BatchWriter;
    const previousOnSlot = this.writing[slot] as Promise<unknown>;
    let t1 = 0;
    const written = (async () => {
      await previousOnSlot;
      t1 = performance.now();
      return this.retry('batch write', batch, () => writer.write(rows, dead));
    })();
    this.writing[slot] = written;
    const previousPost = this.post;
    this.post = (async () => {
      const w = await written;
      if (!w.ok) return;
      const t2 = performance.now();
      batchSeconds.observe((t2 - t0) / 1000);
      readingsTotal.inc(w.value.inserted);
      for (const d of dead) deadLettersTotal.inc({ reason: d.reason });
      this.deadLetterLog.record(dead);
      await previousPost;
      const t3 = performance.now();
      // Redis is a cache of what is stored (and the only store of status): retry it on its own.
      // Command replies and online notices reach the workers' queue before any PUBACK: none is lost.
      const rt = await this.retry('redis update', batch, async () => {
        const cameOnline = await this.realtime.telemetry(list, now);
        await this.realtime.status(statuses, now);
        for (const d of cameOnline) pushTo(commands.online, d.orgId, { deviceId: d.deviceId, state: null, at: now });
        await this.realtime.commands(commands);
      });
      if (!rt.ok) return;
      if (this.logger.isLevelEnabled('debug'))
        this.logger.debug(
          {
            messages: batch.length,
            rows: rowCount,
            prepareMs: Math.round(t1 - t0),
            writeMs: Math.round(t2 - t1),
            path: w.value.path,
            copyMs: w.value.copyMs,
            rollupMs: w.value.rollupMs,
            redisMs: Math.round(performance.now() - t3),
            pending: this.pending,
            ...memory(),
          },
          'ingest: batch committed',
        );
      this.compactor?.poke();
      this.o.onCommit?.(
        batch.map((p) => p.msg),
        w.value.inserted,
      );
      for (const p of batch) if (p.msg.ack) this.o.release(p.msg.ack);
      this.pending -= batch.length;
      pendingGauge.set(this.pending);
      if (this.paused && this.pending < this.o.maxPending * 0.8) {
        this.paused = false;
        this.o.resume();
      }
    })();
    // At most one batch queued per writer.
    await previousOnSlot;
  }

  /** Resolves devices and validates: the rows and dead letters of one transaction. */
  private async prepare(batch: Parsed[]): Promise<Prepared> {
    const now = Date.now();
    const ids = new Set<string>();
    for (const p of batch) {
      if (p.topic?.kind === 'device') ids.add(p.topic.deviceId);
      else if (p.topic?.kind === 'gateway') ids.add(p.topic.gatewayId);
    }
    const devs = await this.devices.resolve(ids);

    const rows: Row[] = [];
    const dead: DeadLetterRow[] = [];
    const perDevice = new Map<string, DeviceReadings>();
    const statuses: StatusChange[] = [];
    const commands: CommandHandOff = { replies: new Map(), online: new Map() };
    const deadLetter = (p: Parsed, reason: DeadLetterReason, detail: string, dev?: DeviceInfo) => {
      dead.push({
        orgId: dev?.orgId ?? null,
        deviceId: dev?.id ?? null,
        topic: p.msg.topic.slice(0, 512),
        reason,
        detail,
        payload: p.msg.payload.subarray(0, 2048).toString('utf8'),
      });
    };
    const addEntries = (p: Parsed, dev: DeviceInfo, entries: Entry[]) => {
      const orgId = dev.orgId;
      const deviceId = dev.id;
      // One object per reading: the database row is also the event's and the rule job's reading.
      const v = validateEntries(
        entries,
        dev.metrics,
        (metric, ts, value, text, counter): Row => ({
          ts,
          orgId,
          deviceId,
          metric,
          value,
          text,
          counter,
        }),
      );
      if (v.unknownMetrics) unknownMetricsTotal.inc(v.unknownMetrics);
      if (v.outOfRange) outOfRangeTotal.inc(v.outOfRange);
      if (v.wrongType.length) deadLetter(p, 'wrong_type', `wrong type for ${v.wrongType.join(', ')}`, dev);
      if (!v.readings.length) return;
      let d = perDevice.get(dev.id);
      if (!d) {
        d = { orgId: dev.orgId, deviceId: dev.id, siteId: dev.siteId, sitePath: dev.sitePath, readings: [] };
        perDevice.set(dev.id, d);
      }
      for (const r of v.readings) {
        rows.push(r);
        d.readings.push(r);
      }
    };

    for (const p of batch) {
      const t = p.topic;
      if (!t) {
        deadLetter(p, 'bad_topic', p.error?.message ?? 'topic outside the MQTT contract');
        continue;
      }
      const dev = devs.get(t.kind === 'device' ? t.deviceId : t.gatewayId);
      if (!dev || dev.decommissioned) {
        deadLetter(p, 'unknown_device', dev ? 'device is decommissioned' : 'no such device', dev);
        continue;
      }
      if (p.error) {
        deadLetter(p, p.error.reason, p.error.message, dev);
        continue;
      }
      if (t.channel === 'reply') {
        await this.replies(p, t.kind === 'gateway', dev, commands, deadLetter);
        continue;
      }
      if (t.kind === 'device') {
        if (p.status?.online) pushTo(commands.online, dev.orgId, { deviceId: dev.id, state: p.status.state ?? null, at: now });
        if (p.status)
          statuses.push({
            orgId: dev.orgId,
            deviceId: dev.id,
            siteId: dev.siteId,
            sitePath: dev.sitePath,
            online: p.status.online,
            ...(p.status.state ? { state: p.status.state } : {}),
          });
        else if (p.entries) addEntries(p, dev, p.entries);
        continue;
      }
      try {
        await this.gateway(p, t.channel, dev, addEntries, statuses, deadLetter, commands, now);
      } catch (e) {
        if (!(e instanceof PayloadError)) throw e;
        deadLetter(p, e.reason, e.message, dev);
      }
    }

    const list = [...perDevice.values()];
    for (const d of list) {
      const info = devs.get(d.deviceId) ?? (await this.devices.resolve([d.deviceId])).get(d.deviceId);
      const last = d.readings.reduce((m, r) => Math.max(m, r.ts), 0);
      const prev = this.seen.get(d.deviceId)?.lastSeen ?? 0;
      this.seen.set(d.deviceId, {
        orgId: d.orgId,
        siteId: d.siteId,
        sitePath: d.sitePath,
        timeoutS: info?.silenceTimeoutS ?? 900,
        lastSeen: Math.max(prev, Math.min(last, now)),
      });
    }
    return { rows, dead, list, statuses, commands, now };
  }

  /** A device's reply, or a concentrator's for its children (an unknown child serial is dead-lettered). */
  private async replies(
    p: Parsed,
    fromGateway: boolean,
    dev: DeviceInfo,
    commands: CommandHandOff,
    deadLetter: (p: Parsed, reason: DeadLetterReason, detail: string, dev?: DeviceInfo) => void,
  ): Promise<void> {
    const raw = p.msg.payload.subarray(0, 2048).toString('utf8');
    const item = (deviceId: string, reply: CommandReply): ReplyItem => ({
      deviceId,
      topic: p.msg.topic.slice(0, 512),
      receivedAt: p.msg.received,
      reply: {
        id: reply.id,
        status: reply.status,
        ...(reply.result !== undefined ? { result: reply.result } : {}),
        ...(reply.error !== undefined ? { error: reply.error } : {}),
      },
      raw,
    });
    const list = p.replies ?? [];
    if (!fromGateway) {
      for (const r of list) pushTo(commands.replies, dev.orgId, item(dev.id, r));
      return;
    }
    const children = await this.devices.resolveChildren(dev, [...new Set(list.map((r) => r.serial ?? ''))]);
    const unknown: string[] = [];
    for (const r of list) {
      const child = children.get(r.serial ?? '');
      if (child && !child.decommissioned) pushTo(commands.replies, dev.orgId, item(child.id, r));
      else unknown.push(r.serial ?? '');
    }
    if (unknown.length)
      deadLetter(p, 'unknown_child', `command replies for unknown child serials: ${unknown.slice(0, 20).join(', ')}`, dev);
  }

  private async gateway(
    p: Parsed,
    channel: 'connect' | 'disconnect' | 'telemetry' | 'status',
    gw: DeviceInfo,
    addEntries: (p: Parsed, dev: DeviceInfo, entries: Entry[]) => void,
    statuses: StatusChange[],
    deadLetter: (p: Parsed, reason: DeadLetterReason, detail: string, dev?: DeviceInfo) => void,
    commands: CommandHandOff,
    now: number,
  ): Promise<void> {
    const status = (dev: DeviceInfo, u: StatusUpdate) => {
      if (u.online) pushTo(commands.online, dev.orgId, { deviceId: dev.id, state: u.state ?? null, at: now });
      statuses.push({
        orgId: dev.orgId,
        deviceId: dev.id,
        siteId: dev.siteId,
        sitePath: dev.sitePath,
        online: u.online,
        ...(u.state ? { state: u.state } : {}),
      });
    };
    if (channel === 'telemetry') {
      const byChild = gatewayTelemetry(p.doc, p.msg.received);
      const children = await this.devices.resolveChildren(gw, [...byChild.keys()]);
      const unknown: string[] = [];
      for (const [serial, entries] of byChild) {
        const child = children.get(serial);
        if (child && !child.decommissioned) addEntries(p, child, entries);
        else unknown.push(serial);
      }
      if (unknown.length) deadLetter(p, 'unknown_child', `unknown child serials: ${unknown.slice(0, 20).join(', ')}`, gw);
    } else if (channel === 'status') {
      const byChild = gatewayStatus(p.doc);
      const children = await this.devices.resolveChildren(gw, [...byChild.keys()]);
      for (const [serial, u] of byChild) {
        const child = children.get(serial);
        if (child) status(child, u);
      }
    } else {
      const serials = gatewayDevices(p.doc);
      const children = await this.devices.resolveChildren(gw, serials);
      for (const s of serials) {
        const child = children.get(s);
        if (child) status(child, { online: channel === 'connect' });
      }
    }
  }

  /**
   * Marks devices offline whose lastSeen + their profile's silence timeout has passed (only those
   * this replica has seen; Redis `lastSeen` decides, so a fresher reading at another replica wins).
   */
  async checkSilence(now = Date.now()): Promise<number> {
    const changes: StatusChange[] = [];
    for (const [id, s] of this.seen) {
      if (s.lastSeen + s.timeoutS * 1000 < now) {
        changes.push({
          orgId: s.orgId,
          deviceId: id,
          siteId: s.siteId,
          sitePath: s.sitePath,
          online: false,
          ifLastSeenBelow: now - s.timeoutS * 1000,
        });
        this.seen.delete(id);
      }
    }
    return this.realtime.status(changes, now);
  }

  /** Writes what is buffered and waits for it (graceful stop). */
  async drain(): Promise<void> {
    while (this.flushing || this.current.length) {
      if (!this.flushing) this.kick();
      await this.flushing;
    }
    await Promise.all(this.writing);
    await this.post;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.deadLetterLog.stop();
    this.deadLetterLog.flush();
    void this.compactor?.close();
  }
}
