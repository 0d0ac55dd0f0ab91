import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import {
  type FieldNode,
  GraphQLError,
  type GraphQLResolveInfo,
  GraphQLScalarType,
  Kind,
  type SelectionSetNode,
  valueFromASTUntyped,
} from 'graphql';
import type { Config } from '../../lib/config.js';
import type { DeviceChange } from '../../lib/contracts/device-changes.js';
import { isUuid } from '../../lib/db.js';
import { normalizeFingerprint } from '../../lib/device-credentials.js';
import { ErrorCode, UnauthenticatedError } from '../../lib/errors.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import { sitePathIds } from '../../lib/sites.js';
import type { DevicesLoaders } from './loaders.js';
import { type PeopleConfig, type PeopleContext, peopleResolvers } from './people.js';
import type {
  ApiKeyRow,
  CredentialRow,
  DeviceColumn,
  DeviceListFilter,
  DeviceRow,
  DevicesRepositories,
  ProfileRow,
  SiteRow,
} from './repositories/index.js';
import {
  bboxSchema,
  certificateSchema,
  check,
  checkId,
  checkIds,
  createApiKeySchema,
  createDeviceSchema,
  createProfileSchema,
  createSiteSchema,
  decodeCursor,
  deviceFilterSchema,
  encodeCursor,
  graceSchema,
  MAX_MAP_PAGE,
  mapPageSchema,
  pageSchema,
  provisionModeSchema,
  updateDeviceSchema,
  updateProfileSchema,
  updateSiteSchema,
} from './validation.js';

/** What every resolver of this subgraph receives. */
export interface DevicesContext extends PeopleContext {
  identity: Identity;
  loaders: DevicesLoaders;
  repos: DevicesRepositories;
  /**
   * Tells other roles that devices changed (lib/contracts/device-changes.ts). Called after the
   * change committed; never fails the mutation (a lost notice heals on ingest's cache TTL).
   */
  notify(change: DeviceChange): Promise<void>;
}

const READ: Requirement = { role: 'viewer', scope: 'devices:read' };
const WRITE: Requirement = { role: 'operator', scope: 'devices:write' };
/** Managing API keys needs an admin, or a key holding every scope (`*`). */
const ADMIN: Requirement = { role: 'admin', scope: '*' };

type Args = Record<string, unknown>;
type Resolver<P = unknown> = (parent: P, args: Args, ctx: DevicesContext, info: GraphQLResolveInfo) => unknown;

const iso = (v: unknown): string => {
  const d = v instanceof Date ? v : new Date(String(v));
  if (Number.isNaN(d.getTime())) throw new TypeError('DateTime cannot represent an invalid date');
  return d.toISOString();
};

function parseDate(v: unknown): Date {
  const d = typeof v === 'string' ? new Date(v) : new Date(Number.NaN);
  if (Number.isNaN(d.getTime())) {
    throw new GraphQLError('DateTime must be an ISO-8601 string', { extensions: { code: ErrorCode.BadUserInput } });
  }
  return d;
}

const DateTime = new GraphQLScalarType({
  name: 'DateTime',
  serialize: iso,
  parseValue: parseDate,
  parseLiteral: (ast) => parseDate(ast.kind === Kind.STRING ? ast.value : undefined),
});

const JSONScalar = new GraphQLScalarType({
  name: 'JSON',
  serialize: (v) => v,
  parseValue: (v) => v,
  parseLiteral: (ast, vars) => valueFromASTUntyped(ast, vars),
});

/** Device reference of `_entities`: ids that are not this tenant's resolve to null. */
const loadDevice = (id: unknown, ctx: DevicesContext) => (isUuid(id) ? ctx.loaders.device.load(id) : null);
const loadSite = (id: unknown, ctx: DevicesContext) => (isUuid(id) ? ctx.loaders.site.load(id) : null);
const loadProfile = (id: unknown, ctx: DevicesContext) => (isUuid(id) ? ctx.loaders.profile.load(id) : null);

/** `__resolveReference(reference, context)`: other tenants' and malformed ids resolve to null. */
const reference = (load: (id: unknown, ctx: DevicesContext) => unknown) => (ref: { id: unknown }, ctx: DevicesContext) => {
  authorize(ctx.identity, READ);
  return load(ref.id, ctx);
};

/**
 * The fields the operation selects at `path` below the current field (`[]`: its own selection;
 * field names, fragments followed).
 */
function fieldsAt(info: GraphQLResolveInfo, path: string[]): FieldNode[] {
  const out: FieldNode[] = [];
  const collect = (set: SelectionSetNode | undefined, rest: string[]): void => {
    if (!set) return;
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) {
        if (!rest.length) out.push(sel);
        else if (sel.name.value === rest[0]) collect(sel.selectionSet, rest.slice(1));
      } else if (sel.kind === Kind.INLINE_FRAGMENT) collect(sel.selectionSet, rest);
      else collect(info.fragments[sel.name.value]?.selectionSet, rest);
    }
  };
  for (const f of info.fieldNodes) collect(f.selectionSet, path);
  return out;
}

/** The columns each field of `Device` reads besides `id` and `serial`. */
const deviceFieldColumns: Record<string, readonly DeviceColumn[]> = {
  __typename: [],
  id: [],
  serial: [],
  name: ['name'],
  site: ['site_id'],
  location: ['location'],
  profile: ['profile_id'],
  attributes: ['attributes'],
  createdAt: ['created_at'],
  updatedAt: ['updated_at'],
  decommissionedAt: ['decommissioned_at'],
  parent: ['parent_id'],
  children: [],
  isGateway: ['profile_id'],
};

/**
 * The device columns that `fields` (selected on `Device`) read, or `undefined` (all columns) when
 * one of them is not a plain field of `Device` this table knows.
 */
function deviceColumnsOf(fields: readonly FieldNode[]): DeviceColumn[] | undefined {
  const columns = new Set<DeviceColumn>();
  for (const f of fields) {
    const cols = Object.hasOwn(deviceFieldColumns, f.name.value) ? deviceFieldColumns[f.name.value] : undefined;
    if (!cols) return undefined;
    for (const c of cols) columns.add(c);
  }
  return [...columns].sort();
}

function primeDevice(ctx: DevicesContext, row: DeviceRow): DeviceRow {
  ctx.loaders.device.clear(row.id).prime(row.id, row);
  ctx.loaders.deviceChildren.clearAll();
  ctx.loaders.siteDeviceCount.clearAll();
  return row;
}

/** A profile's metric definitions as stored: keys left out rather than null (ingest's metric schema treats them as optional, not nullable). */
function storedMetrics(metrics: NonNullable<ReturnType<typeof createProfileSchema.parse>['metrics']>) {
  return metrics.map((m) => ({
    name: m.name,
    type: m.type,
    ...(m.unit != null ? { unit: m.unit } : {}),
    ...(m.min != null ? { min: m.min } : {}),
    ...(m.max != null ? { max: m.max } : {}),
    ...(m.counter ? { counter: true } : {}),
  }));
}

function requireUser(ctx: DevicesContext): Identity {
  if (ctx.identity.kind === 'anonymous') throw new UnauthenticatedError();
  return ctx.identity;
}

interface Connection {
  edges: { cursor: string; node: DeviceRow }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
  orgId: string;
  filter: DeviceListFilter;
  /** already counted with the page when `totalCount` was selected */
  total?: number | undefined;
}

/** One page of devices matching `rawFilter` (validated here), the shape of `devices` and `devicesInBox`. */
async function devicePage(
  ctx: DevicesContext,
  info: GraphQLResolveInfo,
  page: { first: number; after?: string | null | undefined },
  rawFilter: unknown,
): Promise<Connection> {
  const id = authorize(ctx.identity, READ);
  const f = check(deviceFilterSchema, rawFilter, 'filter') ?? {};
  const filter = {
    siteId: f.siteId ?? undefined,
    profileId: f.profileId ?? undefined,
    parentId: f.parentId ?? undefined,
    search: f.search ? f.search : undefined,
    bbox: f.bbox ?? undefined,
    near: f.near ?? undefined,
    includeDecommissioned: f.includeDecommissioned ?? false,
  };
  const afterSerial = page.after ? decodeCursor(page.after) : undefined;
  const nodeFields = fieldsAt(info, ['edges', 'node']);
  const onNode = (name: string) => nodeFields.some((f) => f.name.value === name);
  const columns = deviceColumnsOf(nodeFields);
  const { rows, sites, profiles, total } = await ctx.repos.devices.listDevices(id.orgId, {
    limit: page.first + 1,
    afterSerial,
    filter,
    columns,
    withSites: onNode('site'),
    withProfiles: onNode('profile') || onNode('isGateway'),
    withCount: fieldsAt(info, []).some((f) => f.name.value === 'totalCount'),
  });
  for (const r of sites) ctx.loaders.site.prime(r.id, r);
  for (const r of profiles) ctx.loaders.profile.prime(r.id, r);
  const hasNextPage = rows.length > page.first;
  const nodes = hasNextPage ? rows.slice(0, page.first) : rows;
  // Rows without some columns must not answer other fields' loads.
  if (!columns) for (const r of nodes) ctx.loaders.device.prime(r.id, r);
  const edges = nodes.map((node) => ({ cursor: encodeCursor(node.serial), node }));
  const conn: Connection = {
    edges,
    pageInfo: { hasNextPage, endCursor: edges.at(-1)?.cursor ?? null },
    orgId: id.orgId,
    filter,
    total,
  };
  return conn;
}

/**
 * The resolver map of the devices subgraph; people and sessions (`login` included, signed with the
 * configured secret, issuer and lifetime) come from `people.ts`.
 */
export function createResolvers(config: PeopleConfig & Pick<Config, 'DEVICE_AUTH_ROTATION_GRACE_S'>): GraphQLResolverMap<DevicesContext> {
  const people = peopleResolvers(config);

  const Query: Record<string, Resolver> = {
    devices(_p, args, ctx, info) {
      return devicePage(ctx, info, check(pageSchema, { first: args.first ?? 50, after: args.after }, ''), args.filter);
    },
    devicesInBox(_p, args, ctx, info) {
      // the map's query: the same listing with a required bounding box and larger pages
      const page = check(mapPageSchema, { first: args.first ?? MAX_MAP_PAGE, after: args.after }, '');
      const bbox = check(bboxSchema, args.bbox, 'bbox');
      return devicePage(ctx, info, page, { bbox, siteId: args.siteId ?? null });
    },
    deviceExtent(_p, args, ctx) {
      const id = authorize(ctx.identity, READ);
      return ctx.repos.devices.deviceExtent(id.orgId, args.siteId == null ? undefined : checkId(args.siteId, 'siteId'));
    },
    device(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.device.load(checkId(args.id));
    },
    devicesByIds(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.device.loadMany(checkIds(args.ids));
    },
    sitesByIds(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.site.loadMany(checkIds(args.ids));
    },
    async sites(_p, _a, ctx) {
      const id = authorize(ctx.identity, READ);
      const rows = await ctx.repos.sites.listSites(id.orgId);
      for (const r of rows) ctx.loaders.site.prime(r.id, r);
      return rows;
    },
    site(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.site.load(checkId(args.id));
    },
    async deviceProfiles(_p, _a, ctx) {
      const id = authorize(ctx.identity, READ);
      const rows = await ctx.repos.profiles.listProfiles(id.orgId);
      for (const r of rows) ctx.loaders.profile.prime(r.id, r);
      return rows;
    },
    deviceProfile(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.profile.load(checkId(args.id));
    },
    async me(_p, _a, ctx) {
      const id = requireUser(ctx);
      const { org, email, name } = await ctx.repos.organizations.whoami(
        id.orgId,
        id.kind === 'user' && isUuid(id.subject) ? id.subject : null,
      );
      if (!org) throw new UnauthenticatedError('your organization no longer exists');
      return { kind: id.kind, subject: id.subject, role: id.role, scopes: id.scopes, email, name, organization: org };
    },
    apiKeys(_p, _a, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      return ctx.repos.apiKeys.listApiKeys(id.orgId);
    },
  };

  const Mutation: Record<string, Resolver> = {
    async createSite(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const row = await ctx.repos.sites.createSite(id, check(createSiteSchema, args.input, 'input'));
      ctx.loaders.site.prime(row.id, row);
      ctx.loaders.siteChildren.clearAll();
      return row;
    },
    async updateSite(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const siteId = checkId(args.id);
      const input = (args.input ?? {}) as Record<string, unknown>;
      const row = await ctx.repos.sites.updateSite(id, siteId, check(updateSiteSchema, input, 'input'));
      ctx.loaders.site.clear(row.id).prime(row.id, row);
      return row;
    },
    async createDeviceProfile(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const p = check(createProfileSchema, args.input, 'input');
      const row = await ctx.repos.profiles.createProfile(id, {
        name: p.name,
        description: p.description ?? '',
        metrics: storedMetrics(p.metrics ?? []),
        silenceTimeoutSeconds: p.silenceTimeoutSeconds ?? 900,
        isGateway: p.isGateway ?? false,
        autoCreateChildren: p.autoCreateChildren ?? false,
      });
      ctx.loaders.profile.prime(row.id, row);
      return row;
    },
    async updateDeviceProfile(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const profileId = checkId(args.id);
      const p = check(updateProfileSchema, args.input, 'input');
      const row = await ctx.repos.profiles.updateProfile(id, profileId, {
        ...(p.name != null ? { name: p.name } : {}),
        ...(p.description != null ? { description: p.description } : {}),
        ...(p.metrics != null ? { metrics: storedMetrics(p.metrics) } : {}),
        ...(p.silenceTimeoutSeconds != null ? { silenceTimeoutSeconds: p.silenceTimeoutSeconds } : {}),
        ...(p.isGateway != null ? { isGateway: p.isGateway } : {}),
        ...(p.autoCreateChildren != null ? { autoCreateChildren: p.autoCreateChildren } : {}),
      });
      await ctx.notify({ orgId: id.orgId, kind: 'profile-updated', profileId });
      ctx.loaders.profile.clear(row.id).prime(row.id, row);
      return row;
    },
    async createDevice(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const d = check(createDeviceSchema, args.input, 'input');
      const row = await ctx.repos.devices.createDevice(id, {
        serial: d.serial,
        name: d.name,
        siteId: d.siteId,
        profileId: d.profileId,
        parentId: d.parentId,
        location: d.location,
        attributes: d.attributes ?? undefined,
      });
      // the parent too: ingest may remember the serial as an unknown child of that concentrator
      await ctx.notify({ orgId: id.orgId, kind: 'created', deviceIds: row.parent_id ? [row.id, row.parent_id] : [row.id] });
      return primeDevice(ctx, row);
    },
    async updateDevice(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const deviceId = checkId(args.id);
      const patch = check(updateDeviceSchema, args.input, 'input');
      const row = await ctx.repos.devices.updateDevice(id, deviceId, patch);
      await ctx.notify({ orgId: id.orgId, kind: 'updated', deviceIds: [deviceId] });
      return primeDevice(ctx, row);
    },
    async moveDevice(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const deviceId = checkId(args.id);
      const siteId = checkId(args.siteId, 'siteId');
      const row = await ctx.repos.devices.updateDevice(id, deviceId, { siteId }, 'device.move');
      await ctx.notify({ orgId: id.orgId, kind: 'moved', deviceIds: [deviceId] });
      return primeDevice(ctx, row);
    },
    async decommissionDevice(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const deviceId = checkId(args.id);
      const row = await ctx.repos.devices.decommissionDevice(id, deviceId);
      await ctx.notify({ orgId: id.orgId, kind: 'decommissioned', deviceIds: [deviceId] });
      return primeDevice(ctx, row);
    },
    async rotateDeviceCredentials(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const deviceId = checkId(args.id);
      const grace = check(graceSchema, args.graceSeconds, 'graceSeconds') ?? config.DEVICE_AUTH_ROTATION_GRACE_S;
      const credentials = await ctx.repos.credentials.rotateCredentials(id, deviceId, grace);
      await ctx.notify({ orgId: id.orgId, kind: 'credentials-rotated', deviceIds: [deviceId] });
      ctx.loaders.credentials.clear(deviceId);
      return credentials;
    },
    async revokeDeviceCredential(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const row = await ctx.repos.credentials.revokeCredential(id, checkId(args.id));
      await ctx.notify({ orgId: id.orgId, kind: 'credentials-rotated', deviceIds: [row.device_id] });
      ctx.loaders.credentials.clear(row.device_id);
      return row;
    },
    async registerDeviceCertificate(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const a = check(certificateSchema, args, '');
      const fingerprint = normalizeFingerprint((a.fingerprint ?? a.certificate) as string);
      const row = await ctx.repos.credentials.registerCertificate(id, a.deviceId, fingerprint);
      await ctx.notify({ orgId: id.orgId, kind: 'credentials-rotated', deviceIds: [a.deviceId] });
      ctx.loaders.credentials.clear(a.deviceId);
      return row;
    },
    async setProfileProvisioning(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const profileId = checkId(args.profileId, 'profileId');
      const mode = check(provisionModeSchema, args.mode, 'mode');
      const r = await ctx.repos.profiles.setProvisioning(id, profileId, mode, args.newSecret === true);
      ctx.loaders.profile.clear(profileId);
      return r;
    },
    async createApiKey(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const input = check(createApiKeySchema, args.input, 'input');
      const { row, key } = await ctx.repos.apiKeys.createApiKey(id, input);
      return { apiKey: row, key };
    },
    revokeApiKey(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      return ctx.repos.apiKeys.revokeApiKey(id, checkId(args.id));
    },
  };

  const Device: Record<string, Resolver<DeviceRow>> = {
    site: (d, _a, ctx) => (d.site_id ? ctx.loaders.site.get(d.site_id) : null),
    location: (d) => (d.lat === null || d.lng === null ? null : { lat: d.lat, lng: d.lng }),
    profile: (d, _a, ctx) => (d.profile_id ? ctx.loaders.profile.get(d.profile_id) : null),
    attributes: (d) => d.attributes ?? {},
    createdAt: (d) => d.created_at,
    updatedAt: (d) => d.updated_at,
    decommissionedAt: (d) => d.decommissioned_at,
    parent: (d, _a, ctx) => (d.parent_id ? ctx.loaders.device.load(d.parent_id) : null),
    children: (d, _a, ctx) => ctx.loaders.deviceChildren.load(d.id),
    isGateway: async (d, _a, ctx) => (d.profile_id ? ((await ctx.loaders.profile.load(d.profile_id))?.is_gateway ?? false) : false),
    credentials: (d, _a, ctx) => {
      authorize(ctx.identity, WRITE);
      return ctx.loaders.credentials.load(d.id);
    },
  };

  const DeviceCredential: Record<string, Resolver<CredentialRow>> = {
    createdAt: (c) => c.created_at,
    expiresAt: (c) => c.expires_at,
    revokedAt: (c) => c.revoked_at,
    valid: (c) => c.revoked_at === null && (c.expires_at === null || new Date(c.expires_at).getTime() > Date.now()),
  };

  const Site: Record<string, Resolver<SiteRow>> = {
    parent: (s, _a, ctx) => (s.parent_id ? ctx.loaders.site.load(s.parent_id) : null),
    children: (s, _a, ctx) => ctx.loaders.siteChildren.load(s.id),
    async path(s, _a, ctx) {
      const ids = sitePathIds(s.path);
      const sites = await ctx.loaders.site.loadMany(ids);
      return sites.filter((x): x is SiteRow => x !== null && !(x instanceof Error));
    },
    deviceCount: (s, _a, ctx) => ctx.loaders.siteDeviceCount.load(s.id),
    outline: (s, _a, ctx) => ctx.loaders.siteOutline.load(s.id),
    timeZone: (s) => s.time_zone,
    location: (s) => (s.lat === null || s.lng === null ? null : { lat: s.lat, lng: s.lng }),
    createdAt: (s) => s.created_at,
  };

  const DeviceProfile: Record<string, Resolver<ProfileRow>> = {
    metrics: (p) =>
      (Array.isArray(p.metrics) ? p.metrics : []).map((m) => ({
        name: m.name,
        unit: m.unit ?? null,
        type: String(m.type ?? 'number').toLowerCase(),
        min: m.min ?? null,
        max: m.max ?? null,
        counter: m.counter === true,
      })),
    silenceTimeoutSeconds: (p) => p.silence_timeout_s,
    isGateway: (p) => p.is_gateway,
    autoCreateChildren: (p) => p.auto_create_children,
    createdAt: (p) => p.created_at,
    provisioning: (p) => ({ mode: p.provision_mode ?? 'disabled', key: p.provision_key ?? null }),
  };

  const Organization = {
    async __resolveReference(ref: { id: unknown }, ctx: DevicesContext) {
      const id = requireUser(ctx);
      if (ref.id !== id.orgId) return null;
      return (await ctx.repos.organizations.whoami(id.orgId, null)).org ?? null;
    },
  };

  const ApiKey: Record<string, Resolver<ApiKeyRow>> = {
    createdAt: (k) => k.created_at,
    lastUsedAt: (k) => k.last_used_at,
    expiresAt: (k) => k.expires_at,
    revokedAt: (k) => k.revoked_at,
  };

  const DeviceConnection: Record<string, Resolver<Connection>> = {
    totalCount: (c, _a, ctx) => c.total ?? ctx.repos.devices.countDevices(c.orgId, c.filter),
  };

  return {
    DateTime,
    JSON: JSONScalar,
    Role: { ADMIN: 'admin', OPERATOR: 'operator', VIEWER: 'viewer' },
    IdentityKind: { USER: 'user', APIKEY: 'apikey', SYSTEM: 'system' },
    MetricType: { NUMBER: 'number', BOOLEAN: 'boolean', STRING: 'string' },
    CredentialKind: { SECRET: 'secret', CERTIFICATE: 'certificate' },
    ProvisionMode: { DISABLED: 'disabled', PRE_REGISTERED: 'pre_registered', CREATE_NEW: 'create_new' },
    Query: { ...Query, ...people.Query },
    Mutation: { ...Mutation, ...people.Mutation },
    User: people.User,
    Invitation: people.Invitation,
    Me: people.Me,
    InvitationStatus: people.InvitationStatus,
    Device: { ...Device, __resolveReference: reference(loadDevice) },
    Site: { ...Site, __resolveReference: reference(loadSite) },
    DeviceProfile: { ...DeviceProfile, __resolveReference: reference(loadProfile) },
    Organization,
    ApiKey,
    DeviceConnection,
    DeviceCredentials: {},
    DeviceCredential,
  } satisfies GraphQLResolverMap<DevicesContext>;
}
