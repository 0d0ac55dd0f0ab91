import { randomUUID } from 'node:crypto';
import { type Compilable, type Expression, type SelectQueryBuilder, type SqlBool, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { revokeCredentials } from '../../../lib/credential-store.js';
import { type DB, type Db, isUniqueViolation, type Tx, withTenant } from '../../../lib/db.js';
import { ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import { QueryTemplates } from '../query-templates.js';
import { type DeviceRow, type ProfileRow, point, profilesOf, readAll, type SiteRow, sitesOf } from './shared.js';

/** Validated filter of `Query.devices` (ids already checked to be uuids). */
export interface DeviceExtent {
  minLat: number;
  minLng: number;
  maxLat: number;
  maxLng: number;
  devices: number;
}

export interface DeviceListFilter {
  siteId?: string | undefined;
  profileId?: string | undefined;
  parentId?: string | undefined;
  search?: string | undefined;
  bbox?: { minLat: number; minLng: number; maxLat: number; maxLng: number } | undefined;
  near?: { lat: number; lng: number; radiusMeters: number } | undefined;
  includeDecommissioned?: boolean | undefined;
}

/** A column of {@link DeviceRow} that a page can do without (`location` stands for `lat` and `lng`). */
export type DeviceColumn =
  | 'org_id'
  | 'name'
  | 'site_id'
  | 'profile_id'
  | 'parent_id'
  | 'attributes'
  | 'created_at'
  | 'updated_at'
  | 'decommissioned_at'
  | 'location';

/** One page of devices in serial order, and what the request selects besides (`listDevices`). */
export interface ListDevicesOptions {
  limit: number;
  afterSerial?: string | undefined;
  filter: DeviceListFilter;
  /**
   * Only these columns besides `id` and `serial` (the rest of the rows' properties are absent):
   * reading and decoding fewer columns is most of what a page costs. @default all of them
   */
  columns?: readonly DeviceColumn[] | undefined;
  withSites?: boolean;
  withProfiles?: boolean;
  withCount?: boolean;
}

export interface DevicePage {
  rows: DeviceRow[];
  sites: SiteRow[];
  profiles: ProfileRow[];
  total?: number;
}

export interface NewDevice {
  serial: string;
  name: string;
  siteId?: string | null | undefined;
  profileId?: string | null | undefined;
  parentId?: string | null | undefined;
  location?: { lat: number; lng: number } | null | undefined;
  attributes?: Record<string, unknown> | undefined;
}

export interface DevicePatch {
  name?: string | undefined;
  siteId?: string | null | undefined;
  profileId?: string | null | undefined;
  location?: { lat: number; lng: number } | null | undefined;
  attributes?: Record<string, unknown> | undefined;
}

const deviceColumns = [
  'd.id',
  'd.org_id',
  'd.serial',
  'd.name',
  'd.site_id',
  'd.profile_id',
  'd.parent_id',
  'd.attributes',
  'd.created_at',
  'd.updated_at',
  'd.decommissioned_at',
] as const;
const lat = sql<number | null>`st_y(d.location::geometry)`.as('lat');
const lng = sql<number | null>`st_x(d.location::geometry)`.as('lng');

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);
/** The ILIKE pattern of a `search` filter: the text anywhere in serial or name. */
const searchPattern = (s: string) => `%${escapeLike(s)}%`;

type DeviceQuery = SelectQueryBuilder<DB & { d: DB['devices'] }, 'd', object>;

/** The device columns of a page or batch (all of them, or `id`, `serial` and `columns`). */
function selectDevices(tx: Db | Tx, columns?: readonly DeviceColumn[]) {
  const q = tx.selectFrom('devices as d');
  if (!columns) return q.select([...deviceColumns, lat, lng]) as unknown as SelectQueryBuilder<DB & { d: DB['devices'] }, 'd', DeviceRow>;
  const some = q.select(['d.id', 'd.serial', ...columns.filter((c) => c !== 'location').map((c) => `d.${c}` as const)]);
  const selected = columns.includes('location') ? some.select([lat, lng]) : some;
  return selected as unknown as SelectQueryBuilder<DB & { d: DB['devices'] }, 'd', DeviceRow>;
}

/** One device of the tenant inside a transaction (locked with `forUpdate`); NOT_FOUND when it is not theirs. */
export async function deviceIn(tx: Tx, orgId: string, id: string, forUpdate = false): Promise<DeviceRow> {
  let q = selectDevices(tx).where('d.org_id', '=', orgId).where('d.id', '=', id);
  if (forUpdate) q = q.forUpdate();
  const row = await q.executeTakeFirst();
  if (!row) throw new NotFoundError(`device ${id}`);
  return row;
}

/**
 * Devices: batched reads (with their sites and profiles in the same round trip), pages, and writes.
 * Every tenant read and write runs inside `withTenant` or `tenantRead` (so row-level security
 * applies) and also filters on `org_id` itself; one method = one transaction.
 */
export class DeviceRepository {
  /** The hot reads' queries, compiled once per shape. */
  private readonly templates = new QueryTemplates();

  constructor(readonly db: Db) {}

  /**
   * Devices by id with, in the same round trip, their sites and profiles (nearly every device
   * selection asks for one of them; the loaders are primed with them).
   */
  async devicesByIds(orgId: string, ids: readonly string[]): Promise<{ rows: DeviceRow[]; sites: SiteRow[]; profiles: ProfileRow[] }> {
    const statements = this.templates.statements(
      `devicesByIds:${ids.length}`,
      (bind) => ({ orgId: bind(orgId), ids: ids.map(bind) }),
      (a) => {
        const devices = selectDevices(this.db).where('d.org_id', '=', a.orgId).where('d.id', 'in', a.ids);
        const refs = (col: 'd.site_id' | 'd.profile_id') =>
          this.db.selectFrom('devices as d').select(col).where('d.org_id', '=', a.orgId).where('d.id', 'in', a.ids);
        return [
          devices,
          sitesOf(this.db, a.orgId).where('id', 'in', refs('d.site_id')),
          profilesOf(this.db, a.orgId).where('id', 'in', refs('d.profile_id')),
        ];
      },
    );
    const [rows, sites, profiles] = await readAll(this.db, orgId, ...statements);
    return { rows: rows as unknown as DeviceRow[], sites: sites as unknown as SiteRow[], profiles: profiles as unknown as ProfileRow[] };
  }

  /** Children of concentrators (in service only), ordered by serial. */
  async childrenOf(orgId: string, parentIds: readonly string[]): Promise<DeviceRow[]> {
    const [rows] = await readAll(
      this.db,
      orgId,
      selectDevices(this.db)
        .where('d.org_id', '=', orgId)
        .where('d.parent_id', 'in', [...parentIds])
        .where('d.decommissioned_at', 'is', null)
        .orderBy('d.serial'),
    );
    return rows as unknown as DeviceRow[];
  }

  /**
   * One page in serial order after `afterSerial` (up to `limit` rows: ask one more to learn
   * hasNextPage), and in the same round trip what the request will need next: the page's sites
   * and profiles (selected through the page query itself) and the total, each only when asked for.
   */
  async listDevices(orgId: string, o: ListDevicesOptions): Promise<DevicePage> {
    const f = o.filter;
    // The sites and profiles are selected through the page's own site_id and profile_id.
    const columns = o.columns && [
      ...o.columns,
      ...(o.withSites && !o.columns.includes('site_id') ? (['site_id'] as const) : []),
      ...(o.withProfiles && !o.columns.includes('profile_id') ? (['profile_id'] as const) : []),
    ];
    // Everything the SQL text depends on; the values themselves are bound below.
    const shape = [
      f.siteId ? 's' : '',
      f.profileId ? 'p' : '',
      f.parentId ? 'c' : '',
      f.search ? 'q' : '',
      f.bbox ? (f.bbox.minLng <= f.bbox.maxLng ? 'b' : 'w') : '',
      f.near ? 'n' : '',
      f.includeDecommissioned ? 'D' : '',
      o.afterSerial !== undefined ? 'a' : '',
      o.withSites ? 'S' : '',
      o.withProfiles ? 'P' : '',
      o.withCount ? 'C' : '',
      columns ? `(${columns.join(',')})` : '',
    ].join('');
    const statements = this.templates.statements(
      `listDevices:${shape}`,
      (bind) => ({
        orgId: bind(orgId),
        filter: {
          siteId: f.siteId ? bind(f.siteId) : undefined,
          profileId: f.profileId ? bind(f.profileId) : undefined,
          parentId: f.parentId ? bind(f.parentId) : undefined,
          search: f.search ? bind(searchPattern(f.search)) : undefined,
          bbox: f.bbox
            ? { minLat: bind(f.bbox.minLat), maxLat: bind(f.bbox.maxLat), minLng: bind(f.bbox.minLng), maxLng: bind(f.bbox.maxLng) }
            : undefined,
          near: f.near ? { lng: bind(f.near.lng), lat: bind(f.near.lat), radiusMeters: bind(f.near.radiusMeters) } : undefined,
          includeDecommissioned: f.includeDecommissioned,
        } satisfies DeviceListFilter,
        afterSerial: o.afterSerial !== undefined ? bind(o.afterSerial) : undefined,
        limit: bind(o.limit),
      }),
      (a) => {
        const wraps = f.bbox !== undefined && f.bbox.minLng > f.bbox.maxLng;
        let page = this.filtered(selectDevices(this.db, columns), a.orgId, a.filter, wraps);
        if (a.afterSerial !== undefined) page = page.where('d.serial', '>', a.afterSerial);
        page = page.orderBy('d.serial').limit(a.limit);
        const ofPage = (col: 'site_id' | 'profile_id') => this.db.selectFrom(page.as('p')).select(`p.${col}`);
        const queries: Compilable[] = [page];
        if (o.withSites) queries.push(sitesOf(this.db, a.orgId).where('id', 'in', ofPage('site_id')));
        if (o.withProfiles) queries.push(profilesOf(this.db, a.orgId).where('id', 'in', ofPage('profile_id')));
        if (o.withCount)
          queries.push(
            this.filtered(this.db.selectFrom('devices as d'), a.orgId, a.filter, wraps).select(sql<number>`count(*)::int`.as('n')),
          );
        return queries;
      },
    );
    const results = await readAll(this.db, orgId, ...statements);
    const take = <T>(on: boolean | undefined): T[] => (on ? (results.splice(0, 1)[0] as unknown as T[]) : []);
    const rows = take<DeviceRow>(true);
    const sites = take<SiteRow>(o.withSites);
    const profiles = take<ProfileRow>(o.withProfiles);
    if (!o.withCount) return { rows, sites, profiles };
    return { rows, sites, profiles, total: Number((results[0]?.[0] as { n: number } | undefined)?.n ?? 0) };
  }

  /** The box around the located devices in service (under `siteId`: its subtree); null when there are none. */
  async deviceExtent(orgId: string, siteId?: string): Promise<DeviceExtent | null> {
    const q = this.filtered(this.db.selectFrom('devices as d'), orgId, { siteId })
      .where('d.location', 'is not', null)
      .select([
        sql<number>`min(st_y(d.location::geometry))`.as('minLat'),
        sql<number>`min(st_x(d.location::geometry))`.as('minLng'),
        sql<number>`max(st_y(d.location::geometry))`.as('maxLat'),
        sql<number>`max(st_x(d.location::geometry))`.as('maxLng'),
        sql<number>`count(*)::int`.as('devices'),
      ]);
    const [rows] = await readAll(this.db, orgId, q);
    const r = rows?.[0] as DeviceExtent | undefined;
    return r && r.devices > 0 ? r : null;
  }

  countDevices(orgId: string, filter: DeviceListFilter): Promise<number> {
    return withTenant(this.db, orgId, (tx) => this.count(tx, orgId, filter));
  }

  createDevice(identity: Identity, d: NewDevice): Promise<DeviceRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      await assertRefs(tx, orgId, d);
      const id = randomUUID();
      try {
        await tx
          .insertInto('devices')
          .values({
            id,
            org_id: orgId,
            serial: d.serial,
            name: d.name,
            site_id: d.siteId ?? null,
            profile_id: d.profileId ?? null,
            parent_id: d.parentId ?? null,
            location: d.location ? point(d.location) : null,
            attributes: JSON.stringify(d.attributes ?? {}),
          })
          .execute();
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError(`a device with serial "${d.serial}" already exists`);
        throw e;
      }
      const row = await deviceIn(tx, orgId, id);
      await audit(tx, orgId, actorOf(identity), 'device.create', 'device', id, null, row);
      return row;
    });
  }

  /** Applies the fields present in `patch`; NOT_FOUND when the device is not this tenant's. */
  updateDevice(identity: Identity, id: string, patch: DevicePatch, action = 'device.update'): Promise<DeviceRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await deviceIn(tx, orgId, id, true);
      await assertRefs(tx, orgId, patch);
      const set: Record<string, unknown> = { updated_at: sql`now()` };
      if (patch.name !== undefined) set.name = patch.name;
      if (patch.siteId !== undefined) set.site_id = patch.siteId;
      if (patch.profileId !== undefined) set.profile_id = patch.profileId;
      if (patch.location !== undefined) set.location = patch.location ? point(patch.location) : null;
      if (patch.attributes !== undefined) set.attributes = JSON.stringify(patch.attributes);
      await tx.updateTable('devices').set(set).where('org_id', '=', orgId).where('id', '=', id).execute();
      const after = await deviceIn(tx, orgId, id);
      await audit(tx, orgId, actorOf(identity), action, 'device', id, before, after);
      return after;
    });
  }

  /** Takes a device out of service and revokes its MQTT credentials; repeating it changes nothing. */
  decommissionDevice(identity: Identity, id: string): Promise<DeviceRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await deviceIn(tx, orgId, id, true);
      if (before.decommissioned_at) return before;
      await tx
        .updateTable('devices')
        .set({ decommissioned_at: sql`now()`, updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .execute();
      await revokeCredentials(tx, orgId, id);
      const after = await deviceIn(tx, orgId, id);
      await audit(tx, orgId, actorOf(identity), 'device.decommission', 'device', id, before, after);
      return after;
    });
  }

  private async count(tx: Tx, orgId: string, filter: DeviceListFilter): Promise<number> {
    const q = this.filtered(tx.selectFrom('devices as d') as unknown as DeviceQuery, orgId, {
      ...filter,
      search: filter.search ? searchPattern(filter.search) : undefined,
    });
    const r = await q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  /**
   * The filter's conditions; `f.search` is already an ILIKE pattern (`searchPattern`) and `wraps`
   * (the bbox crosses the antimeridian) is given apart, as `f` may hold placeholders (`QueryTemplates`).
   */
  private filtered<Q extends DeviceQuery>(
    q: Q,
    orgId: string,
    f: DeviceListFilter,
    wraps = f.bbox !== undefined && f.bbox.minLng > f.bbox.maxLng,
  ): Q {
    const conds: Expression<SqlBool>[] = [sql<SqlBool>`d.org_id = ${orgId}`];
    if (!f.includeDecommissioned) conds.push(sql<SqlBool>`d.decommissioned_at is null`);
    if (f.siteId) {
      conds.push(sql<SqlBool>`d.site_id in (
        select s.id from sites s join sites root on root.id = ${f.siteId} and root.org_id = ${orgId}
        where s.org_id = ${orgId} and s.path <@ root.path)`);
    }
    if (f.profileId) conds.push(sql<SqlBool>`d.profile_id = ${f.profileId}`);
    if (f.parentId) conds.push(sql<SqlBool>`d.parent_id = ${f.parentId}`);
    if (f.search) conds.push(sql<SqlBool>`(d.serial || ' ' || d.name) ilike ${f.search}`);
    if (f.bbox) {
      const b = f.bbox;
      conds.push(sql<SqlBool>`st_y(d.location::geometry) between ${b.minLat} and ${b.maxLat}`);
      conds.push(
        !wraps
          ? sql<SqlBool>`st_x(d.location::geometry) between ${b.minLng} and ${b.maxLng}`
          : sql<SqlBool>`(st_x(d.location::geometry) >= ${b.minLng} or st_x(d.location::geometry) <= ${b.maxLng})`,
      );
    }
    if (f.near) conds.push(sql<SqlBool>`st_dwithin(d.location, ${point(f.near)}, ${f.near.radiusMeters})`);
    let out = q;
    for (const c of conds) out = out.where(c) as Q;
    return out;
  }
}

/** Site, profile and parent named by a write must belong to the tenant (foreign keys ignore RLS). */
async function assertRefs(
  tx: Tx,
  orgId: string,
  r: { siteId?: string | null | undefined; profileId?: string | null | undefined; parentId?: string | null | undefined },
): Promise<void> {
  if (!r.siteId && !r.profileId && !r.parentId) return;
  const found = await sql<{ site: boolean; profile: boolean; parent: boolean }>`
    select
      (${r.siteId ?? null}::uuid is null or exists (select 1 from sites where org_id = ${orgId} and id = ${r.siteId ?? null}::uuid)) as site,
      (${r.profileId ?? null}::uuid is null or exists (select 1 from device_profiles where org_id = ${orgId} and id = ${r.profileId ?? null}::uuid)) as profile,
      (${r.parentId ?? null}::uuid is null or exists (select 1 from devices where org_id = ${orgId} and id = ${r.parentId ?? null}::uuid)) as parent
  `.execute(tx);
  const f = found.rows[0];
  if (!f?.site) throw new NotFoundError(`site ${r.siteId}`);
  if (!f.profile) throw new NotFoundError(`device profile ${r.profileId}`);
  if (!f.parent) throw new NotFoundError(`parent device ${r.parentId}`);
}
