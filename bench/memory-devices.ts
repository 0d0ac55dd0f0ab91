/**
 * bench:gateway's in-memory devices subgraph: the real devices subgraph (same SDL, resolvers,
 * DataLoaders, identity check and HTTP handler) over a repository that answers the bench's reads
 * from a snapshot held in memory instead of PostgreSQL. The reference figures for a stock
 * @apollo/gateway were measured in front of an in-memory subgraph: this target isolates what the
 * gateways themselves cost, which the PostgreSQL-backed subgraph hides behind its own cost.
 *
 * The snapshot is loaded through the real repository, so rows have exactly the shapes and values
 * PostgreSQL returns, and bench:gateway checks that both subgraphs give identical answers.
 */
import type { Db } from '../lib/db.js';
import {
  type DevicePage,
  DeviceRepository,
  type DeviceRow,
  type DevicesRepositories,
  type ListDevicesOptions,
  ProfileRepository,
  type ProfileRow,
  SiteRepository,
  type SiteRow,
} from '../subgraphs/devices/repositories/index.js';

interface Tenant {
  devices: DeviceRow[];
  byId: Map<string, DeviceRow>;
  sites: Map<string, SiteRow>;
  profiles: Map<string, ProfileRow>;
}

/** Every device, site and profile of some organizations, as PostgreSQL returned them. */
class Snapshot {
  private readonly tenants = new Map<string, Tenant>();

  /** Loads every device, site and profile of `orgIds` through the PostgreSQL repositories. */
  static async load(db: Db, orgIds: string[]): Promise<Snapshot> {
    const snap = new Snapshot();
    const devices = new DeviceRepository(db);
    const sites = new SiteRepository(db);
    const profiles = new ProfileRepository(db);
    for (const orgId of orgIds) {
      const { rows } = await devices.listDevices(orgId, { limit: 1_000_000, filter: { includeDecommissioned: true } });
      snap.tenants.set(orgId, {
        devices: rows, // already in serial order
        byId: new Map(rows.map((r) => [r.id, r])),
        sites: new Map((await sites.listSites(orgId)).map((s) => [s.id, s])),
        profiles: new Map((await profiles.listProfiles(orgId)).map((p) => [p.id, p])),
      });
    }
    return snap;
  }

  tenant(orgId: string): Tenant {
    return this.tenants.get(orgId) ?? { devices: [], byId: new Map(), sites: new Map(), profiles: new Map() };
  }
}

class MemoryDeviceRepository extends DeviceRepository {
  constructor(
    db: Db,
    private readonly snap: Snapshot,
  ) {
    super(db);
  }

  override async devicesByIds(orgId: string, ids: readonly string[]) {
    const t = this.snap.tenant(orgId);
    const rows = ids.flatMap((id) => t.byId.get(id) ?? []);
    const sites = [...new Set(rows.flatMap((r) => (r.site_id ? [r.site_id] : [])))].flatMap((id) => t.sites.get(id) ?? []);
    const profiles = [...new Set(rows.flatMap((r) => (r.profile_id ? [r.profile_id] : [])))].flatMap((id) => t.profiles.get(id) ?? []);
    return { rows, sites, profiles };
  }

  override async listDevices(orgId: string, o: ListDevicesOptions): Promise<DevicePage> {
    const f = o.filter;
    if (f.siteId || f.profileId || f.parentId || f.search || f.bbox || f.near) {
      throw new Error('the in-memory bench repository serves unfiltered pages only');
    }
    const t = this.snap.tenant(orgId);
    const all = f.includeDecommissioned ? t.devices : t.devices.filter((d) => d.decommissioned_at === null);
    // serial order is PostgreSQL's collation order here: the snapshot came sorted from it
    let start = 0;
    if (o.afterSerial !== undefined) {
      const i = all.findIndex((d) => d.serial === o.afterSerial);
      start = i >= 0 ? i + 1 : all.length;
    }
    const rows = all.slice(start, start + o.limit);
    const { sites, profiles } = await this.devicesByIds(
      orgId,
      rows.map((r) => r.id),
    );
    return {
      rows,
      sites: o.withSites ? sites : [],
      profiles: o.withProfiles ? profiles : [],
      ...(o.withCount ? { total: all.length } : {}),
    };
  }
}

class MemorySiteRepository extends SiteRepository {
  constructor(
    db: Db,
    private readonly snap: Snapshot,
  ) {
    super(db);
  }

  override async sitesByIds(orgId: string, ids: readonly string[]) {
    const t = this.snap.tenant(orgId);
    return ids.flatMap((id) => t.sites.get(id) ?? []);
  }
}

class MemoryProfileRepository extends ProfileRepository {
  constructor(
    db: Db,
    private readonly snap: Snapshot,
  ) {
    super(db);
  }

  override async profilesByIds(orgId: string, ids: readonly string[]) {
    const t = this.snap.tenant(orgId);
    return ids.flatMap((id) => t.profiles.get(id) ?? []);
  }
}

/** The repositories whose reads the bench's queries make, answered from a snapshot of `orgIds`. */
export async function memoryRepositories(db: Db, orgIds: string[]): Promise<Partial<DevicesRepositories>> {
  const snap = await Snapshot.load(db, orgIds);
  return {
    devices: new MemoryDeviceRepository(db, snap),
    sites: new MemorySiteRepository(db, snap),
    profiles: new MemoryProfileRepository(db, snap),
  };
}
