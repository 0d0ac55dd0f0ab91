import { buildSubgraphSchema } from '@apollo/subgraph';
import { Queue } from 'bullmq';
import type { DocumentNode } from 'graphql';
import { publishJobUpdates } from '../../lib/command-jobs.js';
import { publishCommandChanges } from '../../lib/commands.js';
import { COMMANDS_QUEUE, commandJobsWakeChannel, dispatchJobs, encodeJobWake } from '../../lib/contracts/commands.js';
import { queuePrefix } from '../../lib/contracts/queues.js';
import type { RoleContext } from '../../lib/role.js';
import { readTypeDefs, type SubgraphModule } from '../../lib/subgraph.js';
import { createLoaders } from './loaders.js';
import { type CommandsRepositories, createRepositories } from './repositories/index.js';
import { type AfterCommandChange, type AfterJobChange, type CommandsContext, createResolvers } from './resolvers.js';

export const typeDefs: DocumentNode = readTypeDefs(import.meta.url);

/**
 * Commands: sending, cancelling and reading device commands with their evidence, fleet jobs over
 * a site subtree, desired state, and what profiles declare. A committed command is woken in the workers with a `dispatch` job and
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
  const afterJob: AfterJobChange = async (w) => {
    const prefix = ctx.config.REDIS_PREFIX;
    const warn = (what: string) => (err: unknown) => ctx.logger.warn({ err, jobId: w.row.id }, what);
    if (w.dispatch.length)
      try {
        queue ??= new Queue(COMMANDS_QUEUE, { connection: ctx.redis, prefix: queuePrefix(prefix) });
        await queue.addBulk(dispatchJobs(w.row.org_id, w.dispatch));
      } catch (err) {
        warn('dispatch jobs not added (the sweep sends the commands)')(err);
      }
    // a created or resumed job: the workers' runner releases its first devices now, not at its next look
    if (w.changed && w.row.status === 'RUNNING')
      await ctx.redis
        .publish(commandJobsWakeChannel(prefix), encodeJobWake(w.row.id))
        .catch(warn('job runner not woken (it looks within 250 ms)'));
    await publishCommandChanges(ctx.db, ctx.redis, prefix, w.changes, warn('commandUpdated events not published'));
    await publishJobUpdates(
      ctx.redis,
      prefix,
      [{ id: w.row.id, orgId: w.row.org_id, status: w.row.status }],
      warn('commandJobUpdated event not published'),
    );
  };
  let repos: CommandsRepositories | undefined;
  return {
    name: 'commands',
    schema,
    context(identity): CommandsContext {
      repos ??= createRepositories(ctx.db);
      return { identity, repo: repos.commands, jobs: repos.jobs, loaders: createLoaders(repos, identity.orgId), after, afterJob };
    },
  };
}
