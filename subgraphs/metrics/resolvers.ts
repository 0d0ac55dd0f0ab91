import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import type { Config } from '../../lib/config.js';
import { numericLatest } from '../../lib/contracts/device-state.js';
import { DateTimeScalar, encodeCursor } from '../../lib/graphql-scalars.js';
import { authorize, type Identity } from '../../lib/identity.js';
import type { MetricsLoaders } from './loaders.js';
import type { MetricsRepository, SiteRow } from './repository.js';
import { checkDeadLetterPage, decodeDeadLetterCursor, parseAggregate, planSeries } from './validation.js';

/** Per-request context of the metrics subgraph. */
export interface MetricsContext {
  identity: Identity;
  repo: MetricsRepository;
  loaders: MetricsLoaders;
}

const READ = { role: 'viewer', scope: 'telemetry:read' } as const;
const ADMIN = { role: 'admin', scope: '*' } as const;

interface DeviceRef {
  id: string;
}

interface SeriesArgs {
  metric: string;
  from: Date;
  to: Date;
  interval?: string | null;
  aggregate?: string | null;
}

const resolvers = {
  DateTime: DateTimeScalar,
  Query: {
    async deadLetters(_: unknown, args: { first?: number | null; after?: string | null; reason?: string | null }, ctx: MetricsContext) {
      const id = authorize(ctx.identity, ADMIN);
      const first = checkDeadLetterPage(args.first ?? 50);
      const rows = await ctx.repo.deadLetters(id.orgId, {
        first,
        after: args.after ? decodeDeadLetterCursor(args.after) : undefined,
        reason: args.reason,
      });
      const page = rows.slice(0, first);
      const edges = page.map((r) => ({ cursor: encodeCursor([r.receivedAtText, r.id]), node: r }));
      return { edges, pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null } };
    },
  },
  Device: {
    /** A device of another organization (or none) resolves to null: no field of it is ever read. */
    async __resolveReference(ref: DeviceRef, ctx: MetricsContext): Promise<DeviceRef | null> {
      authorize(ctx.identity, READ);
      return (await ctx.loaders.device.load(ref.id)) ? { id: ref.id } : null;
    },
    latest: (d: DeviceRef, _: unknown, ctx: MetricsContext) => ctx.loaders.latest.load(d.id),
    status: (d: DeviceRef, _: unknown, ctx: MetricsContext) => ctx.loaders.status.load(d.id),
    async series(d: DeviceRef, a: SeriesArgs, ctx: MetricsContext) {
      const plan = planSeries(a.from, a.to, a.interval);
      return ctx.repo.series(ctx.identity.orgId, d.id, a.metric, plan, parseAggregate(a.aggregate));
    },
    async energy(d: DeviceRef, a: { from: Date; to: Date; interval?: string | null }, ctx: MetricsContext) {
      const plan = planSeries(a.from, a.to, a.interval ?? '1h');
      return ctx.repo.energy(ctx.identity.orgId, d.id, plan.from, plan.to, plan.intervalMs);
    },
  },
  Site: {
    async __resolveReference(ref: { id: string }, ctx: MetricsContext): Promise<SiteRow | null> {
      authorize(ctx.identity, READ);
      return ctx.loaders.site.load(ref.id);
    },
    async power(s: SiteRow, _: unknown, ctx: MetricsContext): Promise<number | null> {
      const ids = await ctx.repo.siteDeviceIds(ctx.identity.orgId, s.path);
      let total: number | null = null;
      for (const raw of await ctx.repo.latestField(ids, 'power')) {
        const reading = numericLatest(raw);
        if (reading) total = (total ?? 0) + reading.value;
      }
      return total;
    },
    async energyPerDay(s: SiteRow, a: { from: Date; to: Date }, ctx: MetricsContext) {
      const plan = planSeries(a.from, a.to, '1d');
      return ctx.repo.siteEnergy(ctx.identity.orgId, s.path, plan.from, plan.to);
    },
  },
} satisfies GraphQLResolverMap<MetricsContext>;

/** The resolver map of the metrics subgraph (the same export in every subgraph's `resolvers.ts`). */
export function createResolvers(_config?: Config): GraphQLResolverMap<MetricsContext> {
  return resolvers;
}
