import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { type Compilable, type Expression, type SelectQueryBuilder, type SqlBool, sql } from 'kysely';
import { actorOf, audit } from '../../lib/audit.js';
import { generateApiKey } from '../../lib/auth.js';
import { type DB, type Db, isUniqueViolation, isUuid, type Tx, tenantRead, withTenant } from '../../lib/db.js';
import { ConflictError, NotFoundError } from '../../lib/errors.js';
import type { Identity } from '../../lib/identity.js';
import { siteLabel } from '../../lib/sites.js';
import { QueryTemplates, type Statement } from './query-templates.js';

/** A device row as the resolvers see it (location split into lat/lng). */
export interface DeviceRow {
  id: string;
  org_id: string;
  serial: string;
  name: string;
  site_id: string | null;
  profile_id: string | null;
  parent_id: string | null;
  lat: number | null;
  lng: number | null;
  attributes: unknown;
  created_at: Date;
  updated_at: Date;
  decommissioned_at: Date | null;
}

export interface SiteRow {
  id: string;
  org_id: string;
  parent_id: string | null;
  name: string;
  path: string;
  created_at: Date;
}

export interface MetricDefinitionRow {
  name: string;
  unit?: string | null;
  type: 'number' | 'boolean' | 'string';
  min?: number | null;
  max?: number | null;
  counter?: boolean;
}

export interface ProfileRow {
  id: string;
  org_id: string;
  name: string;
  description: string;
  metrics: MetricDefinitionRow[];
  silence_timeout_s: number;
  is_gateway: boolean;
  auto_create_children: boolean;
  created_at: Date;
}

export interface ApiKeyRow {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  created_at: Date;
  last_used_at: Date | null;
  expires_at: Date | null;
  revoked_at: Date | null;
}

export interface OrganizationRow {
  id: string;
  slug: string;
  name: string;
}

/** Validated filter of `Query.devices` (ids already checked to be uuids). */
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

export interface NewProfile {
  name: string;
  description: string;
  metrics: MetricDefinitionRow[];
  silenceTimeoutSeconds: number;
  isGateway: boolean;
  autoCreateChildren: boolean;
}

/** ltree labels allow only [A-Za-z0-9_]: a site's label is its uuid with `_` for `-`. */

/** Device MQTT secrets are random 192-bit strings, so a fast hash is enough (as for API keys). */
export const hashDeviceSecret = (secret: string) => createHash('sha256').update(secret).digest('hex');

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
const point = (p: { lat: number; lng: number }) => sql<string>`st_setsrid(st_makepoint(${p.lng}, ${p.lat}), 4326)::geography`;

const siteColumns = ['id', 'org_id', 'parent_id', 'name', 'path', 'created_at'] as const;
const profileColumns = [
  'id',
  'org_id',
  'name',
  'description',
  'metrics',
  'silence_timeout_s',
  'is_gateway',
  'auto_create_children',
  'created_at',
] as const;
const apiKeyColumns = ['id', 'name', 'prefix', 'scopes', 'created_at', 'last_used_at', 'expires_at', 'revoked_at'] as const;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);
/** The ILIKE pattern of a `search` filter: the text anywhere in serial or name. */
const searchPattern = (s: string) => `%${escapeLike(s)}%`;

type DeviceQuery = SelectQueryBuilder<DB & { d: DB['devices'] }, 'd', object>;

/**
 * All SQL of the devices subgraph. Every tenant read and write runs inside `withTenant` (so
 * row-level security applies) and also filters on `org_id` itself; one method = one transaction.
 */
export class DevicesRepository {
  /** The hot reads' queries, compiled once per shape. */
  private readonly templates = new QueryTemplates();

  constructor(readonly db: Db) {}

  // ---- batched reads: one round trip per DataLoader batch (see `tenantRead`) ----

  /** Rows of read-only statements run in one tenant transaction, in one round trip. */
  private read(orgId: string, ...queries: (Compilable | Statement)[]): Promise<Record<string, unknown>[][]> {
    return tenantRead(
      this.db,
      orgId,
      queries.map((q) => ('compile' in q ? q.compile() : q)),
    );
  }

  private sitesQuery(orgId: string) {
    return this.db.selectFrom('sites').select(siteColumns).where('org_id', '=', orgId);
  }

  private profilesQuery(orgId: string) {
    return this.db.selectFrom('device_profiles').select(profileColumns).where('org_id', '=', orgId);
  }

  /**
   * Devices by id with, in the same round trip, their sites and profiles (nearly every device
   * selection asks for one of them; the loaders are primed with them).
   */
  async devicesByIds(orgId: string, ids: readonly string[]): Promise<{ rows: DeviceRow[]; sites: SiteRow[]; profiles: ProfileRow[] }> {
    const statements = this.templates.statements(
      `devicesByIds:${ids.length}`,
      (bind) => ({ orgId: bind(orgId), ids: ids.map(bind) }),
      (a) => {
        const devices = this.selectDevices(this.db).where('d.org_id', '=', a.orgId).where('d.id', 'in', a.ids);
        const refs = (col: 'd.site_id' | 'd.profile_id') =>
          this.db.selectFrom('devices as d').select(col).where('d.org_id', '=', a.orgId).where('d.id', 'in', a.ids);
        return [
          devices,
          this.sitesQuery(a.orgId).where('id', 'in', refs('d.site_id')),
          this.profilesQuery(a.orgId).where('id', 'in', refs('d.profile_id')),
        ];
      },
    );
    const [rows, sites, profiles] = await this.read(orgId, ...statements);
    return { rows: rows as unknown as DeviceRow[], sites: sites as unknown as SiteRow[], profiles: profiles as unknown as ProfileRow[] };
  }

  /** Children of concentrators (in service only), ordered by serial. */
  async childrenOf(orgId: string, parentIds: readonly string[]): Promise<DeviceRow[]> {
    const [rows] = await this.read(
      orgId,
      this.selectDevices(this.db)
        .where('d.org_id', '=', orgId)
        .where('d.parent_id', 'in', [...parentIds])
        .where('d.decommissioned_at', 'is', null)
        .orderBy('d.serial'),
    );
    return rows as unknown as DeviceRow[];
  }

  async sitesByIds(orgId: string, ids: readonly string[]): Promise<SiteRow[]> {
    const statements = this.templates.statements(
      `sitesByIds:${ids.length}`,
      (bind) => ({ orgId: bind(orgId), ids: ids.map(bind) }),
      (a) => [this.sitesQuery(a.orgId).where('id', 'in', a.ids)],
    );
    const [rows] = await this.read(orgId, ...statements);
    return rows as unknown as SiteRow[];
  }

  async siteChildren(orgId: string, parentIds: readonly string[]): Promise<SiteRow[]> {
    const [rows] = await this.read(
      orgId,
      this.sitesQuery(orgId)
        .where('parent_id', 'in', [...parentIds])
        .orderBy('name'),
    );
    return rows as unknown as SiteRow[];
  }

  /** In-service devices per site, subtree included. */
  async siteDeviceCounts(orgId: string, siteIds: readonly string[]): Promise<{ id: string; n: number }[]> {
    const [rows] = await this.read(
      orgId,
      sql<{ id: string; n: number }>`
        select s.id, count(d.id)::int as n
        from sites s
        join sites sub on sub.org_id = ${orgId} and sub.path <@ s.path
        join devices d on d.org_id = ${orgId} and d.site_id = sub.id and d.decommissioned_at is null
        where s.org_id = ${orgId} and s.id = any(${[...siteIds]}::uuid[])
        group by s.id`.compile(this.db),
    );
    return rows as unknown as { id: string; n: number }[];
  }

  async profilesByIds(orgId: string, ids: readonly string[]): Promise<ProfileRow[]> {
    const statements = this.templates.statements(
      `profilesByIds:${ids.length}`,
      (bind) => ({ orgId: bind(orgId), ids: ids.map(bind) }),
      (a) => [this.profilesQuery(a.orgId).where('id', 'in', a.ids)],
    );
    const [rows] = await this.read(orgId, ...statements);
    return rows as unknown as ProfileRow[];
  }

  // ---- lists ----

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
        let page = this.filtered(this.selectDevices(this.db, columns), a.orgId, a.filter, wraps);
        if (a.afterSerial !== undefined) page = page.where('d.serial', '>', a.afterSerial);
        page = page.orderBy('d.serial').limit(a.limit);
        const ofPage = (col: 'site_id' | 'profile_id') => this.db.selectFrom(page.as('p')).select(`p.${col}`);
        const queries: Compilable[] = [page];
        if (o.withSites) queries.push(this.sitesQuery(a.orgId).where('id', 'in', ofPage('site_id')));
        if (o.withProfiles) queries.push(this.profilesQuery(a.orgId).where('id', 'in', ofPage('profile_id')));
        if (o.withCount)
          queries.push(
            this.filtered(this.db.selectFrom('devices as d'), a.orgId, a.filter, wraps).select(sql<number>`count(*)::int`.as('n')),
          );
        return queries;
      },
    );
    const results = await this.read(orgId, ...statements);
    const take = <T>(on: boolean | undefined): T[] => (on ? (results.splice(0, 1)[0] as unknown as T[]) : []);
    const rows = take<DeviceRow>(true);
    const sites = take<SiteRow>(o.withSites);
    const profiles = take<ProfileRow>(o.withProfiles);
    if (!o.withCount) return { rows, sites, profiles };
    return { rows, sites, profiles, total: Number((results[0]?.[0] as { n: number } | undefined)?.n ?? 0) };
  }

  countDevices(orgId: string, filter: DeviceListFilter): Promise<number> {
    return withTenant(this.db, orgId, (tx) => this.count(tx, orgId, filter));
  }

  listSites(orgId: string): Promise<SiteRow[]> {
    return withTenant(this.db, orgId, (tx) =>
      tx.selectFrom('sites').select(siteColumns).where('org_id', '=', orgId).orderBy(sql`nlevel(path)`).orderBy('name').execute(),
    );
  }

  listProfiles(orgId: string): Promise<ProfileRow[]> {
    return withTenant(
      this.db,
      orgId,
      (tx) =>
        tx.selectFrom('device_profiles').select(profileColumns).where('org_id', '=', orgId).orderBy('name').execute() as unknown as Promise<
          ProfileRow[]
        >,
    );
  }

  listApiKeys(orgId: string): Promise<ApiKeyRow[]> {
    return withTenant(this.db, orgId, (tx) =>
      tx.selectFrom('api_keys').select(apiKeyColumns).where('org_id', '=', orgId).orderBy('created_at', 'desc').execute(),
    );
  }

  /** The organization and, for people, their email, for `Query.me`. */
  whoami(orgId: string, userId: string | null): Promise<{ org: OrganizationRow | undefined; email: string | null }> {
    return withTenant(this.db, orgId, async (tx) => {
      const org = await tx.selectFrom('organizations').select(['id', 'slug', 'name']).where('id', '=', orgId).executeTakeFirst();
      if (!userId || !org) return { org, email: null };
      // users carry no org_id; a membership row (under RLS) proves the user belongs to this tenant.
      const u = await tx
        .selectFrom('users')
        .innerJoin('memberships as m', 'm.user_id', 'users.id')
        .select('users.email')
        .where('users.id', '=', userId)
        .where('m.org_id', '=', orgId)
        .executeTakeFirst();
      return { org, email: u?.email ?? null };
    });
  }

  // ---- login (no tenant yet: runs as the service's own role) ----

  findUserForLogin(email: string) {
    return this.db
      .selectFrom('users')
      .select(['id', 'email', 'password_hash'])
      .where(sql<SqlBool>`lower(email) = lower(${email})`)
      .where('disabled_at', 'is', null)
      .executeTakeFirst();
  }

  memberships(userId: string) {
    return this.db
      .selectFrom('memberships as m')
      .innerJoin('organizations as o', 'o.id', 'm.org_id')
      .select(['m.role', 'o.id', 'o.slug', 'o.name'])
      .where('m.user_id', '=', userId)
      .orderBy('m.created_at')
      .orderBy('o.slug')
      .execute();
  }

  async recordLogin(orgId: string, userId: string): Promise<void> {
    await withTenant(this.db, orgId, (tx) => audit(tx, orgId, `user:${userId}`, 'login', 'user', userId, null, null));
  }

  // ---- writes (each in one tenant transaction with its audit row) ----

  createSite(identity: Identity, input: { name: string; parentId?: string | null | undefined }): Promise<SiteRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const id = randomUUID();
      let path = siteLabel(id);
      if (input.parentId) {
        const parent = await tx
          .selectFrom('sites')
          .select('path')
          .where('org_id', '=', orgId)
          .where('id', '=', input.parentId)
          .executeTakeFirst();
        if (!parent) throw new NotFoundError(`parent site ${input.parentId}`);
        path = `${parent.path}.${path}`;
      }
      const row = await tx
        .insertInto('sites')
        .values({ id, org_id: orgId, parent_id: input.parentId ?? null, name: input.name, path })
        .returning(siteColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'site.create', 'site', id, null, row);
      return row;
    });
  }

  createProfile(identity: Identity, p: NewProfile): Promise<ProfileRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      try {
        const row = (await tx
          .insertInto('device_profiles')
          .values({
            org_id: orgId,
            name: p.name,
            description: p.description,
            metrics: JSON.stringify(p.metrics),
            silence_timeout_s: p.silenceTimeoutSeconds,
            is_gateway: p.isGateway,
            auto_create_children: p.autoCreateChildren,
          })
          .returning(profileColumns)
          .executeTakeFirstOrThrow()) as unknown as ProfileRow;
        await audit(tx, orgId, actorOf(identity), 'device_profile.create', 'device_profile', row.id, null, row);
        return row;
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError(`a device profile named "${p.name}" already exists`);
        throw e;
      }
    });
  }

  /** Applies the fields present in `patch`; NOT_FOUND when the profile is not this tenant's. */
  updateProfile(identity: Identity, id: string, patch: Partial<NewProfile>): Promise<ProfileRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = (await tx
        .selectFrom('device_profiles')
        .select(profileColumns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst()) as unknown as ProfileRow | undefined;
      if (!before) throw new NotFoundError(`device profile ${id}`);
      const set: Record<string, unknown> = {};
      if (patch.name !== undefined) set.name = patch.name;
      if (patch.description !== undefined) set.description = patch.description;
      if (patch.metrics !== undefined) set.metrics = JSON.stringify(patch.metrics);
      if (patch.silenceTimeoutSeconds !== undefined) set.silence_timeout_s = patch.silenceTimeoutSeconds;
      if (patch.isGateway !== undefined) set.is_gateway = patch.isGateway;
      if (patch.autoCreateChildren !== undefined) set.auto_create_children = patch.autoCreateChildren;
      if (!Object.keys(set).length) return before;
      try {
        const after = (await tx
          .updateTable('device_profiles')
          .set(set)
          .where('org_id', '=', orgId)
          .where('id', '=', id)
          .returning(profileColumns)
          .executeTakeFirstOrThrow()) as unknown as ProfileRow;
        await audit(tx, orgId, actorOf(identity), 'device_profile.update', 'device_profile', id, before, after);
        return after;
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError(`a device profile named "${patch.name}" already exists`);
        throw e;
      }
    });
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
      const row = await this.deviceIn(tx, orgId, id);
      await audit(tx, orgId, actorOf(identity), 'device.create', 'device', id, null, row);
      return row;
    });
  }

  /** Applies the fields present in `patch`; NOT_FOUND when the device is not this tenant's. */
  updateDevice(identity: Identity, id: string, patch: DevicePatch, action = 'device.update'): Promise<DeviceRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await this.deviceIn(tx, orgId, id, true);
      await assertRefs(tx, orgId, patch);
      const set: Record<string, unknown> = { updated_at: sql`now()` };
      if (patch.name !== undefined) set.name = patch.name;
      if (patch.siteId !== undefined) set.site_id = patch.siteId;
      if (patch.profileId !== undefined) set.profile_id = patch.profileId;
      if (patch.location !== undefined) set.location = patch.location ? point(patch.location) : null;
      if (patch.attributes !== undefined) set.attributes = JSON.stringify(patch.attributes);
      await tx.updateTable('devices').set(set).where('org_id', '=', orgId).where('id', '=', id).execute();
      const after = await this.deviceIn(tx, orgId, id);
      await audit(tx, orgId, actorOf(identity), action, 'device', id, before, after);
      return after;
    });
  }

  /** Takes a device out of service and revokes its MQTT credentials; repeating it changes nothing. */
  decommissionDevice(identity: Identity, id: string): Promise<DeviceRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await this.deviceIn(tx, orgId, id, true);
      if (before.decommissioned_at) return before;
      await tx
        .updateTable('devices')
        .set({ decommissioned_at: sql`now()`, updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .execute();
      await tx
        .updateTable('device_credentials')
        .set({ revoked_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('device_id', '=', id)
        .where('revoked_at', 'is', null)
        .execute();
      const after = await this.deviceIn(tx, orgId, id);
      await audit(tx, orgId, actorOf(identity), 'device.decommission', 'device', id, before, after);
      return after;
    });
  }

  /**
   * Issues a new MQTT secret (username = device id) and revokes the previous one: the credential
   * row is replaced in place, so only the newest secret verifies.
   */
  rotateCredentials(identity: Identity, id: string): Promise<{ deviceId: string; username: string; secret: string; createdAt: Date }> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const device = await this.deviceIn(tx, orgId, id, true);
      if (device.decommissioned_at) throw new ConflictError(`device ${device.serial} is decommissioned`);
      const secret = randomBytes(24).toString('base64url');
      await tx
        .updateTable('device_credentials')
        .set({ revoked_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('device_id', '=', id)
        .where('revoked_at', 'is', null)
        .execute();
      const row = await tx
        .insertInto('device_credentials')
        .values({ org_id: orgId, device_id: id, username: id, secret_hash: hashDeviceSecret(secret) })
        .onConflict((oc) =>
          oc
            .column('username')
            .doUpdateSet({ secret_hash: (eb) => eb.ref('excluded.secret_hash'), created_at: sql`now()`, revoked_at: null }),
        )
        .returning(['username', 'created_at'])
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'device.rotate_credentials', 'device', id, null, { username: row.username });
      return { deviceId: id, username: row.username, secret, createdAt: row.created_at };
    });
  }

  createApiKey(
    identity: Identity,
    input: { name: string; scopes: string[]; expiresAt?: Date | null | undefined },
  ): Promise<{ row: ApiKeyRow; key: string }> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const { key, prefix, hash } = generateApiKey();
      const row = await tx
        .insertInto('api_keys')
        .values({
          org_id: orgId,
          name: input.name,
          prefix,
          key_hash: hash,
          scopes: input.scopes,
          // Tokens from an external issuer or the CLI may name no local user.
          created_by:
            identity.kind === 'user' && isUuid(identity.subject)
              ? sql<string | null>`(select id from users where id = ${identity.subject}::uuid)`
              : null,
          expires_at: input.expiresAt ?? null,
        })
        .returning(apiKeyColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'api_key.create', 'api_key', row.id, null, row);
      return { row, key };
    });
  }

  revokeApiKey(identity: Identity, id: string): Promise<ApiKeyRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await tx
        .selectFrom('api_keys')
        .select(apiKeyColumns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst();
      if (!before) throw new NotFoundError(`API key ${id}`);
      if (before.revoked_at) return before;
      const after = await tx
        .updateTable('api_keys')
        .set({ revoked_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(apiKeyColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'api_key.revoke', 'api_key', id, before, after);
      return after;
    });
  }

  // ---- helpers ----

  private selectDevices(tx: Db | Tx, columns?: readonly DeviceColumn[]) {
    const q = tx.selectFrom('devices as d');
    if (!columns) return q.select([...deviceColumns, lat, lng]) as unknown as SelectQueryBuilder<DB & { d: DB['devices'] }, 'd', DeviceRow>;
    const some = q.select(['d.id', 'd.serial', ...columns.filter((c) => c !== 'location').map((c) => `d.${c}` as const)]);
    const selected = columns.includes('location') ? some.select([lat, lng]) : some;
    return selected as unknown as SelectQueryBuilder<DB & { d: DB['devices'] }, 'd', DeviceRow>;
  }

  private async count(tx: Tx, orgId: string, filter: DeviceListFilter): Promise<number> {
    const q = this.filtered(tx.selectFrom('devices as d') as unknown as DeviceQuery, orgId, {
      ...filter,
      search: filter.search ? searchPattern(filter.search) : undefined,
    });
    const r = await q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  private async deviceIn(tx: Tx, orgId: string, id: string, forUpdate = false): Promise<DeviceRow> {
    let q = this.selectDevices(tx).where('d.org_id', '=', orgId).where('d.id', '=', id);
    if (forUpdate) q = q.forUpdate();
    const row = await q.executeTakeFirst();
    if (!row) throw new NotFoundError(`device ${id}`);
    return row;
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
