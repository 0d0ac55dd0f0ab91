import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import type { Config } from '../../lib/config.js';
import type { NotificationInput } from '../../lib/contracts/notifications.js';
import { DateTimeScalar, encodeCursor, JSONScalar, upperCaseEnum } from '../../lib/graphql-scalars.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import { DEFAULT_CELL_DEGREES } from '../../lib/programs-assign.js';
import { RULE_ACTION_TRIGGERS } from '../../lib/rule-actions.js';
import { evaluate, type Sample } from '../../lib/rule-expr.js';
import { OPERATORS, SEVERITIES } from '../../lib/rules.js';
import { compileWaitRule, RULE_KINDS, replay, type WaitRule } from '../../lib/rules-wait.js';
import { parseAllowlist } from '../../lib/webhook-guard.js';
import type { RulesLoaders } from './loaders.js';
import { notificationResolvers } from './notifications-resolvers.js';
import { type ProgramLoaders, programResolvers } from './programs-resolvers.js';
import type { RuleFilter, RuleRow, RulesRepositories } from './repositories/index.js';
import { scheduleResolvers } from './schedules-resolvers.js';
import {
  check,
  checkFirst,
  checkId,
  MAX_DRY_RUN_MATCHES,
  MAX_EXECUTIONS,
  MAX_RULE_PAGE,
  parseDryRunWindow,
  parseRuleCursor,
  parseRuleInput,
  parseRulePatch,
  ruleFilterSchema,
  ruleMetrics,
} from './validation.js';

/** Per-request context of the rules subgraph. */
export interface RulesContext {
  identity: Identity;
  repos: RulesRepositories;
  loaders: RulesLoaders;
  programLoaders: ProgramLoaders;
  /** adds a request to the `notify` queue (`testNotificationChannel`) */
  notify?: ((input: NotificationInput) => Promise<void>) | undefined;
}

const READ: Requirement = { role: 'viewer', scope: 'rules:read' };
/** Dry runs write nothing but show device values, so they need the same right as writes. */
const WRITE: Requirement = { role: 'operator', scope: 'rules:write' };

type Args = Record<string, unknown>;

interface RuleConnection {
  edges: { cursor: string; node: RuleRow }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
  orgId: string;
  filter: RuleFilter;
}

const resolvers = {
  DateTime: DateTimeScalar,
  RuleOperator: upperCaseEnum(OPERATORS),
  AlarmSeverity: upperCaseEnum(SEVERITIES),
  RuleKind: upperCaseEnum(RULE_KINDS),
  JSON: JSONScalar,
  RuleActionKind: { COMMAND: 'command', SET_DESIRED_STATE: 'setDesiredState' },
  RuleActionTrigger: upperCaseEnum(RULE_ACTION_TRIGGERS),
  Query: {
    async rules(_: unknown, args: Args, ctx: RulesContext): Promise<RuleConnection> {
      const { orgId } = authorize(ctx.identity, READ);
      const first = checkFirst((args.first as number | null | undefined) ?? 50, MAX_RULE_PAGE);
      const f = check(ruleFilterSchema, args.filter, 'filter') ?? {};
      const filter: RuleFilter = {
        enabled: f.enabled ?? undefined,
        metric: f.metric ?? undefined,
        search: f.search || undefined,
      };
      const after = typeof args.after === 'string' ? parseRuleCursor(args.after) : undefined;
      const rows = await ctx.repos.rules.list(orgId, { limit: first + 1, after, filter });
      const edges = rows.slice(0, first).map((r) => {
        ctx.loaders.rule.prime(r.id, r);
        return { cursor: encodeCursor([r.createdAtText, r.id]), node: r };
      });
      return { edges, pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null }, orgId, filter };
    },
    rule(_: unknown, args: Args, ctx: RulesContext) {
      authorize(ctx.identity, READ);
      return ctx.loaders.rule.load(checkId(args.id));
    },
  },
  Mutation: {
    createRule(_: unknown, args: Args, ctx: RulesContext) {
      const identity = authorize(ctx.identity, WRITE);
      return ctx.repos.rules.create(identity, parseRuleInput(args.input));
    },
    updateRule(_: unknown, args: Args, ctx: RulesContext) {
      const identity = authorize(ctx.identity, WRITE);
      const id = checkId(args.id);
      return ctx.repos.rules.update(identity, id, parseRulePatch((args.input ?? {}) as Args));
    },
    async deleteRule(_: unknown, args: Args, ctx: RulesContext) {
      const identity = authorize(ctx.identity, WRITE);
      await ctx.repos.rules.delete(identity, checkId(args.id));
      return true;
    },
    async dryRunRule(_: unknown, args: Args, ctx: RulesContext) {
      const { orgId } = authorize(ctx.identity, WRITE);
      const def = parseRuleInput(args.input);
      const first = checkFirst((args.first as number | null | undefined) ?? 100, MAX_DRY_RUN_MATCHES);
      const window = parseDryRunWindow(args.window);
      const rule = compileWaitRule(def);
      const metrics = ruleMetrics(def);
      if (window) {
        const w = await ctx.repos.rules.windowReadings(orgId, def, metrics, window.from, window.to);
        const matches: { device: { id: string }; value: number | null; ts: Date }[] = [];
        let raises = 0;
        let matching = 0;
        for (const [deviceId, readings] of w.byDevice) {
          const events = replay(rule, readings, window.from.getTime(), window.to.getTime()).filter((e) => e.change === 'raise');
          if (!events.length) continue;
          raises += events.length;
          matching++;
          const e = events[0] as (typeof events)[number];
          if (matches.length < first) matches.push({ device: { id: deviceId }, value: e.value, ts: new Date(e.ts) });
        }
        const evaluated = [...w.byDevice.values()].filter((r) => r.length > 0).length;
        return { devicesInScope: w.devicesInScope, evaluated, matching, truncated: w.truncated, matches, readings: w.readings, raises };
      }
      const scope = await ctx.repos.rules.scopeReadings(orgId, def, metrics);
      const now = Date.now();
      const matches: { device: { id: string }; value: number | null; ts: Date }[] = [];
      let matching = 0;
      let evaluated = 0;
      for (const d of scope.devices) {
        const hit = matchesNow(rule, d.latest, now);
        if (hit === null) continue;
        evaluated++;
        if (!hit.match) continue;
        matching++;
        if (matches.length < first) matches.push({ device: { id: d.deviceId }, value: hit.value, ts: new Date(hit.ts) });
      }
      return { devicesInScope: scope.devicesInScope, evaluated, matching, truncated: scope.truncated, matches, readings: 0, raises: 0 };
    },
  },
  RuleConnection: {
    totalCount: (c: RuleConnection, _: Args, ctx: RulesContext) => ctx.repos.rules.count(c.orgId, c.filter),
  },
  Rule: {
    /** Rules of other organizations (and malformed ids) resolve to null; deleted rules still resolve. */
    __resolveReference(ref: { id: unknown }, ctx: RulesContext) {
      authorize(ctx.identity, READ);
      return typeof ref.id === 'string' ? ctx.loaders.rule.load(ref.id) : null;
    },
    metrics: (r: RuleRow) => ruleMetrics(r),
    actions: (r: RuleRow) => r.actions ?? [],
    site: (r: RuleRow) => (r.siteId ? { id: r.siteId } : null),
    profile: (r: RuleRow) => (r.profileId ? { id: r.profileId } : null),
    stats: (r: RuleRow, _: Args, ctx: RulesContext) => ctx.loaders.stats.load(r.id),
    executions(r: RuleRow, args: Args, ctx: RulesContext) {
      const first = checkFirst((args.first as number | null | undefined) ?? 20, MAX_EXECUTIONS);
      return ctx.loaders.executions.load({ ruleId: r.id, first });
    },
  },
} satisfies GraphQLResolverMap<RulesContext>;

/**
 * Whether a device's latest values meet a rule's condition now (durations and repeats are not
 * judged from one value); NO_DATA: no reading of the metric for `noDataSeconds`. Null when the device
 * lacks a value the condition needs.
 */
function matchesNow(
  rule: WaitRule,
  latest: Record<string, Sample>,
  now: number,
): { match: boolean; value: number | null; ts: number } | null {
  const metric = rule.metrics[0] as string;
  if (rule.kind === 'no_data') {
    const last = latest[metric];
    return { match: !last || now - last[0] >= (rule.noDataMs ?? 0), value: last?.[1] ?? null, ts: last?.[0] ?? now };
  }
  const ok = evaluate(rule.expr as NonNullable<WaitRule['expr']>, { latest });
  if (ok === null) return null;
  const ts = Math.max(...rule.metrics.map((m) => latest[m]?.[0] ?? 0));
  return { match: ok, value: latest[metric]?.[1] ?? null, ts };
}

/** The resolver map of the rules subgraph (the same export in every subgraph's `resolvers.ts`). */
export function createResolvers(config?: Config): GraphQLResolverMap<RulesContext> {
  const programs = programResolvers({ SOLAR_CLUSTER_DEGREES: config?.SOLAR_CLUSTER_DEGREES ?? DEFAULT_CELL_DEGREES });
  const schedules = scheduleResolvers();
  const notifications = notificationResolvers({ allow: parseAllowlist(config?.NOTIFY_WEBHOOK_ALLOW ?? '') });
  return {
    ...resolvers,
    ...programs,
    ...schedules,
    ...notifications,
    Query: { ...resolvers.Query, ...programs.Query, ...schedules.Query, ...notifications.Query },
    Mutation: { ...resolvers.Mutation, ...programs.Mutation, ...schedules.Mutation, ...notifications.Mutation },
  } as GraphQLResolverMap<RulesContext>;
}
