import { z } from 'zod';

/**
 * Pure parsing and validation of MQTT traffic (no I/O), so every payload rule is unit-tested here.
 * Policies (see ingest/README.md):
 * - a metric the profile does not define is STORED (firmware often ships metrics before profiles are
 *   updated; dropping data is worse) and counted as `unknown_metric`;
 * - a value outside the profile's `min`/`max` is STORED and counted as `out_of_range`;
 * - a value of the wrong type is NOT stored: the message's other readings are, and the message gets
 *   one dead letter (`wrong_type`) naming the offending metrics.
 */

/** One metric definition in `device_profiles.metrics` (a JSON array of these). */
export const metricDefinitionSchema = z.object({
  name: z.string().min(1),
  type: z.enum(['number', 'boolean', 'string']).default('number'),
  unit: z.string().optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  /** A cumulative counter (e.g. `energy` in kWh): its readings are also written to `energy_readings`. */
  counter: z.boolean().optional(),
});
export type MetricDefinition = z.output<typeof metricDefinitionSchema>;

/** Parses a profile's `metrics` column; malformed entries are skipped rather than failing ingest. */
export function parseProfileMetrics(raw: unknown): Map<string, MetricDefinition> {
  const out = new Map<string, MetricDefinition>();
  if (!Array.isArray(raw)) return out;
  for (const m of raw) {
    const r = metricDefinitionSchema.safeParse(m);
    if (r.success) out.set(r.data.name, r.data);
  }
  return out;
}

export type DeadLetterReason =
  | 'not_json'
  | 'too_large'
  | 'bad_shape'
  | 'bad_timestamp'
  | 'wrong_type'
  | 'unknown_device'
  | 'bad_topic'
  | 'unknown_child'
  /** a command reply that breaks the contract (lib/contracts/commands.ts) */
  | 'bad_reply';

export class PayloadError extends Error {
  constructor(
    readonly reason: DeadLetterReason,
    detail: string,
  ) {
    super(detail);
    this.name = 'PayloadError';
  }
}

/** One timestamped group of raw values, before validation against a profile. */
export interface Entry {
  ts: number;
  values: Record<string, unknown>;
}

/** Earliest accepted timestamp (2000-01-01); later than `now + MAX_FUTURE_MS` is refused too. */
export const MIN_TS = 946_684_800_000;
export const MAX_FUTURE_MS = 24 * 3600_000;

export function parseTs(raw: unknown, now: number): number {
  let ts: number;
  if (typeof raw === 'number') ts = raw;
  else if (typeof raw === 'string' && raw.trim() !== '') ts = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  else throw new PayloadError('bad_timestamp', `ts must be epoch milliseconds or an ISO 8601 string, got ${JSON.stringify(raw)}`);
  if (!Number.isFinite(ts)) throw new PayloadError('bad_timestamp', `unparseable ts ${JSON.stringify(raw)}`);
  ts = Math.trunc(ts);
  if (ts < MIN_TS || ts > now + MAX_FUTURE_MS) throw new PayloadError('bad_timestamp', `ts ${ts} outside the accepted window`);
  return ts;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Decodes JSON within the size limit. */
export function decodeJson(payload: Buffer | string, maxBytes: number): unknown {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (size > maxBytes) throw new PayloadError('too_large', `payload of ${size} bytes exceeds ${maxBytes}`);
  try {
    return JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch (e) {
    throw new PayloadError('not_json', (e as Error).message);
  }
}

function toEntry(obj: Record<string, unknown>, now: number): Entry {
  if ('values' in obj) {
    if (!isPlainObject(obj.values)) throw new PayloadError('bad_shape', '"values" must be an object');
    return { ts: obj.ts === undefined ? now : parseTs(obj.ts, now), values: obj.values };
  }
  // Flat object of values, stamped on arrival (a "ts" key, if present, is the timestamp).
  const { ts, ...values } = obj;
  return { ts: ts === undefined ? now : parseTs(ts, now), values };
}

/** The three telemetry forms: `{ts, values}`, an array of them, or a flat object of values. */
export function telemetryEntries(doc: unknown, now: number): Entry[] {
  if (Array.isArray(doc)) {
    if (doc.length === 0) throw new PayloadError('bad_shape', 'empty array');
    return doc.map((e) => {
      if (!isPlainObject(e)) throw new PayloadError('bad_shape', 'array items must be objects');
      return toEntry(e, now);
    });
  }
  if (isPlainObject(doc)) return [toEntry(doc, now)];
  throw new PayloadError('bad_shape', 'telemetry must be an object or an array of objects');
}

/** A validated reading, in the storage representation of the contract. */
export interface Reading {
  metric: string;
  ts: number;
  /** numbers; booleans as 1/0; null for strings */
  value: number | null;
  /** strings; booleans as 'true'/'false'; null for numbers */
  text: string | null;
  counter: boolean;
}

/** Makes the stored form of one reading (the pipeline builds its database rows directly). */
export type ReadingBuilder<T> = (metric: string, ts: number, value: number | null, text: string | null, counter: boolean) => T;

const toReading: ReadingBuilder<Reading> = (metric, ts, value, text, counter) => ({ metric, ts, value, text, counter });

export interface Validated<T = Reading> {
  readings: T[];
  /** metric names whose value had the wrong type (not stored) */
  wrongType: string[];
  unknownMetrics: number;
  outOfRange: number;
}

/** Longest stored string value; longer strings (and strings holding NUL, which PostgreSQL text cannot store) are a wrong type. */
export const MAX_TEXT = 1024;
const METRIC_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Validates entries against the profile's metric definitions (empty map: types inferred). */
export function validateEntries<T = Reading>(
  entries: Entry[],
  defs: Map<string, MetricDefinition>,
  build: ReadingBuilder<T> = toReading as unknown as ReadingBuilder<T>,
): Validated<T> {
  const out: Validated<T> = { readings: [], wrongType: [], unknownMetrics: 0, outOfRange: 0 };
  for (const e of entries) {
    const values = e.values;
    // for…in rather than Object.entries: no pair array per value (JSON objects have no inherited keys).
    for (const metric in values) {
      const v = values[metric];
      const def = defs.get(metric);
      if (!METRIC_NAME.test(metric)) {
        out.wrongType.push(metric.slice(0, 64));
        continue;
      }
      if (!def && defs.size > 0) out.unknownMetrics++;
      const type = def?.type ?? (typeof v === 'number' ? 'number' : typeof v === 'boolean' ? 'boolean' : 'string');
      if (type === 'number' && typeof v === 'number' && Number.isFinite(v)) {
        if ((def?.min !== undefined && v < def.min) || (def?.max !== undefined && v > def.max)) out.outOfRange++;
        out.readings.push(build(metric, e.ts, v, null, def?.counter === true));
      } else if (type === 'boolean' && typeof v === 'boolean') {
        out.readings.push(build(metric, e.ts, v ? 1 : 0, v ? 'true' : 'false', false));
      } else if (type === 'string' && typeof v === 'string' && v.length <= MAX_TEXT && !v.includes('\0')) {
        out.readings.push(build(metric, e.ts, null, v, false));
      } else {
        out.wrongType.push(metric);
      }
    }
  }
  return out;
}

export interface StatusUpdate {
  online: boolean;
  state?: Record<string, unknown>;
}

/** `{"online": bool, "state": {…}}` or the plain strings `online` / `offline` (last will). */
export function parseStatus(payload: Buffer | string, maxBytes: number): StatusUpdate {
  const s = (typeof payload === 'string' ? payload : payload.toString('utf8')).trim();
  if (s === 'online' || s === 'offline') return { online: s === 'online' };
  const doc = decodeJson(payload, maxBytes);
  if (doc === 'online' || doc === 'offline') return { online: doc === 'online' };
  if (!isPlainObject(doc) || typeof doc.online !== 'boolean') throw new PayloadError('bad_shape', 'status needs {"online": true|false}');
  if (doc.state !== undefined && !isPlainObject(doc.state)) throw new PayloadError('bad_shape', '"state" must be an object');
  return doc.state === undefined ? { online: doc.online } : { online: doc.online, state: doc.state };
}

/** Concentrator telemetry: `{"<serial>": [ {ts, values} ] | {ts, values} | {flat values}}`. */
export function gatewayTelemetry(doc: unknown, now: number): Map<string, Entry[]> {
  if (!isPlainObject(doc)) throw new PayloadError('bad_shape', 'gateway telemetry must be an object keyed by child serial');
  const out = new Map<string, Entry[]>();
  for (const [serial, body] of Object.entries(doc)) out.set(serial, telemetryEntries(body, now));
  return out;
}

/** Concentrator status: `{"<serial>": {"online": bool, "state"?}}` or `{"<serial>": "online"|"offline"}`. */
export function gatewayStatus(doc: unknown): Map<string, StatusUpdate> {
  if (!isPlainObject(doc)) throw new PayloadError('bad_shape', 'gateway status must be an object keyed by child serial');
  const out = new Map<string, StatusUpdate>();
  for (const [serial, body] of Object.entries(doc)) {
    if (body === 'online' || body === 'offline') out.set(serial, { online: body === 'online' });
    else if (isPlainObject(body) && typeof body.online === 'boolean') {
      out.set(serial, isPlainObject(body.state) ? { online: body.online, state: body.state } : { online: body.online });
    } else throw new PayloadError('bad_shape', `status for ${serial} needs {"online": true|false}`);
  }
  return out;
}

/** Concentrator connect/disconnect: `{"devices": ["<serial>", …]}`. */
export function gatewayDevices(doc: unknown): string[] {
  if (!isPlainObject(doc) || !Array.isArray(doc.devices) || !doc.devices.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new PayloadError('bad_shape', 'connect/disconnect needs {"devices": ["<serial>", …]}');
  }
  return doc.devices as string[];
}
