import { LRUCache } from 'lru-cache';
import type pg from 'pg';
import { type DeviceChange, subscribeDeviceChanges } from '../lib/contracts/device-changes.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { sitePathIds } from '../lib/sites.js';
import { type MetricDefinition, parseProfileMetrics } from './parse.js';

/** What ingest needs to know about a device to store its telemetry. */
export interface DeviceInfo {
  id: string;
  orgId: string;
  serial: string;
  siteId: string | null;
  /** site ids from the root down to the device's site (real-time filters match a site's subtree) */
  sitePath: string[];
  profileId: string | null;
  metrics: Map<string, MetricDefinition>;
  silenceTimeoutS: number;
  isGateway: boolean;
  autoCreateChildren: boolean;
  decommissioned: boolean;
}

interface Row {
  id: string;
  org_id: string;
  serial: string;
  site_id: string | null;
  site_path: string | null;
  profile_id: string | null;
  metrics: unknown;
  silence_timeout_s: number | null;
  is_gateway: boolean | null;
  auto_create_children: boolean | null;
  decommissioned_at: Date | null;
}

const SELECT = `select d.id, d.org_id, d.serial, d.site_id, s.path::text as site_path, d.profile_id, d.decommissioned_at, p.metrics, p.silence_timeout_s, p.is_gateway, p.auto_create_children
  from devices d left join device_profiles p on p.id = d.profile_id left join sites s on s.id = d.site_id`;

const toInfo = (r: Row): DeviceInfo => ({
  id: r.id,
  orgId: r.org_id,
  serial: r.serial,
  siteId: r.site_id,
  sitePath: sitePathIds(r.site_path),
  profileId: r.profile_id,
  metrics: parseProfileMetrics(r.metrics),
  silenceTimeoutS: r.silence_timeout_s ?? 900,
  isGateway: r.is_gateway === true,
  autoCreateChildren: r.auto_create_children === true,
  decommissioned: r.decommissioned_at !== null,
});

/** A cache that follows the device-change notices with the directory. */
export interface NoticeFollower {
  apply(change: DeviceChange): void;
  invalidateAll(): void;
}

/** Unknown ids are remembered briefly so a flood from an unregistered device does not hit the database. */
const NEGATIVE_TTL_MS = 30_000;

const noticesTotal = counter('rulr_ingest_device_changes_total', 'Device-change notices applied to the device cache, by kind', ['kind']);
const noticesInvalid = counter('rulr_ingest_device_changes_invalid_total', 'Device-change notices ignored because they break the contract');

/**
 * Cached device lookups (LRU with TTL). Invalidation: the devices subgraph publishes a notice
 * (lib/contracts/device-changes.ts) after each committed change: a device's entry drops with its
 * children's, a profile's drops every device of it. A lookup that was running when a notice
 * arrived is not cached (it may have read the old row), and after a lost Redis connection, when
 * notices may have been missed, everything drops. Lookups are batched: one query per batch of misses.
 */
export class DeviceDirectory {
  private readonly byId: LRUCache<string, DeviceInfo | false>;
  /** `<gatewayId>/<serial>` → child device id */
  private readonly children: LRUCache<string, string | false>;
  private unsubscribe?: () => Promise<void>;
  /** bumped by every invalidation: a lookup started under an older epoch is not cached */
  private epoch = 0;

  constructor(
    private readonly query: (text: string, values: unknown[]) => Promise<{ rows: unknown[] }>,
    ttlMs: number,
    max = 200_000,
  ) {
    this.byId = new LRUCache({ max, ttl: ttlMs });
    this.children = new LRUCache({ max, ttl: ttlMs });
  }

  static fromPool(pool: pg.Pool, ttlMs: number): DeviceDirectory {
    return new DeviceDirectory((t, v) => pool.query(t, v), ttlMs);
  }

  /**
   * Subscribes to the device-change notices on a dedicated connection; `followers` (other caches of
   * this process, such as the broker authentication's credentials) get each notice too, parsed once.
   */
  async listen(redis: Redis, prefix: string, logger?: Logger, followers: NoticeFollower[] = []): Promise<void> {
    this.unsubscribe = await subscribeDeviceChanges(redis, prefix, {
      onChange: (c) => {
        this.apply(c);
        for (const f of followers) f.apply(c);
      },
      onGap: () => {
        this.invalidateAll();
        for (const f of followers) f.invalidateAll();
      },
      onInvalid: (reason) => {
        noticesInvalid.inc();
        logger?.warn({ reason }, 'device-change notice ignored');
      },
    });
  }

  /** Drops what a notice makes stale. */
  apply(change: DeviceChange): void {
    noticesTotal.inc({ kind: change.kind });
    if (change.kind === 'profile-updated') this.invalidateProfile(change.profileId);
    else this.invalidate(change.deviceIds);
  }

  /** Drops devices and what is cached about their children (a concentrator's by serial, or as a child). */
  invalidate(ids: Iterable<string>): void {
    this.epoch++;
    const drop = new Set(ids);
    for (const id of drop) this.byId.delete(id);
    for (const [k, child] of [...this.children.entries()]) {
      if (drop.has(k.slice(0, k.indexOf('/'))) || (child && drop.has(child))) this.children.delete(k);
    }
  }

  /** Drops every device of a profile. */
  invalidateProfile(profileId: string): void {
    const ids: string[] = [];
    for (const [id, info] of this.byId.entries()) if (info && info.profileId === profileId) ids.push(id);
    this.invalidate(ids);
  }

  invalidateAll(): void {
    this.epoch++;
    this.byId.clear();
    this.children.clear();
  }

  /** Resolves many ids at once; unknown ids map to `undefined`. */
  async resolve(ids: Iterable<string>): Promise<Map<string, DeviceInfo | undefined>> {
    const out = new Map<string, DeviceInfo | undefined>();
    const missing: string[] = [];
    for (const id of ids) {
      if (out.has(id)) continue;
      const hit = this.byId.get(id);
      if (hit === undefined) missing.push(id);
      out.set(id, hit || undefined);
    }
    if (missing.length) {
      const epoch = this.epoch;
      const { rows } = await this.query(`${SELECT} where d.id = any($1::uuid[])`, [missing]);
      const cache = epoch === this.epoch;
      const found = new Set<string>();
      for (const r of rows as Row[]) {
        const info = toInfo(r);
        if (cache) this.byId.set(info.id, info);
        out.set(info.id, info);
        found.add(info.id);
      }
      if (cache) for (const id of missing) if (!found.has(id)) this.byId.set(id, false, { ttl: NEGATIVE_TTL_MS });
    }
    return out;
  }

  /**
   * Child devices of a concentrator by serial. Unknown children are created (parent = gateway, same
   * organization and site, no profile) when the concentrator's profile has `auto_create_children`.
   */
  async resolveChildren(gateway: DeviceInfo, serials: string[]): Promise<Map<string, DeviceInfo | undefined>> {
    const out = new Map<string, DeviceInfo | undefined>();
    const missing: string[] = [];
    const ids: string[] = [];
    for (const s of new Set(serials)) {
      const id = this.children.get(`${gateway.id}/${s}`);
      if (id === undefined) missing.push(s);
      else if (id) ids.push(id);
      else out.set(s, undefined);
    }
    if (missing.length) {
      const epoch = this.epoch;
      const { rows } = await this.query(`${SELECT} where d.org_id = $1 and d.serial = any($2::text[])`, [gateway.orgId, missing]);
      const found = new Map((rows as Row[]).map((r) => [r.serial, toInfo(r)]));
      const create = missing.filter((s) => !found.has(s) && s.length <= 128);
      if (create.length && gateway.autoCreateChildren) {
        await this.query(
          `insert into devices (org_id, serial, name, site_id, parent_id)
           select $1, s, s, $2, $3 from unnest($4::text[]) s
           on conflict (org_id, serial) do nothing returning id`,
          [gateway.orgId, gateway.siteId, gateway.id, create],
        );
        // Re-read: a concurrent replica may have created some of them first.
        const again = await this.query(`${SELECT} where d.org_id = $1 and d.serial = any($2::text[])`, [gateway.orgId, create]);
        for (const r of again.rows as Row[]) found.set(r.serial, toInfo(r));
      }
      const cache = epoch === this.epoch;
      for (const s of missing) {
        const info = found.get(s);
        if (cache) {
          this.children.set(`${gateway.id}/${s}`, info ? info.id : false, info ? {} : { ttl: NEGATIVE_TTL_MS });
          if (info) this.byId.set(info.id, info);
        }
        out.set(s, info);
      }
    }
    if (ids.length) {
      const infos = await this.resolve(ids);
      for (const info of infos.values()) if (info) out.set(info.serial, info);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.unsubscribe?.();
  }
}
