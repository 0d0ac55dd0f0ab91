import type { Redis } from '../redis.js';
import { ContractError, decodeJson, isRecord, isUuid, reject } from './contract.js';

/**
 * The device-change notice: the devices subgraph publishes one on {@link deviceChangesChannel}
 * after committing a change that alters what other roles cached about devices (ingest's device
 * directory: organization, site, profile and its metric definitions, decommissioning). Pub/sub, so
 * a notice reaches the replicas listening at that moment; a cache still expires on its TTL, which
 * bounds what a missed notice costs.
 *
 * Payload, JSON: `{"orgId", "kind", "deviceIds": [...]}` for changes of devices, or
 * `{"orgId", "kind": "profile-updated", "profileId"}` when a profile changed (every device of it).
 */

const CONTRACT = 'device-changes';

export const deviceChangesChannel = (prefix: string) => `${prefix}devices:changed`;

export const DEVICE_CHANGE_KINDS = ['created', 'updated', 'moved', 'decommissioned', 'credentials-rotated'] as const;
export type DeviceChangeKind = (typeof DEVICE_CHANGE_KINDS)[number];

/**
 * Most device ids one notice carries.
 * @default 1000
 */
export const MAX_NOTICE_DEVICES = 1000;

export type DeviceChange =
  | { orgId: string; kind: DeviceChangeKind; deviceIds: string[] }
  | { orgId: string; kind: 'profile-updated'; profileId: string };

const KINDS = new Set<string>(DEVICE_CHANGE_KINDS);

export const encodeDeviceChange = (c: DeviceChange): string => JSON.stringify(c);

/**
 * A notice; throws a counted ContractError when it is not JSON, `orgId` is not a uuid, `kind` is
 * unknown, `deviceIds` is not a list of 1 to {@link MAX_NOTICE_DEVICES} uuids, or `profileId` is
 * not a uuid. Other properties are ignored.
 */
export function parseDeviceChange(raw: string | Buffer): DeviceChange {
  const doc = decodeJson(CONTRACT, raw);
  if (!isRecord(doc)) return reject(CONTRACT, 'not an object');
  const { orgId, kind } = doc;
  if (!isUuid(orgId)) return reject(CONTRACT, 'orgId must be a uuid');
  if (kind === 'profile-updated') {
    if (!isUuid(doc.profileId)) return reject(CONTRACT, 'profileId must be a uuid');
    return { orgId, kind, profileId: doc.profileId };
  }
  if (typeof kind !== 'string' || !KINDS.has(kind)) return reject(CONTRACT, 'unknown kind');
  const ids = doc.deviceIds;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_NOTICE_DEVICES || !ids.every(isUuid)) {
    return reject(CONTRACT, `deviceIds must be 1 to ${MAX_NOTICE_DEVICES} uuids`);
  }
  return { orgId, kind: kind as DeviceChangeKind, deviceIds: ids };
}

/** Publishes a notice (after the change committed: a listener reads the database at once). */
export async function publishDeviceChange(
  redis: { publish(channel: string, message: string): Promise<unknown> },
  prefix: string,
  c: DeviceChange,
) {
  await redis.publish(deviceChangesChannel(prefix), encodeDeviceChange(c));
}

/** What a listener of the notices does with them (`subscribeDeviceChanges`). */
export interface DeviceChangeListener {
  /** a valid notice */
  onChange(change: DeviceChange): void;
  /** notices may have been missed (the subscription reconnected): drop everything cached */
  onGap(): void;
  /** a notice that broke the contract (already counted), with the parser's reason */
  onInvalid?(reason: string): void;
}

/**
 * Subscribes to the notices on a connection of its own (a duplicate of `redis`); resolves once
 * subscribed. Every reconnection after the first is a gap. Returns how to stop.
 */
export async function subscribeDeviceChanges(redis: Redis, prefix: string, l: DeviceChangeListener): Promise<() => Promise<void>> {
  const sub = redis.duplicate();
  sub.on('error', () => undefined);
  let ready = false;
  sub.on('ready', () => {
    // ioredis resubscribes after a reconnect; notices published meanwhile are lost
    if (ready) l.onGap();
    ready = true;
  });
  sub.on('message', (_ch, msg: string) => {
    let change: DeviceChange;
    try {
      change = parseDeviceChange(msg);
    } catch (e) {
      if (!(e instanceof ContractError)) throw e;
      l.onInvalid?.(e.reason);
      return;
    }
    l.onChange(change);
  });
  await sub.subscribe(deviceChangesChannel(prefix));
  return async () => {
    await sub.quit().catch(() => sub.disconnect());
  };
}
