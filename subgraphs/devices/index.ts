import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { DevicesRepository } from './repository.js';
import { createResolvers, type DevicesContext } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * The devices subgraph: organizations, sites, device profiles, devices, credentials, API keys and
 * `login`. Uses the primary database (writes must be visible to the next read).
 */
export function createSubgraph(
  ctx: RoleContext,
  /** a repository other than PostgreSQL's (bench:gateway's in-memory reference subgraph) */
  repository?: DevicesRepository,
): SubgraphModule<DevicesContext> {
  const schema = buildSubgraphSchema([
    {
      typeDefs,
      resolvers: createResolvers({
        secret: ctx.config.RULR_SECRET,
        issuer: ctx.config.JWT_ISSUER,
        ttlSeconds: ctx.config.JWT_TTL_SECONDS,
      }),
    },
  ]);
  let repo: DevicesRepository | undefined = repository;
  return {
    name: 'devices',
    schema,
    context(identity) {
      repo ??= new DevicesRepository(ctx.db);
      return { identity, loaders: createLoaders(repo, identity.orgId), repo };
    },
  };
}
