import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import type { GraphQLResolveInfo } from 'graphql';
import { ALARM_CHANGES, statusOf } from '../../lib/alarms.js';
import type { Config } from '../../lib/config.js';
import { isUuid } from '../../lib/db.js';
import { DateTimeScalar, encodeCursor, upperCaseEnum } from '../../lib/graphql-scalars.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import { SEVERITIES } from '../../lib/rules.js';
import type { AlarmsLoaders } from './loaders.js';
import type { AlarmRow, AlarmsRepository, AlarmWrite } from './repository.js';
import {
  type AlarmFilterInput,
  alarmFilterSchema,
  check,
  checkId,
  checkIds,
  commentSchema,
  decodeAlarmCursor,
  deviceAlarmsSchema,
  noteSchema,
  pageSchema,
  raiseAlarmSchema,
} from './validation.js';

/** Publishes the real-time event of a committed change; never throws (the change is already committed). */
export type PublishAlarmChange = (orgId: string, write: AlarmWrite) => Promise<void>;

/** What every resolver of this subgraph receives. */
export interface AlarmsContext {
  identity: Identity;
  repo: AlarmsRepository;
  loaders: AlarmsLoaders;
  publish: PublishAlarmChange;
}

const READ: Requirement = { role: 'viewer', scope: 'alarms:read' };
const WRITE: Requirement = { role: 'operator', scope: 'alarms:write' };

type Args = Record<string, unknown>;
type Resolver<P = unknown> = (parent: P, args: Args, ctx: AlarmsContext, info: GraphQLResolveInfo) => unknown;

interface DeviceRef {
  id: string;
}

interface Connection {
  edges: { cursor: string; node: AlarmRow }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
  orgId: string;
  filter: AlarmFilterInput;
}

/** Applies a mutation's result to this request's loaders and publishes its event, if it changed anything. */
async function settle(ctx: AlarmsContext, write: AlarmWrite): Promise<AlarmRow> {
  ctx.loaders.alarm.clear(write.row.id).prime(write.row.id, write.row);
  ctx.loaders.history.clear(write.row.id);
  ctx.loaders.activeCount.clear(write.row.device_id);
  ctx.loaders.worstSeverity.clear(write.row.device_id);
  if (write.change) await ctx.publish(write.row.org_id, write);
  return write.row;
}

const Query: Record<string, Resolver> = {
  async alarms(_p, args, ctx) {
    const id = authorize(ctx.identity, READ);
    const page = check(pageSchema, { first: args.first ?? 50, after: args.after }, '');
    const filter = check(alarmFilterSchema, args.filter, 'filter') ?? {};
    const rows = await ctx.repo.list(id.orgId, {
      limit: page.first + 1,
      after: page.after ? decodeAlarmCursor(page.after) : undefined,
      filter,
    });
    const nodes = rows.slice(0, page.first);
    for (const r of nodes) ctx.loaders.alarm.prime(r.id, r);
    const edges = nodes.map((node) => ({ cursor: encodeCursor([node.raised_at_text, node.id]), node }));
    const conn: Connection = {
      edges,
      pageInfo: { hasNextPage: rows.length > page.first, endCursor: edges.at(-1)?.cursor ?? null },
      orgId: id.orgId,
      filter,
    };
    return conn;
  },
  alarm(_p, args, ctx) {
    authorize(ctx.identity, READ);
    return ctx.loaders.alarm.load(checkId(args.id));
  },
  alarmsByIds(_p, args, ctx) {
    authorize(ctx.identity, READ);
    return ctx.loaders.alarm.loadMany(checkIds(args.ids));
  },
  alarmCounts(_p, args, ctx) {
    const id = authorize(ctx.identity, READ);
    return ctx.repo.counts(id.orgId, args.siteId == null ? null : checkId(args.siteId, 'siteId'));
  },
};

const Mutation: Record<string, Resolver> = {
  async raiseAlarm(_p, args, ctx) {
    const id = authorize(ctx.identity, WRITE);
    return settle(ctx, await ctx.repo.raise(id, check(raiseAlarmSchema, args.input, 'input')));
  },
  async acknowledgeAlarm(_p, args, ctx) {
    const id = authorize(ctx.identity, WRITE);
    return settle(ctx, await ctx.repo.act(id, checkId(args.id), 'acknowledge', check(noteSchema, args.note, 'note')));
  },
  async clearAlarm(_p, args, ctx) {
    const id = authorize(ctx.identity, WRITE);
    return settle(ctx, await ctx.repo.act(id, checkId(args.id), 'clear', check(noteSchema, args.note, 'note')));
  },
  async commentAlarm(_p, args, ctx) {
    const id = authorize(ctx.identity, WRITE);
    return settle(ctx, await ctx.repo.comment(id, checkId(args.id), check(commentSchema, args.text, 'text')));
  },
};

const Alarm: Record<string, Resolver<AlarmRow>> = {
  status: (a) => statusOf(a),
  active: (a) => a.cleared_at === null,
  acknowledged: (a) => a.acknowledged_at !== null,
  device: (a) => ({ id: a.device_id }),
  rule: (a) => (a.rule_id ? { id: a.rule_id } : null),
  raisedAt: (a) => a.raised_at,
  lastSeenAt: (a) => a.last_at,
  raisedBy: (a) => a.raised_by,
  acknowledgedAt: (a) => a.acknowledged_at,
  acknowledgedBy: (a) => a.acknowledged_by,
  clearedAt: (a) => a.cleared_at,
  clearedBy: (a) => a.cleared_by,
  history: (a, _args, ctx) => ctx.loaders.history.load(a.id),
};

/** Devices are the devices subgraph's; here they only carry alarm fields, read for the caller's organization. */
const Device: Record<string, Resolver<DeviceRef>> = {
  alarms(d, args, ctx) {
    const a = check(deviceAlarmsSchema, { first: args.first ?? 20, active: args.active }, '');
    return ctx.loaders.deviceAlarms(a.first, a.active ?? null).load(d.id);
  },
  activeAlarmCount: (d, _args, ctx) => ctx.loaders.activeCount.load(d.id),
  worstActiveSeverity: (d, _args, ctx) => ctx.loaders.worstSeverity.load(d.id),
};

/** The resolver map of the alarms subgraph (enum values map the database's lower-case words). */
const resolvers = {
  DateTime: DateTimeScalar,
  AlarmSeverity: upperCaseEnum(SEVERITIES),
  AlarmChange: upperCaseEnum(ALARM_CHANGES),
  Query,
  Mutation,
  Alarm: {
    ...Alarm,
    __resolveReference(ref: { id: unknown }, ctx: AlarmsContext) {
      authorize(ctx.identity, READ);
      return isUuid(ref.id) ? ctx.loaders.alarm.load(ref.id) : null;
    },
  },
  Device: {
    ...Device,
    __resolveReference(ref: DeviceRef, ctx: AlarmsContext): DeviceRef {
      authorize(ctx.identity, READ);
      return { id: ref.id };
    },
  },
  AlarmConnection: {
    totalCount: (c: Connection, _args: Args, ctx: AlarmsContext) => ctx.repo.count(c.orgId, c.filter),
  },
} satisfies GraphQLResolverMap<AlarmsContext>;

/** The resolver map of the alarms subgraph (the same export in every subgraph's `resolvers.ts`). */
export function createResolvers(_config?: Config): GraphQLResolverMap<AlarmsContext> {
  return resolvers;
}
