import { readFileSync } from 'node:fs';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';
import type { Identity } from '../../lib/identity.js';
import type { RoleContext } from '../../lib/role.js';
import type { SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { RulesRepository } from './repository.js';
import { type RulesContext, resolvers } from './resolvers.js';

/** The subgraph's SDL, read beside this module (the build copies `schema.graphql` next to the compiled file). */
export const rulesTypeDefs = parse(readFileSync(new URL('./schema.graphql', import.meta.url), 'utf8'));

/**
 * Threshold rules: their definitions (PostgreSQL, primary database so a write is visible to the
 * next read), evaluation counters (Redis) and dry runs against the devices' latest values.
 */
export function createRulesSubgraph(ctx: RoleContext): SubgraphModule<RulesContext> {
  const schema = buildSubgraphSchema([{ typeDefs: rulesTypeDefs, resolvers: resolvers as never }]);
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
