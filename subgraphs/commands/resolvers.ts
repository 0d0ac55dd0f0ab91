import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import { type CommandChange, checkCommandSpecs, deltaOf, MAX_EXPIRY_MS } from '../../lib/commands.js';
import { type Config, loadConfig } from '../../lib/config.js';
import { isUuid } from '../../lib/db.js';
import { BadInputError } from '../../lib/errors.js';
import { DateTimeScalar, decodeCursor, encodeCursor, JSONScalar } from '../../lib/graphql-scalars.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import type { CommandsLoaders } from './loaders.js';
import {
  type CommandDefaults,
  type CommandJobsRepository,
  type CommandRow,
  type CommandsRepository,
  type CommandWrite,
  type DeviceStateRow,
  type JobRow,
  type JobWrite,
  jobProgress,
  type ProfileSpecsRow,
} from './repositories/index.js';
import {
  check,
  checkId,
  checkIds,
  commandFilterSchema,
  decodeCommandCursor,
  jobFilterSchema,
  pageSchema,
  patchSchema,
  sendCommandSchema,
  sendSiteCommandSchema,
  statusListSchema,
  versionSchema,
} from './validation.js';

/** After a committed change: wake the dispatcher (`dispatch` job) and publish `commandUpdated`; never throws. */
export type AfterCommandChange = (change: CommandChange) => Promise<void>;

/** After a committed job change: wake the dispatcher for `dispatch`, publish `commandUpdated` and `commandJobUpdated`; never throws. */
export type AfterJobChange = (write: JobWrite) => Promise<void>;

/** What every resolver of this subgraph receives. */
export interface CommandsContext {
  identity: Identity;
  repo: CommandsRepository;
  jobs: CommandJobsRepository;
  loaders: CommandsLoaders;
  after: AfterCommandChange;
  afterJob: AfterJobChange;
}

const READ: Requirement = { role: 'viewer', scope: 'commands:read' };
const WRITE: Requirement = { role: 'operator', scope: 'commands:write' };
/** declaring a profile's commands changes what every device of it accepts */
const PROFILE_WRITE: Requirement = { role: 'admin', scope: 'devices:write' };

type Args = Record<string, unknown>;
type Resolver<P = unknown> = (parent: P, args: Args, ctx: CommandsContext) => unknown;

interface DeviceRef {
  id: string;
}

function page(rows: CommandRow[], first: number) {
  const nodes = rows.slice(0, first);
  const edges = nodes.map((node) => ({ cursor: encodeCursor([node.created_at_text, node.id]), node }));
  return { edges, pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null } };
}

function jobPage(rows: JobRow[], first: number) {
  const nodes = rows.slice(0, first);
  const edges = nodes.map((node) => ({ cursor: encodeCursor([node.created_at_text, node.id]), node }));
  return { edges, pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null } };
}

const decodeDeviceCursor = (c: string): string => decodeCursor(c, (k): k is [string] => k.length === 1 && isUuid(k[0]))[0];

function createRoots(d: CommandDefaults) {
  const settle = async (ctx: CommandsContext, w: CommandWrite): Promise<CommandRow> => {
    ctx.loaders.command.clear(w.row.id).prime(w.row.id, w.row);
    if (w.change) await ctx.after(w.change);
    return w.row;
  };

  const settleJob = async (ctx: CommandsContext, w: JobWrite): Promise<JobRow> => {
    ctx.loaders.job.clear(w.row.id).prime(w.row.id, w.row);
    if (w.changed) await ctx.afterJob(w);
    return w.row;
  };

  const Query: Record<string, Resolver> = {
    async commands(_p, args, ctx) {
      const id = authorize(ctx.identity, READ);
      const p = check(pageSchema, { first: args.first ?? 50, after: args.after }, '');
      const filter = check(commandFilterSchema, args.filter, 'filter') ?? {};
      const rows = await ctx.repo.list(id.orgId, { limit: p.first + 1, after: p.after ? decodeCommandCursor(p.after) : undefined, filter });
      for (const r of rows) ctx.loaders.command.prime(r.id, r);
      return page(rows, p.first);
    },
    command(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.command.load(checkId(args.id));
    },
    commandsByIds(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.command.loadMany(checkIds(args.ids));
    },
    async commandJobs(_p, args, ctx) {
      const id = authorize(ctx.identity, READ);
      const p = check(pageSchema, { first: args.first ?? 20, after: args.after }, '');
      const filter = check(jobFilterSchema, args.filter, 'filter') ?? {};
      const rows = await ctx.jobs.list(id.orgId, { limit: p.first + 1, after: p.after ? decodeCommandCursor(p.after) : undefined, filter });
      for (const r of rows) ctx.loaders.job.prime(r.id, r);
      return jobPage(rows, p.first);
    },
    commandJob(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.job.load(checkId(args.id));
    },
    commandJobsByIds(_p, args, ctx) {
      authorize(ctx.identity, READ);
      return ctx.loaders.job.loadMany(checkIds(args.ids));
    },
    async devicesOutOfState(_p, args, ctx) {
      const id = authorize(ctx.identity, READ);
      const p = check(pageSchema, { first: args.first ?? 50, after: args.after }, '');
      const siteId = args.siteId == null ? null : checkId(args.siteId, 'siteId');
      const rows = await ctx.repo.drift(id.orgId, { siteId, limit: p.first + 1, after: p.after ? decodeDeviceCursor(p.after) : null });
      const nodes = rows.slice(0, p.first);
      const edges = nodes.map((s) => ({ cursor: encodeCursor([s.device_id]), node: { device: { id: s.device_id }, state: s } }));
      return { edges, pageInfo: { hasNextPage: rows.length > p.first, endCursor: edges.at(-1)?.cursor ?? null } };
    },
  };

  const Mutation: Record<string, Resolver> = {
    async sendCommand(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const input = check(sendCommandSchema, args.input, 'input');
      return settle(ctx, await ctx.repo.send(id, input, d));
    },
    async cancelCommand(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      return settle(ctx, await ctx.repo.cancel(id, checkId(args.id)));
    },
    async sendSiteCommand(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const input = check(sendSiteCommandSchema, args.input, 'input');
      const row = await ctx.jobs.create(id, input, { expiryS: d.expiryS });
      return settleJob(ctx, { row, changed: true, changes: [], dispatch: [] });
    },
    async pauseCommandJob(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      return settleJob(ctx, await ctx.jobs.pause(id, checkId(args.id)));
    },
    async resumeCommandJob(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      return settleJob(ctx, await ctx.jobs.resume(id, checkId(args.id)));
    },
    async cancelCommandJob(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      return settleJob(ctx, await ctx.jobs.cancel(id, checkId(args.id)));
    },
    async setDesiredState(_p, args, ctx) {
      const id = authorize(ctx.identity, WRITE);
      const deviceId = checkId(args.deviceId, 'deviceId');
      const patch = check(patchSchema, args.patch, 'patch');
      const version = check(versionSchema, args.expectedVersion, 'expectedVersion');
      const r = await ctx.repo.setDesiredState(id, deviceId, patch, version, d);
      ctx.loaders.state.clear(deviceId).prime(deviceId, r.state);
      if (r.change) await ctx.after(r.change);
      return r.state;
    },
    async setProfileCommands(_p, args, ctx) {
      const id = authorize(ctx.identity, PROFILE_WRITE);
      const profileId = checkId(args.profileId, 'profileId');
      const specs = checkCommandSpecs(args.commands, 'commands', d.timeoutS);
      const row = await ctx.repo.setProfileCommands(id, profileId, specs);
      ctx.loaders.profile.clear(profileId).prime(profileId, row);
      return { id: profileId };
    },
  };
  return { Query, Mutation };
}

const iso = (v: string | Date | null) => (v == null ? null : new Date(v));

const Command: Record<string, Resolver<CommandRow>> = {
  device: (c) => ({ id: c.device_id }),
  timeoutSeconds: (c) => c.timeout_s,
  idempotencyKey: (c) => c.idempotency_key,
  jobId: (c) => c.job_id,
  job: (c, _a, ctx) => (c.job_id ? ctx.loaders.job.load(c.job_id) : null),
  createdBy: (c) => c.created_by,
  createdAt: (c) => c.created_at,
  sentAt: (c) => c.sent_at,
  deliveredAt: (c) => c.delivered_at,
  completedAt: (c) => c.completed_at,
  expiresAt: (c) => c.expires_at,
  history: (c) => c.history.map((h) => ({ status: h.status, at: iso(h.at), evidence: h.evidence ?? null })),
};

const CommandJob: Record<string, Resolver<JobRow>> = {
  site: (j) => ({ id: j.site_id }),
  profile: (j) => (j.profile_id ? { id: j.profile_id } : null),
  timeoutSeconds: (j) => j.timeout_s,
  rolloutPerMinute: (j) => j.rollout_per_minute,
  rolloutIncrease: (j) =>
    j.rollout_increase_factor === null ? null : { factor: j.rollout_increase_factor, everySucceeded: j.rollout_increase_every },
  abortWhen: (j) => (j.abort_failed_percent === null ? null : { failedPercent: j.abort_failed_percent, minDevices: j.abort_min_devices }),
  abortReason: (j) => j.abort_reason,
  progress: (j) => jobProgress(j),
  createdBy: (j) => j.created_by,
  createdAt: (j) => j.created_at,
  updatedAt: (j) => j.updated_at,
  completedAt: (j) => j.completed_at,
  async commands(j, args, ctx) {
    const p = check(pageSchema, { first: args.first ?? 50, after: args.after }, '');
    const status = check(statusListSchema, args.status, 'status') ?? null;
    const rows = await ctx.repo.list(ctx.identity.orgId, {
      limit: p.first + 1,
      after: p.after ? decodeCommandCursor(p.after) : undefined,
      filter: { jobId: j.id, status },
    });
    for (const r of rows) ctx.loaders.command.prime(r.id, r);
    return page(rows, p.first);
  },
};

const DeviceState: Record<string, Resolver<DeviceStateRow>> = {
  delta: (s) => deltaOf(s.desired, s.reported),
  inSync: (s) => s.in_sync,
  desiredAt: (s) => s.desired_at,
  reportedAt: (s) => s.reported_at,
  updatedAt: (s) => s.updated_at,
};

/** Devices are the devices subgraph's; here they carry commands and state, read for the caller's organization. */
const Device: Record<string, Resolver<DeviceRef>> = {
  commands(dv, args, ctx) {
    const p = check(pageSchema, { first: args.first ?? 20, after: args.after }, '');
    const statuses = check(statusListSchema, args.status, 'status') ?? null;
    return ctx.loaders
      .deviceCommands(p.first + 1, statuses, p.after ? decodeCommandCursor(p.after) : undefined)
      .load(dv.id)
      .then((rows) => page(rows, p.first));
  },
  state: (dv, _args, ctx) => ctx.loaders.state.load(dv.id),
};

/** The resolver map of the commands subgraph (the same export in every subgraph's `resolvers.ts`). */
export function createResolvers(config: Config = loadConfig({})): GraphQLResolverMap<CommandsContext> {
  const d: CommandDefaults = {
    timeoutS: config.COMMANDS_DEFAULT_TIMEOUT_S,
    expiryS: config.COMMANDS_DEFAULT_EXPIRY_S,
    maxExpiryMs: MAX_EXPIRY_MS,
  };
  if (d.expiryS * 1000 > d.maxExpiryMs) throw new BadInputError('COMMANDS_DEFAULT_EXPIRY_S: at most 30 days');
  const { Query, Mutation } = createRoots(d);
  return {
    DateTime: DateTimeScalar,
    JSON: JSONScalar,
    Query,
    Mutation,
    Command: {
      ...Command,
      __resolveReference(ref: { id: unknown }, ctx: CommandsContext) {
        authorize(ctx.identity, READ);
        return isUuid(ref.id) ? ctx.loaders.command.load(ref.id) : null;
      },
    },
    CommandJob: {
      ...CommandJob,
      __resolveReference(ref: { id: unknown }, ctx: CommandsContext) {
        authorize(ctx.identity, READ);
        return isUuid(ref.id) ? ctx.loaders.job.load(ref.id) : null;
      },
    },
    DeviceState,
    Device: {
      ...Device,
      __resolveReference(ref: DeviceRef, ctx: CommandsContext): DeviceRef {
        authorize(ctx.identity, READ);
        return { id: ref.id };
      },
    },
    DeviceProfile: {
      commands: async (p: { id: string }, _a: Args, ctx: CommandsContext) => (await ctx.loaders.profile.load(p.id))?.commands ?? null,
      __resolveReference(ref: { id: unknown }, ctx: CommandsContext) {
        authorize(ctx.identity, READ);
        return isUuid(ref.id) ? ctx.loaders.profile.load(ref.id).then((r: ProfileSpecsRow | null) => (r ? { id: r.id } : null)) : null;
      },
    },
  } as GraphQLResolverMap<CommandsContext>;
}
