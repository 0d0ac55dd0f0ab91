import { countRejected, isEpochMs, isRecord, reject } from './contract.js';

/**
 * The device state cache in Redis, written by ingest after each commit and read by the metrics
 * subgraph (`Device.latest`, `Device.status`, `Site.power`) and the rules subgraph (dry runs):
 *
 * - `<prefix>latest:<deviceId>`: a hash, one field per metric, its value the newest reading as
 *   `{"ts":<ms>,"v":<number|null>,"t":<string|null>}` ({@link encodeLatestValue}; booleans are stored
 *   as `v` 1/0 with `t` "true"/"false", strings as `v` null). Ingest writes it in a Lua script
 *   (ingest/realtime.ts) that keeps a field only when its `ts` is not older.
 * - `<prefix>status:<deviceId>`: a hash with `online` ("1"/"0"), `lastSeen` and `since` (ms, as
 *   decimal text) and `state` (the device's last reported state, JSON object text).
 *
 * One rule for corrupt entries, whoever reads: a corrupt field (not JSON, a wrong type, a missing
 * `ts`) is skipped as if absent and counted in `rulr_contract_rejected_total{contract}`; the other
 * fields of the hash are kept and the request goes on. A cache entry is never worth failing a read.
 */

const LATEST = 'device-state.latest';
const STATUS = 'device-state.status';

export const latestKey = (prefix: string, deviceId: string) => `${prefix}latest:${deviceId}`;
export const statusKey = (prefix: string, deviceId: string) => `${prefix}status:${deviceId}`;

/** One metric's newest reading as the `latest` hash holds it. */
export interface LatestValue {
  /** reading time, ms */
  ts: number;
  /** numbers, booleans as 1/0; null for strings */
  value: number | null;
  /** strings, booleans as "true"/"false"; null for numbers */
  text: string | null;
}

export interface LatestReading extends LatestValue {
  metric: string;
}

/** The `latest` hash value of one reading (the exact text ingest's script compares and stores). */
export function encodeLatestValue(r: LatestValue): string {
  return `{"ts":${r.ts},"v":${r.value === null ? 'null' : JSON.stringify(r.value)},"t":${r.text === null ? 'null' : JSON.stringify(r.text)}}`;
}

/**
 * One `latest` hash value; throws a counted ContractError when it is not JSON, `ts` is not a
 * millisecond timestamp, `v` is neither a finite number nor null, or `t` neither a string nor null.
 * Absent `v`/`t` read as null; other properties are ignored.
 */
export function parseLatestValue(raw: string): LatestValue {
  let j: unknown;
  try {
    j = JSON.parse(raw);
  } catch {
    return reject(LATEST, 'not JSON');
  }
  if (!isRecord(j)) return reject(LATEST, 'not an object');
  if (!isEpochMs(j.ts)) return reject(LATEST, 'ts must be a millisecond timestamp');
  const v = j.v ?? null;
  const t = j.t ?? null;
  if (v !== null && !(typeof v === 'number' && Number.isFinite(v))) return reject(LATEST, 'v must be a finite number or null');
  if (t !== null && typeof t !== 'string') return reject(LATEST, 't must be a string or null');
  return { ts: j.ts, value: v, text: t };
}

/** A whole `latest` hash: its readings sorted by metric, corrupt fields skipped and counted. */
export function parseLatestHash(hash: Record<string, string>): { readings: LatestReading[]; invalid: number } {
  const readings: LatestReading[] = [];
  let invalid = 0;
  for (const [metric, raw] of Object.entries(hash)) {
    try {
      readings.push({ metric, ...parseLatestValue(raw) });
    } catch {
      invalid++;
    }
  }
  readings.sort((a, b) => (a.metric < b.metric ? -1 : a.metric > b.metric ? 1 : 0));
  return { readings, invalid };
}

/**
 * One field of a `latest` hash (`HGET`) as a number: null when the field is absent, corrupt
 * (counted) or not numeric (a string reading).
 */
export function numericLatest(raw: string | null | undefined): { ts: number; value: number } | null {
  if (raw === null || raw === undefined) return null;
  try {
    const r = parseLatestValue(raw);
    return r.value === null ? null : { ts: r.ts, value: r.value };
  } catch {
    return null;
  }
}

/** A `status` hash read. A device never heard from has an empty hash: offline, never seen. */
export interface DeviceStatus {
  online: boolean;
  /** newest reading or status message, ms */
  lastSeen: number | null;
  /** when `online` last changed, ms */
  since: number | null;
  /** the device's last reported state */
  state: Record<string, unknown> | null;
}

const epochText = (s: string | undefined): number | null | undefined => {
  if (s === undefined) return null;
  return /^\d{1,16}$/.test(s) ? Number(s) : undefined;
};

/** A whole `status` hash; corrupt fields read as absent (offline, null) and are counted in `invalid`. */
export function parseStatusHash(hash: Record<string, string>): { status: DeviceStatus; invalid: number } {
  let invalid = 0;
  const online = hash.online;
  if (online !== undefined && online !== '1' && online !== '0') invalid++;
  const lastSeen = epochText(hash.lastSeen);
  const since = epochText(hash.since);
  if (lastSeen === undefined) invalid++;
  if (since === undefined) invalid++;
  let state: Record<string, unknown> | null = null;
  if (hash.state !== undefined) {
    try {
      const j: unknown = JSON.parse(hash.state);
      if (isRecord(j)) state = j;
      else invalid++;
    } catch {
      invalid++;
    }
  }
  countRejected(STATUS, invalid);
  return { status: { online: online === '1', lastSeen: lastSeen ?? null, since: since ?? null, state }, invalid };
}
