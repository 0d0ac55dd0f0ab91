import { buildSubgraphSchema } from '@apollo/subgraph';
import { Queue } from 'bullmq';
import type { DocumentNode } from 'graphql';
import { channelSecretKey } from '../../lib/contracts/channel-secret.js';
import { NOTIFY_QUEUE, type NotificationInput, notifyJob } from '../../lib/contracts/notifications.js';
import { queuePrefix } from '../../lib/contracts/queues.js';
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
 * programs, calendars, assignments, overrides, solar events and program previews; notification
 * channels, templates, recipient rules, escalation policies, preferences and the delivery log.
 */
export function createSubgraph(ctx: RoleContext): SubgraphModule<RulesContext> {
  const schema = buildSubgraphSchema([{ typeDefs, resolvers: createResolvers(ctx.config) }]);
  let repos: RulesRepositories | undefined;
  let queue: Queue | undefined;
  const notify = async (input: NotificationInput) => {
    queue ??= new Queue(NOTIFY_QUEUE, { connection: ctx.redis, prefix: queuePrefix(ctx.config.REDIS_PREFIX) });
    const job = notifyJob(input);
    await queue.add(job.name, job.data, job.opts);
  };
  return {
    name: 'rules',
    schema,
    context(identity: Identity): RulesContext {
      repos ??= createRepositories({
        db: ctx.db,
        redis: ctx.redis,
        prefix: ctx.config.REDIS_PREFIX,
        channelSecretKey: channelSecretKey(ctx.config.RULR_SECRET),
        logger: ctx.logger,
      });
      return {
        identity,
        repos,
        loaders: createLoaders(repos, identity.orgId),
        programLoaders: createProgramLoaders(repos, identity.orgId),
        notify,
      };
    },
  };
}
