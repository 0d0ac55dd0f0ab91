import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import mqtt, { type MqttClient } from 'mqtt';
import type { Config } from '../lib/config.js';
import {
  type CommandMessage,
  type CommandReply,
  deviceCommandReplyTopic,
  deviceCommandTopic,
  encodeCommandReply,
  encodeGatewayCommandReply,
  gatewayCommandReplyTopic,
  gatewayCommandTopic,
  parseCommandMessage,
  parseGatewayCommandMessage,
} from '../lib/contracts/commands.js';
import { deviceTopic, gatewayTopic } from '../lib/contracts/mqtt-topics.js';
import { createDb, type Db } from '../lib/db.js';
import { type DeviceCredential, readCredentialsFile } from './credentials-file.js';
import {
  type BehaviourShares,
  behaviourOf,
  type CommandBehaviour,
  CommandMemory,
  decideCommand,
  finishCommand,
  type LampState,
  outputLevel,
} from './sim-commands.js';
import { provisionMissing } from './sim-provision.js';

/**
 * A fleet of street-light controllers for demos and load: lamps on at night and off by day (by each
 * device's local solar time), dimmed after midnight, power from the dim level, mains voltage with
 * noise, a rising energy counter, occasional lamp faults and offline periods (status messages),
 * and optionally a fraction of malformed messages that ingest must dead-letter. Devices are
 * multiplexed over a few anonymous MQTT connections (a load generator for the development broker), or,
 * with `credentials`, each device (and each concentrator) connects as itself, one connection each, for
 * a broker that authenticates devices (docs/broker-auth.md).
 * Lights behind a concentrator (`parent_id`) speak through it: `gateways/<id>/connect|telemetry|status`
 * keyed by their serial.
 *
 * The lights obey commands (`cli/sim-commands.ts` decides, this file does the MQTT): each connection
 * subscribes at QoS 1 to the exact command topics of its own devices (`devices/<id>/commands`, and
 * `gateways/<id>/commands` for the concentrators of its children), answers on the reply topics, and
 * reports the new lamp state on the device's status `state`.
 */

export interface SimulatedDevice {
  id: string;
  serial: string;
  /** rated lamp power, W */
  ratedW: number;
  /** longitude, for local solar time */
  lng: number;
  /** the concentrator it speaks through (`gateways/<parentId>/…`, keyed by serial), or null */
  parentId: string | null;
}

export interface SimulateOptions {
  /** devices to simulate (the first N street lights of the org, by serial) */
  devices: number;
  /** total messages per second over all devices */
  rate: number;
  /** seconds to run; unset: until stopped */
  durationS?: number | undefined;
  /** share of messages that are deliberately malformed (0..1) @default 0 */
  badFraction?: number;
  /** organization slug @default 'demo' */
  org?: string;
  /** prepended to every topic (tests use a unique one) @default '' */
  topicPrefix?: string;
  /** MQTT connections to multiplex over (without `credentials`) @default min(4, ceil(devices / 250)) */
  connections?: number;
  /** seconds between progress lines @default 5 */
  reportEveryS?: number;
  /** progress output @default console.log */
  log?: (line: string) => void;
  /** stop early */
  signal?: AbortSignal;
  /** answer commands (subscribe to the command topics) @default true */
  commands?: boolean;
  /** fractions of devices that are offline, slow, fail or silent (chosen by device id) @default none */
  behaviour?: BehaviourShares;
  /** how long a slow device takes to answer, ms @default 5000 */
  slowMs?: number;
  /**
   * Per-device mode: the credential of each device and concentrator (by device id). Each connects as
   * itself (client id = its id) with its own connection; devices without one (or behind a
   * concentrator without one) are not simulated and are counted in `noCredentials`.
   */
  credentials?: ReadonlyMap<string, Pick<DeviceCredential, 'username' | 'secret'>>;
  /** per-device mode: connections opened at once (the next batch waits for their CONNACKs) @default 50 */
  connectBatch?: number;
  /**
   * Per-device mode: how long a refused connection is retried (once a second) before the device is
   * given up and counted in `refused`; credentials just issued take a moment to reach Mosquitto
   * through the platform's sync @default 30
   */
  refusedRetryS?: number;
  /** CA certificate(s) for an `mqtts://` broker */
  ca?: Buffer;
}

export interface SimulateResult {
  sent: number;
  bad: number;
  statusMessages: number;
  seconds: number;
  /** command messages received (repeats included) */
  commands: number;
  /** commands executed (each id once) */
  executed: number;
  /** repeats of an executed id, answered without executing again */
  repeats: number;
  /** commands not answered: silent devices, past their expiry */
  ignored: number;
  /** command messages that were not the contract's (not JSON, no id, unknown device or serial) */
  badCommands: number;
  /** replies published */
  replies: number;
  /** connections that were up at some point (per-device mode: devices and concentrators) */
  connected: number;
  /** per-device mode: connections the broker refused for longer than `refusedRetryS`, given up */
  refused: number;
  /** per-device mode: the serials of those, with the broker's reason */
  refusedDevices: { serial: string; reason: string }[];
  /** per-device mode: devices not simulated for want of a credential (theirs or their concentrator's) */
  noCredentials: number;
}

/** Street lights of an organization (not concentrators), first `n` by serial. */
export async function loadSimulatedDevices(db: Db, orgSlug: string, n: number): Promise<SimulatedDevice[]> {
  const { rows } = await sql<{ id: string; serial: string; rated: string | null; lng: number | null; parent_id: string | null }>`
    select d.id, d.serial, d.attributes->>'ratedPowerW' as rated, d.parent_id,
           case when d.location is null then null else st_x(d.location::geometry) end as lng
    from devices d
    join organizations o on o.id = d.org_id
    left join device_profiles p on p.id = d.profile_id
    where o.slug = ${orgSlug} and d.decommissioned_at is null and not coalesce(p.is_gateway, false)
    order by d.serial
    limit ${n}`.execute(db);
  return rows.map((r) => ({
    id: r.id,
    serial: r.serial,
    ratedW: Number(r.rated) > 0 ? Number(r.rated) : 90,
    lng: r.lng ?? 0,
    parentId: r.parent_id,
  }));
}

/** What connects in per-device mode: the direct devices and the concentrators of the others, with serials. */
export async function speakersOf(db: Db, devices: readonly SimulatedDevice[]): Promise<{ id: string; serial: string }[]> {
  const direct = devices.filter((d) => !d.parentId).map((d) => ({ id: d.id, serial: d.serial }));
  const parents = [...new Set(devices.flatMap((d) => (d.parentId ? [d.parentId] : [])))];
  if (!parents.length) return direct;
  const gateways = await db.selectFrom('devices').select(['id', 'serial']).where('id', 'in', parents).orderBy('serial').execute();
  return [...gateways, ...direct];
}

/** Local solar hour (0..24) at a longitude. */
export function localHour(nowMs: number, lng: number): number {
  const h = (nowMs / 3_600_000 + lng / 15) % 24;
  return h < 0 ? h + 24 : h;
}

/**
 * Dim level (%) by local hour: off by day (07:00–18:00), full at dusk and dawn, 50% from 23:00 to 05:00.
 * Dusk/dawn are fixed hours (no seasons) to keep the traffic predictable.
 */
export function dimLevel(hour: number): number {
  if (hour >= 7 && hour < 18) return 0;
  if (hour >= 23 || hour < 5) return 50;
  return 100;
}

export interface LightReading {
  voltage: number;
  current: number;
  power: number;
  dimLevel: number;
  lampState: boolean;
  /** the controller's fault flag: lamp or driver failure */
  lampFault: boolean;
}

/** Electrical readings of one controller: power follows dim level (driver losses at low dim), I = P/V. */
export function lightReading(ratedW: number, dim: number, noise: () => number, failed = false): LightReading {
  const voltage = round(230 + (noise() - 0.5) * 8, 1);
  const on = dim > 0 && !failed;
  const power = on ? round(ratedW * (0.1 + 0.9 * (dim / 100)) * (1 + (noise() - 0.5) * 0.04), 1) : round(0.4 + noise() * 0.2, 2);
  return { voltage, current: round(power / voltage, 3), power, dimLevel: on ? dim : 0, lampState: on, lampFault: failed };
}

const round = (v: number, d: number) => Math.round(v * 10 ** d) / 10 ** d;

interface DeviceState {
  d: SimulatedDevice;
  conn: number;
  energy: number;
  lastAt: number;
  offlineUntil: number;
  failed: boolean;
  behaviour: CommandBehaviour;
  /** the commanded state; null until the first command (the lamp follows its solar schedule) */
  lamp: LampState | null;
  memory: CommandMemory;
  /** commands that arrived during a random offline period, executed when it ends */
  pending: CommandMessage[];
}

/**
 * Chance per telemetry message that a device drops offline (30–120 s) and of a lamp failure.
 * @default 0.001, 0.0005
 */
export const OFFLINE_CHANCE = 0.001;
export const FAULT_CHANCE = 0.0005;

/** The kinds of malformed traffic sent when `badFraction` > 0 (each should become a dead letter). */
export const BAD_KINDS = ['not_json', 'wrong_type', 'unknown_device', 'bad_topic'] as const;

function badMessage(kind: (typeof BAD_KINDS)[number], s: DeviceState, prefix: string): [string, string] {
  switch (kind) {
    case 'not_json':
      return [`${prefix}${deviceTopic(s.d.id, 'telemetry')}`, '{"ts": 1, "values": {"power": 12'];
    case 'wrong_type':
      return [
        `${prefix}${deviceTopic(s.d.id, 'telemetry')}`,
        JSON.stringify({ ts: Date.now(), values: { power: 'bright', voltage: { v: 1 } } }),
      ];
    case 'unknown_device':
      return [`${prefix}${deviceTopic(randomUUID(), 'telemetry')}`, JSON.stringify({ ts: Date.now(), values: { power: 10 } })];
    case 'bad_topic':
      return [`${prefix}devices/${s.d.id}/telemetry/extra`, JSON.stringify({ power: 10 })];
  }
}

/** The lamp state a device reports now: its commanded state, or the one its solar schedule gives. */
function lampNow(s: DeviceState, now: number): LampState {
  if (s.lamp) return s.lamp;
  const level = dimLevel(localHour(now, s.d.lng));
  return { level, on: level > 0 };
}

/** Most exact topics per SUBSCRIBE packet. */
const SUBSCRIBE_CHUNK = 500;

/** One MQTT connection of the simulator and what it speaks for. */
interface Link {
  client: MqttClient;
  /** connected now */
  up: boolean;
  /** subscribed and announced once (at its first connection) */
  started: boolean;
  /** refused by the broker for longer than the retry window: closed, given up */
  refused: boolean;
  /** the device (or concentrator) it is, in per-device mode */
  serial?: string;
  /** exact command topics it subscribes to */
  topics: string[];
}

/** The CONNACK reason codes mqtt.js reports as errors: MQTT 3.1.1's 1–5 and MQTT 5's 128 and up. */
const isRefusal = (code: unknown): code is number => typeof code === 'number' && ((code >= 1 && code <= 5) || code >= 128);

/** Refused connections named in the log one by one (the rest are counted). */
const REFUSALS_LOGGED = 20;

/** Runs the simulation against `mqttUrl` until the duration elapses (or `signal` aborts). */
export async function simulate(all: SimulatedDevice[], mqttUrl: string, o: SimulateOptions): Promise<SimulateResult> {
  if (!all.length) throw new Error(`no devices to simulate in organization "${o.org ?? 'demo'}" (run \`rulr seed --demo\` first)`);
  if (!(o.rate > 0)) throw new Error('--rate must be positive');
  const creds = o.credentials;
  if (creds && o.topicPrefix)
    throw new Error('--topic-prefix cannot be used with credentials: the broker admits devices to their own topics only');
  const badFraction = Math.min(1, Math.max(0, o.badFraction ?? 0));
  const prefix = o.topicPrefix ?? '';
  const log = o.log ?? ((l: string) => console.log(l));
  const obey = o.commands !== false;
  const shares = o.behaviour ?? {};
  // Per-device mode simulates only the devices it can connect as (or whose concentrator it can).
  const devices = creds ? all.filter((d) => creds.has(d.parentId ?? d.id)) : all;
  const noCredentials = all.length - devices.length;
  if (noCredentials) {
    const which = all.filter((d) => !creds?.has(d.parentId ?? d.id)).slice(0, 10);
    log(
      `simulate: ${noCredentials} of ${all.length} devices have no credentials (theirs or their concentrator's) and are not simulated: ${which.map((d) => d.serial).join(', ')}${noCredentials > 10 ? ', …' : ''}`,
    );
  }
  if (!devices.length)
    throw new Error(`none of the ${all.length} devices has credentials: run \`rulr credentials issue\` or use --provision-url`);
  const res: SimulateResult = {
    sent: 0,
    bad: 0,
    statusMessages: 0,
    seconds: 0,
    commands: 0,
    executed: 0,
    repeats: 0,
    ignored: 0,
    badCommands: 0,
    replies: 0,
    connected: 0,
    refused: 0,
    refusedDevices: [],
    noCredentials,
  };
  const tls = o.ca ? { ca: o.ca } : {};
  const runId = randomUUID().slice(0, 8);
  // Which link each device speaks through: one of a few shared ones, or (per-device mode) its own, or its concentrator's.
  const speakerIds = creds ? [...new Set(devices.map((d) => d.parentId ?? d.id))] : [];
  const speakerIndex = new Map(speakerIds.map((id, i) => [id, i]));
  const nConn = creds
    ? speakerIds.length
    : Math.max(1, Math.min(o.connections ?? Math.min(4, Math.ceil(devices.length / 250)), devices.length));
  let start = Date.now();
  const states: DeviceState[] = devices.map((d, i) => ({
    d,
    conn: creds ? (speakerIndex.get(d.parentId ?? d.id) as number) : i % nConn,
    energy: round(100 + (hash(d.id) % 5000), 3),
    lastAt: start,
    offlineUntil: 0,
    failed: false,
    behaviour: behaviourOf(d.id, shares),
    lamp: null,
    memory: new CommandMemory(),
    pending: [],
  }));
  const links: Link[] = [];
  const inflight = new Array<number>(nConn).fill(0);
  const MAX_INFLIGHT = 2000;
  const publish = (conn: number, topic: string, payload: string) => {
    inflight[conn] = (inflight[conn] ?? 0) + 1;
    (links[conn] as Link).client.publish(topic, payload, { qos: 1 }, () => {
      inflight[conn] = (inflight[conn] ?? 1) - 1;
    });
  };
  const status = (s: DeviceState, online: boolean, state?: Record<string, unknown>) => {
    const body = state ? { online, state } : { online };
    if (s.d.parentId) publish(s.conn, `${prefix}${gatewayTopic(s.d.parentId, 'status')}`, JSON.stringify({ [s.d.serial]: body }));
    else publish(s.conn, `${prefix}${deviceTopic(s.d.id, 'status')}`, JSON.stringify(body));
    res.statusMessages++;
  };
  const reply = (s: DeviceState, r: CommandReply) => {
    if (s.d.parentId)
      publish(s.conn, `${prefix}${gatewayCommandReplyTopic(s.d.parentId)}`, encodeGatewayCommandReply({ ...r, serial: s.d.serial }));
    else publish(s.conn, `${prefix}${deviceCommandReplyTopic(s.d.id)}`, encodeCommandReply(r));
    res.replies++;
  };

  // Commands: route each message to its device, let sim-commands decide, publish what it decided.
  const byId = new Map(states.map((s) => [s.d.id, s]));
  const bySerial = new Map<string, Map<string, DeviceState>>();
  for (const s of states) {
    if (!s.d.parentId) continue;
    const m = bySerial.get(s.d.parentId) ?? new Map<string, DeviceState>();
    bySerial.set(s.d.parentId, m);
    m.set(s.d.serial, s);
  }
  const handle = (s: DeviceState, m: CommandMessage) => {
    const now = Date.now();
    if (s.offlineUntil) return void s.pending.push(m);
    const d = decideCommand(m, lampNow(s, now), s.behaviour, s.memory, now, o.slowMs === undefined ? {} : { slowMs: o.slowMs });
    if (d.kind === 'ignore') return void res.ignored++;
    if (d.kind === 'repeat') {
      res.repeats++;
      for (const r of d.replies) reply(s, r);
      return;
    }
    res.executed++;
    const answer = () => {
      if (d.state) s.lamp = d.state;
      // the new state first, so it is reported by the time the result says succeeded
      if (d.state || d.reboot) status(s, true, { ...lampNow(s, Date.now()), ...(d.reboot ? { bootedAt: new Date().toISOString() } : {}) });
      for (const r of d.replies) reply(s, r);
      if (d.delayMs) finishCommand(s.memory, d.replies[d.replies.length - 1] as CommandReply);
    };
    if (d.delayMs) setTimeout(answer, d.delayMs).unref();
    else answer();
  };
  const onMessage = (topic: string, payload: Buffer) => {
    res.commands++;
    const parts = topic.slice(prefix.length).split('/');
    try {
      if (parts[0] === 'devices') {
        const s = byId.get(parts[1] ?? '');
        if (!s || s.d.parentId) throw new Error('not one of our devices');
        handle(s, parseCommandMessage(payload));
      } else {
        const m = parseGatewayCommandMessage(payload);
        const s = bySerial.get(parts[1] ?? '')?.get(m.serial);
        if (!s) throw new Error('not one of our serials');
        handle(s, m);
      }
    } catch {
      res.badCommands++;
    }
  };

  // What each link subscribes to: the exact command topics of its own devices and concentrators.
  const topics: string[][] = Array.from({ length: nConn }, () => []);
  if (obey) {
    for (const s of states) if (!s.d.parentId && s.behaviour !== 'offline') topics[s.conn]?.push(`${prefix}${deviceCommandTopic(s.d.id)}`);
    for (const [i, gw] of [...bySerial.keys()].entries())
      topics[creds ? (speakerIndex.get(gw) as number) : i % nConn]?.push(`${prefix}${gatewayCommandTopic(gw)}`);
  }
  // Concentrators announce their children (up to 500 serials per message); direct devices come online.
  // Offline devices say so once and stay silent.
  const announce = (conn: number) => {
    const children = new Map<string, DeviceState[]>();
    for (const s of states) {
      if (s.conn !== conn) continue;
      if (s.behaviour === 'offline') status(s, false);
      else if (s.d.parentId) children.set(s.d.parentId, [...(children.get(s.d.parentId) ?? []), s]);
      else status(s, true, { firmware: '3.2.1' });
    }
    for (const [gw, list] of children) {
      for (let i = 0; i < list.length; i += 500) {
        publish(
          conn,
          `${prefix}${gatewayTopic(gw, 'connect')}`,
          JSON.stringify({ devices: list.slice(i, i + 500).map((c) => c.d.serial) }),
        );
        res.statusMessages++;
      }
    }
  };
  // It subscribes before it announces its devices online, so the commands the platform sends at once are not missed.
  const bringUp = async (conn: number) => {
    const link = links[conn] as Link;
    link.started = true;
    link.client.on('message', onMessage);
    const list = link.topics;
    for (let k = 0; k < list.length; k += SUBSCRIBE_CHUNK)
      await link.client.subscribeAsync(Object.fromEntries(list.slice(k, k + SUBSCRIBE_CHUNK).map((t) => [t, { qos: 1 as const }])));
    announce(conn);
  };

  // A persistent session (a QoS 1 command published during a short broker disconnect waits for us);
  // mqtt.js subscribes again when the broker has lost the session.
  const session = { protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 300 }, reconnectPeriod: 1000, ...tls };
  if (!creds) {
    const clients = await Promise.all(
      Array.from({ length: nConn }, (_, i) => mqtt.connectAsync(mqttUrl, { clientId: `rulr-sim-${runId}-${i}`, ...session })),
    );
    clients.forEach((client, i) => {
      const link: Link = { client, up: true, started: false, refused: false, topics: topics[i] ?? [] };
      client.on('connect', () => {
        link.up = true;
      });
      client.on('close', () => {
        link.up = false;
      });
      links.push(link);
    });
    res.connected = nConn;
    await Promise.all(links.map((_, i) => bringUp(i)));
  } else {
    await connectEach(speakerIds, topics);
  }

  /** Per-device mode: one connection per device and concentrator, as itself, `connectBatch` at a time. */
  async function connectEach(ids: string[], topicsOf: string[][]) {
    const creds_ = creds as NonNullable<typeof creds>;
    const serialOf = new Map<string, string>();
    for (const d of devices) serialOf.set(d.id, d.serial);
    const retryMs = (o.refusedRetryS ?? 30) * 1000;
    const batch = Math.max(1, o.connectBatch ?? 50);
    for (let b = 0; b < ids.length && !o.signal?.aborted; b += batch) {
      await Promise.all(
        ids.slice(b, b + batch).map((id, k) => {
          const conn = b + k;
          const cred = creds_.get(id) as Pick<DeviceCredential, 'username' | 'secret'>;
          const client = mqtt.connect(mqttUrl, {
            ...session,
            clientId: id,
            username: cred.username,
            password: cred.secret,
            connectTimeout: 10_000,
            reconnectOnConnackError: true,
          });
          const link: Link = {
            client,
            up: false,
            started: false,
            refused: false,
            serial: serialOf.get(id) ?? id,
            topics: topicsOf[conn] ?? [],
          };
          links[conn] = link;
          let firstRefusal = 0;
          return new Promise<void>((settle) => {
            const timer = setTimeout(settle, 10_000);
            client.on('connect', () => {
              firstRefusal = 0;
              link.up = true;
              clearTimeout(timer);
              settle();
              if (link.started) return;
              res.connected++;
              bringUp(conn).catch((e: unknown) => log(`simulate: ${link.serial}: subscribing failed (${(e as Error).message})`));
            });
            client.on('close', () => {
              link.up = false;
            });
            client.on('error', (e: Error & { code?: unknown }) => {
              if (!isRefusal(e.code) || link.refused) return;
              clearTimeout(timer);
              settle();
              firstRefusal ||= Date.now();
              if (Date.now() - firstRefusal < retryMs) return;
              link.refused = true;
              client.end(true);
              res.refused++;
              res.refusedDevices.push({ serial: link.serial ?? id, reason: e.message });
              if (res.refused <= REFUSALS_LOGGED)
                log(`simulate: ${link.serial} (${id}) refused by the broker for ${Math.round(retryMs / 1000)} s (${e.message}): given up`);
              else if (res.refused === REFUSALS_LOGGED + 1) log('simulate: more devices refused; the final line counts them');
            });
          });
        }),
      );
      if (ids.length > batch)
        log(`simulate: ${Math.min(ids.length, b + batch)}/${ids.length} connections opened, ${res.connected} connected`);
    }
  }

  // the run (its rate and duration) begins once the connections are up
  start = Date.now();
  for (const s of states) s.lastAt = start;
  // a broker that authenticates devices refuses (and Mosquitto 2.0 disconnects for) another device's or an unknown topic
  const badKinds = creds ? BAD_KINDS.filter((k) => k === 'not_json' || k === 'wrong_type') : BAD_KINDS;
  const talking = states.filter((s) => s.behaviour !== 'offline');
  let next = 0;
  let lastReport = start;
  let sentAtReport = 0;
  const end = o.durationS ? start + o.durationS * 1000 : Number.POSITIVE_INFINITY;
  const reportMs = (o.reportEveryS ?? 5) * 1000;
  while (!o.signal?.aborted) {
    const now = Date.now();
    if (now >= end) break;
    const due = talking.length ? Math.min(Math.floor(((now - start) / 1000) * o.rate) - res.sent, Math.ceil(o.rate)) : 0;
    for (let k = 0; k < due; k++) {
      const s = talking[next] as DeviceState;
      next = (next + 1) % talking.length;
      if ((inflight[s.conn] ?? 0) >= MAX_INFLIGHT) break;
      // a device says nothing while it is disconnected (or refused)
      if (!links[s.conn]?.up) continue;
      if (s.offlineUntil) {
        if (now < s.offlineUntil) continue;
        s.offlineUntil = 0;
        status(s, true, { firmware: '3.2.1', reconnected: true, ...(s.lamp ?? {}) });
        for (const m of s.pending.splice(0)) handle(s, m);
      }
      if (badFraction > 0 && Math.random() < badFraction) {
        const [topic, payload] = badMessage(badKinds[Math.floor(Math.random() * badKinds.length)] as (typeof BAD_KINDS)[number], s, prefix);
        publish(s.conn, topic, payload);
        res.sent++;
        res.bad++;
        continue;
      }
      if (Math.random() < FAULT_CHANCE) {
        s.failed = !s.failed;
        status(s, true, s.failed ? { fault: 'lamp_failure' } : { fault: null });
      }
      const dim = s.lamp ? outputLevel(s.lamp) : dimLevel(localHour(now, s.d.lng));
      const r = lightReading(s.d.ratedW, dim, Math.random, s.failed);
      s.energy = round(s.energy + (r.power * (now - s.lastAt)) / 3_600_000_000, 6);
      s.lastAt = now;
      const reading = { ts: now, values: { ...r, energy: s.energy } };
      if (s.d.parentId) publish(s.conn, `${prefix}${gatewayTopic(s.d.parentId, 'telemetry')}`, JSON.stringify({ [s.d.serial]: reading }));
      else publish(s.conn, `${prefix}${deviceTopic(s.d.id, 'telemetry')}`, JSON.stringify(reading));
      res.sent++;
      if (Math.random() < OFFLINE_CHANCE) {
        status(s, false);
        s.offlineUntil = now + 30_000 + Math.random() * 90_000;
      }
    }
    if (now - lastReport >= reportMs) {
      const rate = ((res.sent - sentAtReport) * 1000) / (now - lastReport);
      const offline = states.filter((s) => s.offlineUntil || s.behaviour === 'offline').length;
      log(
        `simulate: sent ${res.sent} (${res.bad} malformed) in ${((now - start) / 1000).toFixed(0)} s, ${rate.toFixed(0)} msg/s, ${states.length - offline}/${states.length} online, commands ${res.executed} executed, ${res.repeats} repeats, ${res.ignored} ignored`,
      );
      lastReport = now;
      sentAtReport = res.sent;
    }
    await new Promise((r) => setTimeout(r, Math.max(5, Math.min(100, 1000 / o.rate))));
  }
  // Let QoS 1 acknowledgements arrive before closing; the sessions end with the connections.
  for (let i = 0; i < 100 && inflight.some((n) => n > 0); i++) await new Promise((r) => setTimeout(r, 50));
  await Promise.all(
    links.map((l) =>
      l.up ? l.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } }) : l.refused ? undefined : l.client.endAsync(true),
    ),
  );
  res.seconds = (Date.now() - start) / 1000;
  const perDevice = creds
    ? `; connections: ${res.connected} of ${nConn} devices and concentrators connected, ${res.refused} refused${
        res.refusedDevices.length
          ? ` (${res.refusedDevices
              .slice(0, 10)
              .map((r) => r.serial)
              .join(', ')}${res.refused > 10 ? ', …' : ''})`
          : ''
      }, ${res.noCredentials} devices without credentials`
    : '';
  log(
    `simulate: done, sent ${res.sent} messages (${res.bad} malformed, ${res.statusMessages} status) in ${res.seconds.toFixed(1)} s; commands: ${res.commands} received, ${res.executed} executed, ${res.repeats} repeats, ${res.ignored} ignored, ${res.badCommands} malformed${perDevice}`,
  );
  return res;
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The `rulr simulate` options as commander hands them over (strings). */
export interface SimulateCliOptions {
  devices: string;
  rate: string;
  duration?: string;
  badFraction?: string;
  org: string;
  topicPrefix?: string;
  offlineFraction?: string;
  slowFraction?: string;
  slowMs?: string;
  failFraction?: string;
  silentFraction?: string;
  behaviourSeed?: string;
  commands?: boolean;
  /** per-device mode: the credentials file (`rulr credentials issue`; provisioning claims are added to it) */
  credentials?: string;
  /** ingest's base URL: devices missing from the credentials file claim theirs there */
  provisionUrl?: string;
  provisionKey?: string;
  /** the profile's provisioning secret (or RULR_PROVISION_SECRET) */
  provisionSecret?: string;
  connectBatch?: string;
  refusedRetryS?: string;
}

const fraction = (v: string | undefined, flag: string): number => {
  const n = Number(v ?? 0);
  if (!(n >= 0 && n <= 1)) throw new Error(`--${flag} must be a number from 0 to 1`);
  return n;
};

/** The command behaviour flags of `rulr simulate`, checked. */
export function behaviourFlags(o: SimulateCliOptions): { behaviour: BehaviourShares; slowMs?: number } {
  const behaviour: BehaviourShares = {
    offline: fraction(o.offlineFraction, 'offline-fraction'),
    slow: fraction(o.slowFraction, 'slow-fraction'),
    fail: fraction(o.failFraction, 'fail-fraction'),
    silent: fraction(o.silentFraction, 'silent-fraction'),
    seed: o.behaviourSeed ?? '',
  };
  behaviourOf('00000000-0000-0000-0000-000000000000', behaviour); // throws when the shares add up to more than 1
  if (o.slowMs === undefined) return { behaviour };
  const slowMs = Number(o.slowMs);
  if (!Number.isInteger(slowMs) || slowMs < 0 || slowMs > 3_600_000) throw new Error('--slow-ms must be an integer from 0 to 3600000');
  return { behaviour, slowMs };
}

const positiveInt = (v: string | undefined, flag: string, fallback: number): number => {
  const n = v === undefined ? fallback : Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer`);
  return n;
};

/** Per-device mode's credentials: the file, completed by provisioning claims when asked. */
async function credentialsFor(
  o: SimulateCliOptions,
  db: Db,
  devices: SimulatedDevice[],
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
  signal: AbortSignal,
): Promise<Map<string, DeviceCredential> | undefined> {
  if (!o.credentials) {
    if (o.provisionUrl) throw new Error('--provision-url needs --credentials <file> (where the claimed credentials are kept)');
    return undefined;
  }
  const file = readCredentialsFile(o.credentials, o.org, log);
  if (o.provisionUrl) {
    const secret = o.provisionSecret ?? env.RULR_PROVISION_SECRET;
    if (!o.provisionKey || !secret)
      throw new Error('--provision-url needs --provision-key and --provision-secret (or RULR_PROVISION_SECRET)');
    await provisionMissing(await speakersOf(db, devices), file, {
      url: o.provisionUrl,
      key: o.provisionKey,
      secret,
      path: o.credentials,
      log,
      signal,
    });
  }
  return file.devices;
}

/**
 * `rulr simulate`: loads the organization's devices and runs until the duration or Ctrl-C (or
 * `signal`, for tests).
 */
export async function simulateCli(
  cfg: Config,
  o: SimulateCliOptions,
  run: { signal?: AbortSignal; log?: (line: string) => void; env?: NodeJS.ProcessEnv } = {},
): Promise<SimulateResult> {
  const flags = behaviourFlags(o);
  const log = run.log ?? ((l: string) => console.log(l));
  const ac = new AbortController();
  if (run.signal) run.signal.addEventListener('abort', () => ac.abort());
  else {
    process.once('SIGINT', () => ac.abort());
    process.once('SIGTERM', () => ac.abort());
  }
  const env = run.env ?? process.env;
  // the flags are checked before anything is connected
  if (o.provisionUrl && !o.credentials)
    throw new Error('--provision-url needs --credentials <file> (where the claimed credentials are kept)');
  if (o.provisionUrl && (!o.provisionKey || !(o.provisionSecret ?? env.RULR_PROVISION_SECRET)))
    throw new Error('--provision-url needs --provision-key and --provision-secret (or RULR_PROVISION_SECRET)');
  const connectBatch = positiveInt(o.connectBatch, 'connect-batch', 50);
  const refusedRetryS = Number(o.refusedRetryS ?? 30);
  if (!(refusedRetryS >= 0)) throw new Error('--refused-retry-s must be a number of seconds');
  const db = createDb({ url: cfg.DATABASE_URL, poolSize: 1 });
  let devices: SimulatedDevice[];
  let credentials: Map<string, DeviceCredential> | undefined;
  try {
    devices = await loadSimulatedDevices(db, o.org, Number(o.devices));
    credentials = await credentialsFor(o, db, devices, env, log, ac.signal);
  } finally {
    await db.destroy();
  }
  return simulate(devices, cfg.MQTT_URL, {
    ...(credentials ? { credentials, connectBatch, refusedRetryS } : {}),
    ...(cfg.MQTT_CA_FILE ? { ca: readFileSync(cfg.MQTT_CA_FILE) } : {}),
    log,
    devices: Number(o.devices),
    rate: Number(o.rate),
    durationS: o.duration ? Number(o.duration) : undefined,
    badFraction: o.badFraction ? Number(o.badFraction) : 0,
    org: o.org,
    topicPrefix: o.topicPrefix ?? '',
    signal: ac.signal,
    commands: o.commands !== false,
    ...flags,
  });
}
