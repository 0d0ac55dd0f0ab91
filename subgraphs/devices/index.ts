import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import { handoffKey } from '../../lib/contracts/broker-handoff.js';
import { type DeviceChange, publishDeviceChange } from '../../lib/contracts/device-changes.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { createRepositories, type DevicesRepositories } from './repositories/index.js';
import { createResolvers, type DevicesContext } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * The devices subgraph: organizations, sites, device profiles, devices, credentials, API keys and
 * `login`. Uses the primary database (writes must be visible to the next read).
 */
export function createSubgraph(
  ctx: RoleContext,
  /** repositories other than PostgreSQL's (bench:gateway's in-memory reference subgraph) */
  repositories?: Partial<DevicesRepositories>,
): SubgraphModule<DevicesContext> {
  const schema = buildSubgraphSchema([
    {
      typeDefs,
      resolvers: createResolvers(ctx.config),
    },
  ]);
  let repos: DevicesRepositories | undefined;
  const notify = async (change: DeviceChange) => {
    try {
      await publishDeviceChange(ctx.redis, ctx.config.REDIS_PREFIX, change);
    } catch (e) {
      ctx.logger.warn(
        { err: (e as Error).message, kind: change.kind },
        'device-change notice not published (ingest catches up on its cache TTL)',
      );
    }
  };
  return {
    name: 'devices',
    schema,
    context(identity) {
      repos ??= createRepositories(ctx.db, repositories, {
        handoffKey: ctx.config.DYNSEC_ENABLED ? handoffKey(ctx.config.RULR_SECRET) : undefined,
      });
      return { identity, loaders: createLoaders(repos, identity.orgId), repos, notify };
    },
  };
}
