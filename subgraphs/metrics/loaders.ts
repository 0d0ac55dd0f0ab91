import DataLoader from 'dataloader';
import { parseLatestHash, parseStatusHash } from '../../lib/contracts/device-state.js';
import type { MetricsRepository, SiteRow } from './repository.js';

/** One reading of the status cache (`latest:<deviceId>`, lib/contracts/device-state.ts). */
export interface CachedReading {
  metric: string;
  ts: Date;
  value: number | null;
  text: string | null;
}

export interface CachedStatus {
  online: boolean;
  lastSeen: Date | null;
}

/** One `latest` hash as readings sorted by metric (corrupt entries skipped and counted: lib/contracts/device-state.ts). */
export function parseLatest(hash: Record<string, string>): CachedReading[] {
  return parseLatestHash(hash).readings.map((r) => ({ metric: r.metric, ts: new Date(r.ts), value: r.value, text: r.text }));
}

/** One `status` hash; a device never heard from is offline with no lastSeen. */
export function parseStatus(hash: Record<string, string>): CachedStatus {
  const { status } = parseStatusHash(hash);
  return { online: status.online, lastSeen: status.lastSeen === null ? null : new Date(status.lastSeen) };
}

export interface MetricsLoaders {
  /** device id → true when it belongs to the caller's organization */
  device: DataLoader<string, boolean>;
  /** site id → the site (with its ltree path) when it belongs to the caller's organization */
  site: DataLoader<string, SiteRow | null>;
  latest: DataLoader<string, CachedReading[]>;
  status: DataLoader<string, CachedStatus>;
}

/** Per-request loaders: one SQL query or one Redis pipeline per batch of entities. */
export function createLoaders(repo: MetricsRepository, orgId: string): MetricsLoaders {
  return {
    device: new DataLoader(async (ids) => {
      const owned = await repo.ownedDevices(orgId, ids);
      return ids.map((id) => owned.has(id));
    }),
    site: new DataLoader(async (ids) => {
      const owned = await repo.ownedSites(orgId, ids);
      return ids.map((id) => owned.get(id) ?? null);
    }),
    latest: new DataLoader(async (ids) => (await repo.latestHashes(ids)).map(parseLatest)),
    status: new DataLoader(async (ids) => (await repo.statusHashes(ids)).map(parseStatus)),
  };
}
