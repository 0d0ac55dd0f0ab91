import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import type { Identity } from '../../lib/identity.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { MetricsRepository } from './repository.js';
import { createResolvers, type MetricsContext } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * Telemetry reads: latest values and status from the Redis status cache, series and energy from
 * PostgreSQL (the read replica when `DATABASE_READ_URL` is set).
 */
export function createSubgraph(ctx: RoleContext): SubgraphModule<MetricsContext> {
  const schema = buildSubgraphSchema([{ typeDefs, resolvers: createResolvers(ctx.config) }]);
  let repo: MetricsRepository | undefined;
  return {
    name: 'metrics',
    schema,
    context(identity: Identity): MetricsContext {
      repo ??= new MetricsRepository(ctx.readDb, ctx.redis, ctx.config.REDIS_PREFIX);
      return { identity, repo, loaders: createLoaders(repo, identity.orgId) };
    },
  };
}
