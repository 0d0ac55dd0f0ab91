import DataLoader from 'dataloader';
import type { CredentialRow, DeviceRow, DevicesRepositories, ProfileRow, SiteRow } from './repositories/index.js';

/**
 * Per-request DataLoaders: every batch is one read-only tenant transaction sent as one round trip
 * (`tenantRead`; a device batch brings its sites and profiles along), so a page of
 * devices with their sites and profiles (or 50 `_entities` representations) costs a constant
 * number of statements.
 */
export interface DevicesLoaders {
  device: PeekLoader<DeviceRow>;
  site: PeekLoader<SiteRow>;
  profile: PeekLoader<ProfileRow>;
  deviceChildren: DataLoader<string, DeviceRow[]>;
  siteChildren: DataLoader<string, SiteRow[]>;
  siteDeviceCount: DataLoader<string, number>;
  /** a site's outline: the convex hull of its subtree's located devices */
  siteOutline: DataLoader<string, { lat: number; lng: number }[]>;
  /** a device's credentials, newest first */
  credentials: DataLoader<string, CredentialRow[]>;
}

/**
 * A DataLoader that can also answer synchronously with what it already holds (primed or loaded).
 * A resolver returning the row itself instead of a promise spares graphql-js a promise per field and
 * per object: a page of 50 devices with their (primed) sites and profiles resolves without any.
 */
export class PeekLoader<V> extends DataLoader<string, V | null> {
  private readonly known = new Map<string, V | null>();

  constructor(batch: (keys: readonly string[]) => Promise<(V | null)[]>, options?: DataLoader.Options<string, V | null>) {
    super(async (keys) => {
      const values = await batch(keys);
      keys.forEach((k, i) => {
        this.known.set(k, values[i] ?? null);
      });
      return values;
    }, options);
  }

  /** The value if held, else a promise of it (what `load` gives). */
  get(key: string): V | null | Promise<V | null> {
    return this.known.has(key) ? (this.known.get(key) as V | null) : this.load(key);
  }

  override prime(key: string, value: V | null | Error): this {
    if (!(value instanceof Error) && !this.known.has(key)) this.known.set(key, value);
    return super.prime(key, value);
  }

  override clear(key: string): this {
    this.known.delete(key);
    return super.clear(key);
  }

  override clearAll(): this {
    this.known.clear();
    return super.clearAll();
  }
}

function byId<T extends { id: string }>(keys: readonly string[], rows: T[]): (T | null)[] {
  const m = new Map(rows.map((r) => [r.id, r]));
  return keys.map((k) => m.get(k) ?? null);
}

function grouped<T>(keys: readonly string[], rows: T[], key: (r: T) => string | null): T[][] {
  const m = new Map<string, T[]>(keys.map((k) => [k, []]));
  for (const r of rows) {
    const k = key(r);
    if (k !== null) m.get(k)?.push(r);
  }
  return keys.map((k) => m.get(k) ?? []);
}

/** Ids that are not uuids cannot match a row; they resolve to null without reaching SQL. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const validKeys = (keys: readonly string[]) => [...new Set(keys.filter((k) => UUID.test(k)))];

export function createLoaders(repos: DevicesRepositories, orgId: string): DevicesLoaders {
  const opts = { maxBatchSize: 1000 };
  const rows = async <T>(keys: readonly string[], fetch: (ids: string[]) => Promise<T[]>): Promise<T[]> => {
    const ids = validKeys(keys);
    return ids.length ? fetch(ids) : [];
  };
  const site = new PeekLoader<SiteRow>(async (keys) => byId(keys, await rows(keys, (ids) => repos.sites.sitesByIds(orgId, ids))), opts);
  const profile = new PeekLoader<ProfileRow>(
    async (keys) => byId(keys, await rows(keys, (ids) => repos.profiles.profilesByIds(orgId, ids))),
    opts,
  );
  // Devices come with their sites and profiles (same round trip): prime those loaders.
  const device = new PeekLoader<DeviceRow>(async (keys) => {
    const ids = validKeys(keys);
    if (!ids.length) return keys.map(() => null);
    const r = await repos.devices.devicesByIds(orgId, ids);
    for (const s of r.sites) site.prime(s.id, s);
    for (const p of r.profiles) profile.prime(p.id, p);
    return byId(keys, r.rows);
  }, opts);
  const deviceChildren = new DataLoader<string, DeviceRow[]>(async (keys) => {
    const children = await rows(keys, (ids) => repos.devices.childrenOf(orgId, ids));
    for (const c of children) device.prime(c.id, c);
    return grouped(keys, children, (r) => r.parent_id);
  }, opts);
  const siteChildren = new DataLoader<string, SiteRow[]>(async (keys) => {
    const children = await rows(keys, (ids) => repos.sites.siteChildren(orgId, ids));
    for (const c of children) site.prime(c.id, c);
    return grouped(keys, children, (r) => r.parent_id);
  }, opts);
  const siteDeviceCount = new DataLoader<string, number>(async (keys) => {
    const counts = new Map((await rows(keys, (ids) => repos.sites.siteDeviceCounts(orgId, ids))).map((r) => [r.id, r.n]));
    return keys.map((k) => counts.get(k) ?? 0);
  }, opts);
  const credentials = new DataLoader<string, CredentialRow[]>(
    async (keys) => grouped(keys, await rows(keys, (ids) => repos.credentials.credentialsOf(orgId, ids)), (r) => r.device_id),
    opts,
  );
  const siteOutline = new DataLoader<string, { lat: number; lng: number }[]>(async (keys) => {
    const outlines = new Map((await rows(keys, (ids) => repos.sites.siteOutlines(orgId, ids))).map((r) => [r.id, r.outline]));
    return keys.map((k) => outlines.get(k) ?? []);
  }, opts);
  return { device, site, profile, deviceChildren, siteChildren, siteDeviceCount, siteOutline, credentials };
}
