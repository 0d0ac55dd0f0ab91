import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import type { Identity } from '../../lib/identity.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { RulesRepository } from './repository.js';
import { createResolvers, type RulesContext } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * Threshold rules: their definitions (PostgreSQL, primary database so a write is visible to the
 * next read), evaluation counters (Redis) and dry runs against the devices' latest values.
 */
export function createSubgraph(ctx: RoleContext): SubgraphModule<RulesContext> {
  const schema = buildSubgraphSchema([{ typeDefs, resolvers: createResolvers(ctx.config) }]);
  let repo: RulesRepository | undefined;
  return {
    name: 'rules',
    schema,
    context(identity: Identity): RulesContext {
      repo ??= new RulesRepository(ctx.db, ctx.redis, ctx.config.REDIS_PREFIX, ctx.logger);
      return { identity, repo, loaders: createLoaders(repo, identity.orgId) };
    },
  };
}
