import { readFileSync } from 'node:fs';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';
import { type DeviceChange, publishDeviceChange } from '../../lib/contracts/device-changes.js';
import type { RoleContext } from '../../lib/role.js';
import type { SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { DevicesRepository } from './repository.js';
import { createResolvers, type DevicesContext } from './resolvers.js';

/** The SDL, read beside this module (the build copies `schema.graphql` next to the compiled file). */
export const devicesTypeDefs = readFileSync(new URL('./schema.graphql', import.meta.url), 'utf8');

/**
 * The devices subgraph: organizations, sites, device profiles, devices, credentials, API keys and
 * `login`. Uses the primary database (writes must be visible to the next read).
 */
export function createDevicesSubgraph(
  ctx: RoleContext,
  /** a repository other than PostgreSQL's (bench:gateway's in-memory reference subgraph) */
  repository?: DevicesRepository,
): SubgraphModule<DevicesContext> {
  const schema = buildSubgraphSchema([
    {
      typeDefs: parse(devicesTypeDefs),
      resolvers: createResolvers({
        secret: ctx.config.RULR_SECRET,
        issuer: ctx.config.JWT_ISSUER,
        ttlSeconds: ctx.config.JWT_TTL_SECONDS,
      }),
    },
  ]);
  let repo: DevicesRepository | undefined = repository;
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
      repo ??= new DevicesRepository(ctx.db);
      return { identity, loaders: createLoaders(repo, identity.orgId), repo, notify };
    },
  };
}
