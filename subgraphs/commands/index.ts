import { buildSubgraphSchema } from '@apollo/subgraph';
import { Queue } from 'bullmq';
import type { DocumentNode } from 'graphql';
import { publishCommandChanges } from '../../lib/commands.js';
import { COMMANDS_QUEUE, dispatchJobs } from '../../lib/contracts/commands.js';
import { queuePrefix } from '../../lib/contracts/queues.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { CommandsRepository } from './repository.js';
import { type AfterCommandChange, type CommandsContext, createResolvers } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * Commands: sending, cancelling and reading device commands with their evidence, desired state,
 * and what profiles declare. A committed command is woken in the workers with a `dispatch` job and
 * announced with `commandUpdated`; if the job is lost the workers' sweep sends it anyway
 * (`device_states.pending_dispatch`, written in the command's transaction). Uses the primary database.
 */
export function createSubgraph(ctx: RoleContext): SubgraphModule<CommandsContext> {
  const schema = buildSubgraphSchema([{ typeDefs, resolvers: createResolvers(ctx.config) }]);
  let queue: Queue | undefined;
  const after: AfterCommandChange = async (change) => {
    try {
      queue ??= new Queue(COMMANDS_QUEUE, { connection: ctx.redis, prefix: queuePrefix(ctx.config.REDIS_PREFIX) });
      if (change.status === 'QUEUED' || change.status === 'CANCELED') await queue.addBulk(dispatchJobs(change.orgId, [change.deviceId]));
    } catch (err) {
      ctx.logger.warn({ err, commandId: change.id }, 'dispatch job not added (the sweep sends the command)');
    }
    await publishCommandChanges(ctx.db, ctx.redis, ctx.config.REDIS_PREFIX, [change], (err) =>
      ctx.logger.warn({ err, commandId: change.id }, 'commandUpdated event not published'),
    );
  };
  let repo: CommandsRepository | undefined;
  return {
    name: 'commands',
    schema,
    context(identity): CommandsContext {
      repo ??= new CommandsRepository(ctx.db);
      return { identity, repo, loaders: createLoaders(repo, identity.orgId), after };
    },
  };
}
