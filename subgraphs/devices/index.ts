import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import { handoffKey } from '../../lib/contracts/broker-handoff.js';
import { type DeviceChange, publishDeviceChange } from '../../lib/contracts/device-changes.js';
import { createMailSender } from '../../lib/mail.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import type { PeopleServices } from './people.js';
import { createRepositories, type DevicesRepositories, PeopleThrottles, SessionStore } from './repositories/index.js';
import { createResolvers, type DevicesContext } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * The devices subgraph: organizations, sites, device profiles, devices, credentials, API keys,
 * people and their sessions. Uses the primary database (writes must be visible to the next read).
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
  let people: PeopleServices | undefined;
  const services = (): PeopleServices => {
    if (!people) {
      const c = ctx.config;
      const mail = createMailSender(c, ctx.logger.child({ component: 'mail' }));
      ctx.onClose(() => mail.close());
      people = {
        sessions: new SessionStore(ctx.redis, c.REDIS_PREFIX, { idleMs: c.SESSION_IDLE_S * 1000, maxAgeMs: c.SESSION_MAX_AGE_S * 1000 }),
        throttles: new PeopleThrottles(ctx.redis, c.REDIS_PREFIX, {
          maxFailures: c.LOGIN_MAX_FAILURES,
          failureWindowMs: c.LOGIN_FAILURE_WINDOW_S * 1000,
          lockoutMs: c.LOGIN_LOCKOUT_S * 1000,
          resetsPerHour: c.RESET_MAX_PER_HOUR,
        }),
        mail,
        logger: ctx.logger.child({ subgraph: 'devices', component: 'people' }),
      };
    }
    return people;
  };
  return {
    name: 'devices',
    schema,
    context(identity) {
      repos ??= createRepositories(ctx.db, repositories, {
        handoffKey: ctx.config.DYNSEC_ENABLED ? handoffKey(ctx.config.RULR_SECRET) : undefined,
      });
      return { identity, loaders: createLoaders(repos, identity.orgId), repos, notify, people: services() };
    },
  };
}
