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

/**
 * The background refresh sends the database what it holds (username and {@link version}) and gets
 * back only the usernames that are gone (revoked, deleted) or whose version differs, so re-reading
 * 100,000 credentials costs the process almost nothing. The same version, computed in SQL:
 */
const STALE = `select h.username from unnest($1::text[], $2::text[]) as h(username, v)
  left join device_credentials c on c.username = h.username and c.revoked_at is null
  left join devices d on d.id = c.device_id left join device_profiles p on p.id = d.profile_id
  where c.id is null or h.v is distinct from concat_ws('|',
    coalesce(floor(extract(epoch from c.expires_at) * 1000)::bigint::text, ''), coalesce(d.profile_id::text, ''),
    coalesce(p.is_gateway, false)::text, (d.decommissioned_at is not null)::text)`;

/** What of a credential can change while it is valid (its end, its device's profile, gateway-ness, decommissioning). */
const version = (c: CredentialInfo) => `${c.expiresAt ?? ''}|${c.profileId ?? ''}|${c.isGateway}|${c.decommissioned}`;

/**
 * One copy of the values many credentials share (organization, profile, kind, scheme): the driver
 * gives each row fresh strings, and 100,000 held credentials would keep 100,000 copies of each for
 * the collector to trace. Bounded: past the cap a value is kept as it came.
 */
const shared = new Map<string, string>();
function intern<T extends string | null>(v: T): T {
  if (v === null) return v;
  const had = shared.get(v);
  if (had !== undefined) return had as T;
  if (shared.size < 10_000) shared.set(v, v);
  return v;
}

const toInfo = (r: Row): CredentialInfo => ({
  id: r.id,
  username: r.username,
  deviceId: r.device_id,
  orgId: intern(r.org_id),
  profileId: intern(r.profile_id),
  kind: intern(r.kind),
  scheme: intern(r.hash_scheme),
  hash: r.secret_hash,
  fingerprint: r.fingerprint,
  expiresAt: r.expires_at ? r.expires_at.getTime() : null,
  isGateway: r.is_gateway === true,
  decommissioned: r.decommissioned_at !== null,
});

/** Whether a credential lets its device connect at `now` (ms). */
export const isCredentialValid = (c: CredentialInfo, now = Date.now()) => !c.decommissioned && (c.expiresAt === null || c.expiresAt > now);

type Query = (text: string, values: unknown[]) => Promise<{ rows: unknown[] }>;

/** Most keys one lookup, page of the load or page of the refresh asks the database for. */
const PAGE = 5000;

/** Keys per query of the background refresh, and the least pause between its queries (ms). */
const REFRESH_PAGE = 1000;
const REFRESH_PAUSE_MS = 10;

const FP = 'fp:';

/**
 * Credential lookups for broker authentication, by username or certificate fingerprint: an
 * in-process replica of the valid credentials (an LRU of up to `max`) in front of PostgreSQL, so
 * that a reconnecting fleet is answered from memory.
 *
 * - {@link load} fills it at start (ingest's /readyz waits for it), {@link startRefresh} re-validates
 *   every entry every `ttl / 3`, spread over `ttl / 4`, in the background, so no request waits for the database for a
 *   credential it holds; the TTL stays the hard bound of a stale entry (a refresh that fails lets
 *   entries expire: unknown credentials are denied, fail closed).
 * - Device-change notices drop the entries of the devices they name (a profile's notice, those of
 *   its devices) at once; a lookup or refresh page that raced a notice is not cached, and a gap in
 *   the notices drops all.
 * - Misses of one event-loop turn are batched into one query. Unknown names are remembered
 *   briefly, so a flood of made-up usernames does not reach the database.
 */
export class CredentialDirectory {
  private readonly cache: LRUCache<string, CredentialInfo | false>;
  /**
   * device id → cache keys about it (its credentials, and usernames starting with its id that were
   * not found): the one key itself when there is one (nearly every device: no Set per device for the
   * collector to trace), a Set when there are more
   */
  private readonly byDevice = new Map<string, string | Set<string>>();
  /** fingerprints looked up and not found */
  private readonly missingFingerprints = new Set<string>();
  private epoch = 0;
  private pending = new Map<string, ((v: CredentialInfo | undefined) => void)[]>();
  private scheduled = false;
  private refreshTimer?: NodeJS.Timeout;
  private closed = false;
  /** whether {@link load} finished or gave up (ingest's readiness check) */
  loaded = false;

  /**
   * @param query the database, for lookups that requests wait for
   * @param background the database for the load and the refresh: a connection of their own, so a
   *   request's lookup never queues behind them @default query
   */
  constructor(
    private readonly query: Query,
    private readonly ttlMs: number,
    private readonly max = 200_000,
    private readonly background: Query = query,
  ) {
    this.cache = new LRUCache({ max, ttl: ttlMs, dispose: (v, k) => this.unindex(k, v) });
  }

  /** The valid credential with this username, if any. */
  byUsername(username: string): Promise<CredentialInfo | undefined> {
    return this.get(username);
  }

  /** The valid certificate credential with this fingerprint, if any. */
  byFingerprint(fingerprint: string): Promise<CredentialInfo | undefined> {
    return this.get(`${FP}${fingerprint}`);
  }

  /**
   * What the directory holds for this username, without a promise: the credential, null when it is
   * known not to exist (or not to be valid), undefined when it holds nothing (then {@link byUsername}
   * asks the database).
   */
  heldUsername(username: string): CredentialInfo | null | undefined {
    const hit = this.cache.get(username);
    return hit === undefined ? undefined : hit || null;
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

  /** The valid credentials among `keys` (usernames, or `fp:` fingerprints), by key. */
  private async lookup(keys: string[]): Promise<Map<string, CredentialInfo>> {
    const usernames = keys.filter((k) => !k.startsWith(FP));
    const fingerprints = keys.filter((k) => k.startsWith(FP)).map((k) => k.slice(FP.length));
    // two statements, each on its index (an OR of the two would scan the table)
    const [byName, byPrint] = await Promise.all([
      usernames.length ? this.query(`${SELECT} where c.username = any($1::text[]) and c.revoked_at is null`, [usernames]) : { rows: [] },
      fingerprints.length
        ? this.query(`${SELECT} where c.fingerprint = any($1::text[]) and c.kind = 'certificate' and c.revoked_at is null`, [fingerprints])
        : { rows: [] },
    ]);
    const names = new Set(usernames);
    const prints = new Set(fingerprints);
    const found = new Map<string, CredentialInfo>();
    for (const r of [...byName.rows, ...byPrint.rows] as Row[]) {
      const info = toInfo(r);
      if (names.has(info.username)) found.set(info.username, info);
      if (info.kind === 'certificate' && prints.has(info.fingerprint as string)) found.set(`${FP}${info.fingerprint}`, info);
    }
    return found;
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    const epoch = this.epoch;
    const keys = [...batch.keys()];
    const found = new Map<string, CredentialInfo>();
    try {
      const parts = [];
      for (let i = 0; i < keys.length; i += PAGE) parts.push(this.lookup(keys.slice(i, i + PAGE)));
      for (const part of await Promise.all(parts)) for (const [k, v] of part) found.set(k, v);
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
    this.cache.set(key, info ?? false, info ? {} : { ttl: Math.min(10_000, this.ttlMs) });
    const device = info?.deviceId ?? (key.startsWith(FP) ? undefined : key.slice(0, 36));
    if (device) {
      const keys = this.byDevice.get(device);
      if (keys === undefined || keys === key) this.byDevice.set(device, key);
      else if (typeof keys === 'string') this.byDevice.set(device, new Set([keys, key]));
      else keys.add(key);
    } else this.missingFingerprints.add(key);
  }

  private unindex(key: string, v: CredentialInfo | false): void {
    const device = v ? v.deviceId : key.startsWith(FP) ? undefined : key.slice(0, 36);
    if (!device) {
      this.missingFingerprints.delete(key);
      return;
    }
    const keys = this.byDevice.get(device);
    if (keys === key) this.byDevice.delete(device);
    else if (typeof keys === 'object') {
      keys.delete(key);
      if (keys.size === 0) this.byDevice.delete(device);
    }
  }

  /** The cache keys about a device (see {@link byDevice}). */
  private keysOf(device: string): string[] {
    const keys = this.byDevice.get(device);
    return keys === undefined ? [] : typeof keys === 'string' ? [keys] : [...keys];
  }

  /**
   * Fills the directory with the valid credentials of devices in service (up to `max`), a page at
   * a time; returns how many it holds. A page that raced a notice is not kept (lookups fetch those).
   */
  async load(): Promise<number> {
    try {
      return await this.loadPages();
    } finally {
      // loaded or given up: either way lookups work (a miss asks the database)
      this.loaded = true;
    }
  }

  private async loadPages(): Promise<number> {
    let after = '';
    let held = 0;
    while (held < this.max && !this.closed) {
      const epoch = this.epoch;
      const { rows } = await this.background(
        `${SELECT} where c.username > $1 and c.revoked_at is null and (c.expires_at is null or c.expires_at > now())
           and d.decommissioned_at is null order by c.username limit $2`,
        [after, Math.min(PAGE, this.max - held)],
      );
      const page = rows as Row[];
      if (epoch === this.epoch) {
        for (const r of page) {
          const info = toInfo(r);
          this.remember(info.username, info);
          if (info.kind === 'certificate' && info.fingerprint) this.remember(`${FP}${info.fingerprint}`, info);
        }
      }
      held += page.length;
      if (page.length === 0 || page.length < PAGE) break;
      after = (page.at(-1) as Row).username;
    }
    return this.cache.size;
  }

  /**
   * Re-validates every credential it holds, a cycle starting every `ttl / 3` (or when the last one
   * ended, if later) and spread over about `ttl / 4` (until {@link close}).
   */
  startRefresh(onError?: (e: Error) => void): void {
    const cycle = async () => {
      if (this.closed) return;
      const started = performance.now();
      await this.refresh().catch((e) => onError?.(e as Error));
      this.refreshTimer = setTimeout(() => void cycle(), Math.max(0, this.ttlMs / 3 - (performance.now() - started)));
      this.refreshTimer.unref();
    };
    this.refreshTimer = setTimeout(() => void cycle(), this.ttlMs / 3);
    this.refreshTimer.unref();
  }

  /**
   * Re-validates the credentials it holds (by username), a page at a time on its own connection
   * with a short pause between pages: the database compares each with what is held and names those
   * gone or changed, which are dropped (the next request reads them afresh); the others get a new
   * TTL. Fingerprint entries and unknown names are left to their TTL.
   *
   * The pages are taken from the device index as they go (a Map iterator stays valid while entries
   * come and go), not from a snapshot of the whole directory: copying 100,000 entries at once held
   * the event loop for 40–100 ms every cycle, and the copy, alive for the whole cycle, ended in the
   * old generation as garbage for the next full collection.
   */
  async refresh(): Promise<void> {
    // spread over about a quarter of the TTL: a burst of queries competes with the answers for the cores
    const pages = Math.ceil(this.byDevice.size / REFRESH_PAGE);
    const pause = Math.min(1000, Math.max(REFRESH_PAUSE_MS, this.ttlMs / 4 / Math.max(1, pages)));
    const devices = this.byDevice.values();
    let done = false;
    for (let first = true; !done && !this.closed; first = false) {
      if (!first) await new Promise((r) => setTimeout(r, pause));
      const page: [string, CredentialInfo][] = [];
      while (page.length < REFRESH_PAGE) {
        const next = devices.next();
        if (next.done) {
          done = true;
          break;
        }
        for (const k of typeof next.value === 'string' ? [next.value] : next.value) {
          const v = this.cache.peek(k);
          if (v && !k.startsWith(FP)) page.push([k, v]);
        }
      }
      if (page.length === 0) continue;
      const epoch = this.epoch;
      const { rows } = await this.background(STALE, [page.map(([k]) => k), page.map(([, v]) => version(v))]);
      if (epoch !== this.epoch) continue;
      const stale = new Set((rows as { username: string }[]).map((r) => r.username));
      for (const [k, v] of page) {
        if (stale.has(k)) this.cache.delete(k);
        // still the same object (not dropped or replaced meanwhile): a new TTL
        else if (this.cache.peek(k) === v) this.cache.set(k, v);
      }
    }
  }

  /** Drops what a device-change notice makes stale (a new certificate may answer a fingerprint not found before). */
  apply(change: DeviceChange): void {
    this.epoch++;
    if (change.kind === 'profile-updated') {
      for (const [k, v] of [...this.cache.entries()]) if (v && v.profileId === change.profileId) this.cache.delete(k);
      return;
    }
    for (const id of change.deviceIds) for (const k of this.keysOf(id)) this.cache.delete(k);
    if (change.kind === 'credentials-rotated') for (const k of [...this.missingFingerprints]) this.cache.delete(k);
  }

  invalidateAll(): void {
    this.epoch++;
    this.cache.clear();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.refreshTimer);
  }
}
