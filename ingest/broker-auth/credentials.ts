import { LRUCache } from 'lru-cache';
import type { DeviceChange } from '../../lib/contracts/device-changes.js';
import type { HashScheme } from '../../lib/device-credentials.js';

/** A valid (not revoked) credential and what the broker needs to know about its device. */
export interface CredentialInfo {
  id: string;
  username: string;
  deviceId: string;
  orgId: string;
  profileId: string | null;
  kind: 'secret' | 'certificate';
  scheme: HashScheme | null;
  hash: string | null;
  fingerprint: string | null;
  /** ms; checked at each use, since a cached entry outlives the moment it passes */
  expiresAt: number | null;
  isGateway: boolean;
  decommissioned: boolean;
}

interface Row {
  id: string;
  username: string;
  device_id: string;
  org_id: string;
  profile_id: string | null;
  kind: 'secret' | 'certificate';
  hash_scheme: HashScheme | null;
  secret_hash: string | null;
  fingerprint: string | null;
  expires_at: Date | null;
  is_gateway: boolean | null;
  decommissioned_at: Date | null;
}

const SELECT = `select c.id, c.username, c.device_id, c.org_id, d.profile_id, c.kind, c.hash_scheme, c.secret_hash, c.fingerprint,
    c.expires_at, p.is_gateway, d.decommissioned_at
  from device_credentials c join devices d on d.id = c.device_id left join device_profiles p on p.id = d.profile_id`;

const toInfo = (r: Row): CredentialInfo => ({
  id: r.id,
  username: r.username,
  deviceId: r.device_id,
  orgId: r.org_id,
  profileId: r.profile_id,
  kind: r.kind,
  scheme: r.hash_scheme,
  hash: r.secret_hash,
  fingerprint: r.fingerprint,
  expiresAt: r.expires_at ? r.expires_at.getTime() : null,
  isGateway: r.is_gateway === true,
  decommissioned: r.decommissioned_at !== null,
});

/** Whether a credential lets its device connect at `now` (ms). */
export const isCredentialValid = (c: CredentialInfo, now = Date.now()) => !c.decommissioned && (c.expiresAt === null || c.expiresAt > now);

type Query = (text: string, values: unknown[]) => Promise<{ rows: unknown[] }>;

/**
 * Credential lookups for broker authentication, by username or certificate fingerprint: an LRU
 * with a short TTL in front of PostgreSQL, the lookups of one event-loop turn batched into one query.
 * Device-change notices drop the entries of the devices they name (a profile's notice, those of
 * its devices); a lookup that raced a notice is not cached, and a gap in the notices drops all.
 * Unknown names are remembered briefly, so a flood of made-up usernames does not reach the database.
 */
export class CredentialDirectory {
  private readonly cache: LRUCache<string, CredentialInfo | false>;
  /** device id → cache keys about it (its credentials, and usernames starting with its id that were not found) */
  private readonly byDevice = new Map<string, Set<string>>();
  /** fingerprints looked up and not found */
  private readonly missingFingerprints = new Set<string>();
  private epoch = 0;
  private pending = new Map<string, ((v: CredentialInfo | undefined) => void)[]>();
  private scheduled = false;

  constructor(
    private readonly query: Query,
    ttlMs: number,
    max = 200_000,
  ) {
    this.cache = new LRUCache({ max, ttl: ttlMs, dispose: (v, k) => this.unindex(k, v) });
  }

  /** The valid credential with this username, if any. */
  byUsername(username: string): Promise<CredentialInfo | undefined> {
    return this.get(username);
  }

  /** The valid certificate credential with this fingerprint, if any. */
  byFingerprint(fingerprint: string): Promise<CredentialInfo | undefined> {
    return this.get(`fp:${fingerprint}`);
  }

  private get(key: string): Promise<CredentialInfo | undefined> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return Promise.resolve(hit || undefined);
    return new Promise((resolve) => {
      const waiting = this.pending.get(key);
      if (waiting) waiting.push(resolve);
      else this.pending.set(key, [resolve]);
      if (!this.scheduled) {
        this.scheduled = true;
        // after this I/O phase: the requests that arrived together are looked up together
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    const epoch = this.epoch;
    const keys = [...batch.keys()];
    const usernames = keys.filter((k) => !k.startsWith('fp:'));
    const fingerprints = keys.filter((k) => k.startsWith('fp:')).map((k) => k.slice(3));
    const found = new Map<string, CredentialInfo>();
    try {
      // two statements, each on its index (an OR of the two would scan the table)
      const [byName, byPrint] = await Promise.all([
        usernames.length ? this.query(`${SELECT} where c.username = any($1::text[]) and c.revoked_at is null`, [usernames]) : { rows: [] },
        fingerprints.length
          ? this.query(`${SELECT} where c.fingerprint = any($1::text[]) and c.kind = 'certificate' and c.revoked_at is null`, [
              fingerprints,
            ])
          : { rows: [] },
      ]);
      for (const r of [...byName.rows, ...byPrint.rows] as Row[]) {
        const info = toInfo(r);
        if (usernames.includes(info.username)) found.set(info.username, info);
        if (info.kind === 'certificate' && fingerprints.includes(info.fingerprint as string)) found.set(`fp:${info.fingerprint}`, info);
      }
    } catch {
      // the database did not answer: nobody is found (fail closed), nothing is cached
      for (const waiting of batch.values()) for (const w of waiting) w(undefined);
      return;
    }
    const cache = epoch === this.epoch;
    for (const [key, waiting] of batch) {
      const info = found.get(key);
      if (cache) this.remember(key, info);
      for (const w of waiting) w(info);
    }
  }

  private remember(key: string, info: CredentialInfo | undefined): void {
    this.cache.set(key, info ?? false, info ? {} : { ttl: Math.min(10_000, this.cache.ttl) });
    const device = info?.deviceId ?? (key.startsWith('fp:') ? undefined : key.slice(0, 36));
    if (device) {
      const keys = this.byDevice.get(device) ?? new Set<string>();
      this.byDevice.set(device, keys.add(key));
    } else this.missingFingerprints.add(key);
  }

  private unindex(key: string, v: CredentialInfo | false): void {
    const device = v ? v.deviceId : key.startsWith('fp:') ? undefined : key.slice(0, 36);
    if (!device) {
      this.missingFingerprints.delete(key);
      return;
    }
    const keys = this.byDevice.get(device);
    keys?.delete(key);
    if (keys?.size === 0) this.byDevice.delete(device);
  }

  /** Drops what a device-change notice makes stale (a new certificate may answer a fingerprint not found before). */
  apply(change: DeviceChange): void {
    this.epoch++;
    if (change.kind === 'profile-updated') {
      for (const [k, v] of [...this.cache.entries()]) if (v && v.profileId === change.profileId) this.cache.delete(k);
      return;
    }
    for (const id of change.deviceIds) for (const k of [...(this.byDevice.get(id) ?? [])]) this.cache.delete(k);
    if (change.kind === 'credentials-rotated') for (const k of [...this.missingFingerprints]) this.cache.delete(k);
  }

  invalidateAll(): void {
    this.epoch++;
    this.cache.clear();
  }
}
