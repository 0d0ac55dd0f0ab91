/**
 * What every BullMQ queue between roles shares: its keys live under one prefix per deployment,
 * so a producer and its consumers must build it the same way. Each queue's name, job builder and
 * job parser live in the module of its contract (`rule-eval.ts`, …).
 */

/** BullMQ's key prefix for every queue of a deployment: `<REDIS_PREFIX>bull`. */
export const queuePrefix = (redisPrefix: string) => `${redisPrefix}bull`;

/** The command dispatcher's queue (jobs `dispatch`, `replies`, `online`: ./commands.ts). */
export { COMMANDS_QUEUE } from './commands.js';

/** The notification requests' queue (job builder and parser in `notifications.ts`). */
export const NOTIFY_QUEUE = 'notify';
