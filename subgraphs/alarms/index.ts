import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import { alarmChangedEvent, eventsChannel } from '../../lib/contracts/events.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { AlarmsRepository } from './repository.js';
import { type AlarmsContext, createResolvers, type PublishAlarmChange } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * Alarms: listing, counts and operators' actions (raise, acknowledge, clear, comment), with the
 * `alarmChanged` real-time event published on Redis after each committed change. Uses the primary
 * database (an operator's action must be visible to the next read).
 */
export function createSubgraph(ctx: RoleContext): SubgraphModule<AlarmsContext> {
  const schema = buildSubgraphSchema([{ typeDefs, resolvers: createResolvers(ctx.config) }]);
  const publish: PublishAlarmChange = async (orgId, { row, change, site }) => {
    if (!change) return;
    try {
      const event = alarmChangedEvent(orgId, change, { id: row.id, deviceId: row.device_id, severity: row.severity }, site, Date.now());
      await ctx.redis.publish(eventsChannel(ctx.config.REDIS_PREFIX, orgId), event);
    } catch (err) {
      ctx.logger.warn({ err, alarmId: row.id, change }, 'alarmChanged event not published');
    }
  };
  let repo: AlarmsRepository | undefined;
  return {
    name: 'alarms',
    schema,
    context(identity): AlarmsContext {
      repo ??= new AlarmsRepository(ctx.db);
      return { identity, repo, loaders: createLoaders(repo, identity.orgId), publish };
    },
  };
}
