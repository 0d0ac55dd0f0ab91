import DataLoader from 'dataloader';
import type { MetricsRepository, SiteRow } from './repository.js';

/** One reading as the status cache stores it (`P latest:<deviceId>` hash value). */
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

/** Parses one `latest` hash into readings sorted by metric; malformed entries are skipped. */
export function parseLatest(hash: Record<string, string>): CachedReading[] {
  const out: CachedReading[] = [];
  for (const [metric, raw] of Object.entries(hash)) {
    try {
      const j = JSON.parse(raw) as { ts?: unknown; v?: unknown; t?: unknown };
      if (typeof j.ts !== 'number') continue;
      out.push({
        metric,
        ts: new Date(j.ts),
        value: typeof j.v === 'number' ? j.v : null,
        text: typeof j.t === 'string' ? j.t : null,
      });
    } catch {
      /* a corrupt cache entry is not worth failing the request */
    }
  }
  return out.sort((a, b) => (a.metric < b.metric ? -1 : a.metric > b.metric ? 1 : 0));
}

/** Parses one `status` hash; a device never heard from is offline with no lastSeen. */
export function parseStatus(hash: Record<string, string>): CachedStatus {
  const lastSeen = Number(hash.lastSeen);
  return { online: hash.online === '1', lastSeen: hash.lastSeen && Number.isFinite(lastSeen) ? new Date(lastSeen) : null };
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
