import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import type { Identity } from '../../lib/identity.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { createProgramLoaders } from './programs-resolvers.js';
import { createRepositories, type RulesRepositories } from './repositories/index.js';
import { createResolvers, type RulesContext } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * Threshold rules: their definitions (PostgreSQL, primary database so a write is visible to the
 * next read), evaluation counters (Redis) and dry runs against the devices' latest values; lighting
 * programs, calendars, assignments, overrides, solar events and program previews.
 */
export function createSubgraph(ctx: RoleContext): SubgraphModule<RulesContext> {
  const schema = buildSubgraphSchema([{ typeDefs, resolvers: createResolvers(ctx.config) }]);
  let repos: RulesRepositories | undefined;
  return {
    name: 'rules',
    schema,
    context(identity: Identity): RulesContext {
      repos ??= createRepositories({ db: ctx.db, redis: ctx.redis, prefix: ctx.config.REDIS_PREFIX, logger: ctx.logger });
      return {
        identity,
        repos,
        loaders: createLoaders(repos, identity.orgId),
        programLoaders: createProgramLoaders(repos, identity.orgId),
      };
    },
  };
}
