import type { JobsOptions } from 'bullmq';
import { countRejected, decodeJson, isEpochMs, isRecord, isUuid, reject } from './contract.js';

/**
 * Device commands (docs/commands.md). Three contracts live here:
 *
 * - **MQTT, platform → device**: the workers publish `devices/{deviceId}/commands` at QoS 1 with
 *   `{id, name, params, expiresAt}` ({@link encodeCommandMessage}); a concentrator receives its
 *   children's on `gateways/{gatewayId}/commands` with the child's `serial` added.
 * - **MQTT, device → platform**: the device answers on `devices/{deviceId}/commands/reply` with
 *   `{id, status: "received" | "succeeded" | "failed", result?, error?}` ({@link parseCommandReply});
 *   a concentrator answers for a child on `gateways/{gatewayId}/commands/reply` with `serial` added
 *   (one object, or an array of them). Ingest consumes replies through its shared subscription.
 * - **BullMQ `commands` queue** ({@link COMMANDS_QUEUE}): the commands subgraph and ingest → workers.
 *   `dispatch` (send the next command of these devices), `replies` (device replies, in arrival
 *   order), `online` (devices came back, with the state they report).
 */

const CONTRACT = 'commands';

// ---------------------------------------------------------------------------------------------
// statuses

/** Every status of a command; the first three are active, the rest final. */
export const COMMAND_STATUSES = ['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELED'] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];
export const ACTIVE_STATUSES = ['QUEUED', 'SENT', 'DELIVERED'] as const satisfies readonly CommandStatus[];
export const isFinalStatus = (s: string) => s === 'SUCCEEDED' || s === 'FAILED' || s === 'EXPIRED' || s === 'CANCELED';

/** The command name the platform uses for desired-state deltas (`params: {desired, version, rampSeconds?}`); profiles need not declare it. */
export const SET_STATE_COMMAND = 'setState';

// ---------------------------------------------------------------------------------------------
// topics

export const deviceCommandTopic = (deviceId: string) => `devices/${deviceId}/commands`;
export const deviceCommandReplyTopic = (deviceId: string) => `devices/${deviceId}/commands/reply`;
export const gatewayCommandTopic = (gatewayId: string) => `gateways/${gatewayId}/commands`;
export const gatewayCommandReplyTopic = (gatewayId: string) => `gateways/${gatewayId}/commands/reply`;

/** The reply topic filters ingest subscribes to (shared subscription, like telemetry). */
export const COMMAND_REPLY_FILTERS = ['devices/+/commands/reply', 'gateways/+/commands/reply'] as const;

// ---------------------------------------------------------------------------------------------
// platform → device

/** What a device receives on its command topic. */
export interface CommandMessage {
  /** command id (uuid): the device must answer with it and should ignore an id it already executed */
  id: string;
  name: string;
  params: Record<string, unknown>;
  /** ISO 8601; a device should not start a command after it */
  expiresAt: string;
}

/** What a concentrator receives on `gateways/{id}/commands`: one child's command. */
export interface GatewayCommandMessage extends CommandMessage {
  serial: string;
}

export const encodeCommandMessage = (m: CommandMessage): string =>
  JSON.stringify({ id: m.id, name: m.name, params: m.params, expiresAt: m.expiresAt });

export const encodeGatewayCommandMessage = (m: GatewayCommandMessage): string =>
  JSON.stringify({ serial: m.serial, id: m.id, name: m.name, params: m.params, expiresAt: m.expiresAt });

const isIso = (v: unknown): v is string => typeof v === 'string' && v.length <= 40 && !Number.isNaN(Date.parse(v));

function commandFields(d: unknown): CommandMessage {
  if (!isRecord(d)) return reject(CONTRACT, 'command is not an object');
  if (!isUuid(d.id)) return reject(CONTRACT, 'id must be a uuid');
  if (typeof d.name !== 'string' || !d.name) return reject(CONTRACT, 'name must be a non-empty string');
  if (!isRecord(d.params)) return reject(CONTRACT, 'params must be an object');
  if (!isIso(d.expiresAt)) return reject(CONTRACT, 'expiresAt must be an ISO timestamp');
  return { id: d.id.toLowerCase(), name: d.name, params: d.params, expiresAt: d.expiresAt };
}

/** A command message as a device (or the simulator) reads it; throws a counted ContractError. */
export function parseCommandMessage(raw: string | Buffer): CommandMessage {
  return commandFields(decodeJson(CONTRACT, raw));
}

/** A concentrator's command message; throws a counted ContractError. */
export function parseGatewayCommandMessage(raw: string | Buffer): GatewayCommandMessage {
  const d = decodeJson(CONTRACT, raw);
  const c = commandFields(d);
  const serial = (d as Record<string, unknown>).serial;
  if (typeof serial !== 'string' || !serial || serial.length > 128) return reject(CONTRACT, 'serial must be a string of 1-128 characters');
  return { ...c, serial };
}

// ---------------------------------------------------------------------------------------------
// device → platform

export const REPLY_STATUSES = ['received', 'succeeded', 'failed'] as const;
export type ReplyStatus = (typeof REPLY_STATUSES)[number];

/** A device's answer about one command. */
export interface CommandReply {
  id: string;
  status: ReplyStatus;
  /** any JSON the device reports (succeeded) */
  result?: unknown;
  /** why it failed (failed) */
  error?: string;
}

export interface GatewayCommandReply extends CommandReply {
  serial: string;
}

/** Largest `error` text kept. */
export const MAX_REPLY_ERROR = 1000;

export const encodeCommandReply = (r: CommandReply): string => JSON.stringify(r);
export const encodeGatewayCommandReply = (r: GatewayCommandReply | GatewayCommandReply[]): string => JSON.stringify(r);

function replyFields(d: unknown): CommandReply {
  if (!isRecord(d)) return reject(CONTRACT, 'reply is not an object');
  if (!isUuid(d.id)) return reject(CONTRACT, 'id must be a command id (uuid)');
  if (typeof d.status !== 'string' || !(REPLY_STATUSES as readonly string[]).includes(d.status))
    return reject(CONTRACT, 'status must be "received", "succeeded" or "failed"');
  if (d.error !== undefined && d.error !== null && typeof d.error !== 'string') return reject(CONTRACT, 'error must be a string');
  const out: CommandReply = { id: d.id.toLowerCase(), status: d.status as ReplyStatus };
  if (d.result !== undefined) out.result = d.result;
  if (typeof d.error === 'string') out.error = d.error.slice(0, MAX_REPLY_ERROR);
  return out;
}

/** A device's reply (ingest); throws a counted ContractError naming what is wrong. */
export function parseCommandReply(raw: string | Buffer): CommandReply {
  return replyFields(decodeJson(CONTRACT, raw));
}

/**
 * A concentrator's replies: one object or an array of them, each with its child's `serial`. Throws
 * a counted ContractError when the message is unusable (not JSON, not an object or array); a bad
 * element is skipped and counted in `invalid`.
 */
export function parseGatewayCommandReplies(raw: string | Buffer): { replies: GatewayCommandReply[]; invalid: number } {
  const d = decodeJson(CONTRACT, raw);
  if (!isRecord(d) && !Array.isArray(d)) return reject(CONTRACT, 'reply is not an object or an array');
  const list = Array.isArray(d) ? (d as unknown[]) : [d];
  const replies: GatewayCommandReply[] = [];
  for (const e of list) {
    try {
      const r = replyFields(e);
      const serial = (e as Record<string, unknown>).serial;
      if (typeof serial === 'string' && serial && serial.length <= 128) replies.push({ ...r, serial });
    } catch {
      // counted by replyFields
    }
  }
  const invalid = list.length - replies.length;
  if (!replies.length && invalid) return reject(CONTRACT, 'no valid reply (each needs serial, id and status)');
  return { replies, invalid };
}

// ---------------------------------------------------------------------------------------------
// waking the fleet-job runner

/**
 * Redis pub/sub channel on which the commands subgraph says a fleet job may have devices to release now (created or
 * resumed); the workers' job runner (workers/command-jobs.ts) then steps its jobs at once instead of at its next look
 * (every 250 ms). The message is the job's id ({@link encodeJobWake}); a lost message costs at most that look.
 */
export const commandJobsWakeChannel = (prefix: string) => `${prefix}command-jobs:wake`;

/** The wake message: the job's id. */
export const encodeJobWake = (jobId: string): string => {
  if (!isUuid(jobId)) throw new TypeError(`not a job id: ${jobId}`);
  return jobId;
};

/** The job id of a wake message; a message that is not one is refused and counted (the runner steps its jobs anyway). */
export function parseJobWake(raw: string | Buffer): string {
  const s = raw.toString();
  if (!isUuid(s)) return reject(CONTRACT, 'a command-job wake message is a job id');
  return s;
}

// ---------------------------------------------------------------------------------------------
// the `commands` queue

/** Name of the BullMQ queue the workers' command dispatcher consumes (under `queuePrefix`). */
export const COMMANDS_QUEUE = 'commands';

/** `dispatch`: the commands subgraph (after a commit), fleet jobs and the workers themselves: send these devices' next command. */
export interface DispatchJob {
  orgId: string;
  deviceIds: string[];
}

/** One reply as ingest hands it on: the device it came from (resolved), its topic, when it arrived and the raw text (for dead letters). */
export interface ReplyItem {
  deviceId: string;
  topic: string;
  /** ms */
  receivedAt: number;
  reply: CommandReply;
  /** the message text, at most 2048 characters */
  raw: string;
}

/** `replies`: one organization's replies of one ingest batch, in arrival order. */
export interface RepliesJob {
  orgId: string;
  replies: ReplyItem[];
}

/** One device that spoke (status message, or first telemetry after being offline). */
export interface OnlineItem {
  deviceId: string;
  /** the state it reports (status message `state`), or null */
  state: Record<string, unknown> | null;
  /** ms */
  at: number;
}

/** `online`: devices of one organization that came back or reported their state. */
export interface OnlineJob {
  orgId: string;
  devices: OnlineItem[];
}

export type CommandsJob =
  | { name: 'dispatch'; data: DispatchJob }
  | { name: 'replies'; data: RepliesJob }
  | { name: 'online'; data: OnlineJob };

/** Most device ids in one `dispatch` job (builders split longer lists). */
export const MAX_DISPATCH_DEVICES = 1000;

/** Retried with backoff: a worker that loses PostgreSQL or the broker handles the job later; a job only ever repeats an idempotent step. */
export const COMMANDS_JOB_OPTIONS = {
  removeOnComplete: 1000,
  removeOnFail: 5000,
  attempts: 10,
  backoff: { type: 'exponential', delay: 250 },
} as const satisfies JobsOptions;

type Added<N extends CommandsJob['name'], D> = { name: N; data: D; opts: JobsOptions };

/**
 * `dispatch` jobs wait behind `replies` and `online` (BullMQ serves jobs without a priority before prioritized
 * ones): a burst of sends must not hold back the device answers that end commands and free their devices for the
 * next (bench:commands saw SENT → DELIVERED take seconds behind hundreds of waiting dispatch jobs). Nothing is
 * lost by the wait: the dispatcher's sweep finds marked devices anyway.
 */
export const DISPATCH_PRIORITY = 1;

/**
 * `dispatch` jobs, as `Queue.addBulk` takes them (split by {@link MAX_DISPATCH_DEVICES}). `inOrder`: without the
 * priority, in arrival order with the replies. For a rate-limited fleet job's release (small, steady grants): a
 * granted command then waits for the replies that came before it, not for every reply that comes after, which at a
 * steady rollout never stop (a prioritized job runs only once no other job waits; bench:commands saw grant → SENT
 * grow to seconds at 1,000/s). @default false
 */
export function dispatchJobs(orgId: string, deviceIds: readonly string[], o: { inOrder?: boolean } = {}): Added<'dispatch', DispatchJob>[] {
  const unique = [...new Set(deviceIds)];
  const out: Added<'dispatch', DispatchJob>[] = [];
  for (let i = 0; i < unique.length; i += MAX_DISPATCH_DEVICES)
    out.push({
      name: 'dispatch',
      data: { orgId, deviceIds: unique.slice(i, i + MAX_DISPATCH_DEVICES) },
      opts: o.inOrder ? COMMANDS_JOB_OPTIONS : { ...COMMANDS_JOB_OPTIONS, priority: DISPATCH_PRIORITY },
    });
  return out;
}

export const repliesJob = (job: RepliesJob): Added<'replies', RepliesJob> => ({ name: 'replies', data: job, opts: COMMANDS_JOB_OPTIONS });
export const onlineJob = (job: OnlineJob): Added<'online', OnlineJob> => ({ name: 'online', data: job, opts: COMMANDS_JOB_OPTIONS });

const isReplyItem = (r: unknown): r is ReplyItem => {
  if (!isRecord(r) || !isUuid(r.deviceId) || typeof r.topic !== 'string' || !isEpochMs(r.receivedAt) || typeof r.raw !== 'string')
    return false;
  try {
    replyFields(r.reply);
    return true;
  } catch {
    return false;
  }
};

const isOnlineItem = (r: unknown): r is OnlineItem =>
  isRecord(r) && isUuid(r.deviceId) && isEpochMs(r.at) && (r.state === null || isRecord(r.state));

/**
 * A job of the `commands` queue. Throws a counted ContractError for an unknown name or unusable
 * data (not an object, `orgId` not a uuid, the list missing); malformed list entries are skipped and
 * counted in `invalid`, the rest kept.
 */
export function parseCommandsJob(name: string, data: unknown): { job: CommandsJob; invalid: number } {
  if (!isRecord(data)) return reject(CONTRACT, 'job data is not an object');
  if (!isUuid(data.orgId)) return reject(CONTRACT, 'orgId must be a uuid');
  const orgId = data.orgId;
  const keep = <T>(list: unknown, ok: (x: unknown) => x is T, what: string): { items: T[]; invalid: number } => {
    if (!Array.isArray(list)) return reject(CONTRACT, `${what} must be an array`);
    const items = (list as unknown[]).filter(ok);
    const invalid = list.length - items.length;
    countRejected(CONTRACT, invalid);
    return { items, invalid };
  };
  switch (name) {
    case 'dispatch': {
      const { items, invalid } = keep(data.deviceIds, isUuid, 'deviceIds');
      return { job: { name, data: { orgId, deviceIds: items } }, invalid };
    }
    case 'replies': {
      const { items, invalid } = keep(data.replies, isReplyItem, 'replies');
      return {
        job: { name, data: { orgId, replies: items.map((r) => ({ ...r, reply: replyFields(r.reply) })) } },
        invalid,
      };
    }
    case 'online': {
      const { items, invalid } = keep(data.devices, isOnlineItem, 'devices');
      return { job: { name, data: { orgId, devices: items } }, invalid };
    }
    default:
      return reject(CONTRACT, `unknown job ${name.slice(0, 32)}`);
  }
}
