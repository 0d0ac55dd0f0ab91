import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import type { Config } from '../../lib/config.js';
import { DateTimeScalar, encodeCursor, upperCaseEnum } from '../../lib/graphql-scalars.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import { DEFAULT_CELL_DEGREES } from '../../lib/programs-assign.js';
import { OPERATORS, passes, SEVERITIES } from '../../lib/rules.js';
import type { RulesLoaders } from './loaders.js';
import { type ProgramLoaders, programResolvers } from './programs-resolvers.js';
import type { RuleFilter, RuleRow, RulesRepositories } from './repositories/index.js';
import {
  check,
  checkFirst,
  checkId,
  MAX_DRY_RUN_MATCHES,
  MAX_EXECUTIONS,
  MAX_RULE_PAGE,
  parseRuleCursor,
  parseRuleInput,
  parseRulePatch,
  ruleFilterSchema,
} from './validation.js';

/** Per-request context of the rules subgraph. */
export interface RulesContext {
  identity: Identity;
  repos: RulesRepositories;
  loaders: RulesLoaders;
  programLoaders: ProgramLoaders;
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
      const rule = parseRuleInput(args.input);
      const first = checkFirst((args.first as number | null | undefined) ?? 100, MAX_DRY_RUN_MATCHES);
      const scope = await ctx.repos.rules.scopeReadings(orgId, rule);
      const matching = scope.values.filter((r) => passes(rule.operator, rule.threshold, r.value));
      return {
        devicesInScope: scope.devicesInScope,
        evaluated: scope.values.length,
        matching: matching.length,
        truncated: scope.truncated,
        matches: matching.slice(0, first).map((m) => ({ device: { id: m.deviceId }, value: m.value, ts: m.ts })),
      };
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
    site: (r: RuleRow) => (r.siteId ? { id: r.siteId } : null),
    profile: (r: RuleRow) => (r.profileId ? { id: r.profileId } : null),
    stats: (r: RuleRow, _: Args, ctx: RulesContext) => ctx.loaders.stats.load(r.id),
    executions(r: RuleRow, args: Args, ctx: RulesContext) {
      const first = checkFirst((args.first as number | null | undefined) ?? 20, MAX_EXECUTIONS);
      return ctx.loaders.executions.load({ ruleId: r.id, first });
    },
  },
} satisfies GraphQLResolverMap<RulesContext>;

/** The resolver map of the rules subgraph (the same export in every subgraph's `resolvers.ts`). */
export function createResolvers(config?: Config): GraphQLResolverMap<RulesContext> {
  const programs = programResolvers({ SOLAR_CLUSTER_DEGREES: config?.SOLAR_CLUSTER_DEGREES ?? DEFAULT_CELL_DEGREES });
  return {
    ...resolvers,
    ...programs,
    Query: { ...resolvers.Query, ...programs.Query },
    Mutation: { ...resolvers.Mutation, ...programs.Mutation },
  } as GraphQLResolverMap<RulesContext>;
}
