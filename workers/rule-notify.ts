import { Queue } from 'bullmq';
import { NOTIFY_QUEUE, notifyJob } from '../lib/contracts/notifications.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { parseRuleNotify, type RuleAlarmChange, type RuleNotify, ruleNotification } from '../lib/rule-notify.js';

const enqueuedTotal = counter('rulr_rule_notify_total', 'Notify requests of rules with a notify action, by outcome', ['outcome']);

/**
 * The rules' notify action: after an evaluation committed, one `notify` job per alarm change of a
 * rule that asks for it (lib/rule-notify.ts builds it, lib/contracts/notifications.ts checks it). The
 * job id follows the alarm and the change, so a retried evaluation or a second process adds it once.
 */
export class RuleNotifier {
  private readonly queue: Queue;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly logger: Logger,
  ) {
    this.queue = new Queue(NOTIFY_QUEUE, { connection: redis, prefix: queuePrefix(prefix) });
  }

  /** Adds the jobs; a failure is logged and counted (the alarms are stored; see docs/alarms-rules.md). */
  async enqueue(changes: readonly RuleAlarmChange[]): Promise<void> {
    const jobs = [];
    for (const c of changes) {
      try {
        const input = ruleNotification(c);
        if (input) jobs.push(notifyJob(input));
      } catch (e) {
        enqueuedTotal.inc({ outcome: 'invalid' });
        this.logger.warn({ ruleId: c.ruleId, err: (e as Error).message }, 'rule notify request refused');
      }
    }
    if (!jobs.length) return;
    try {
      await this.queue.addBulk(jobs);
      enqueuedTotal.inc({ outcome: 'enqueued' }, jobs.length);
    } catch (e) {
      enqueuedTotal.inc({ outcome: 'failed' }, jobs.length);
      this.logger.warn({ err: (e as Error).message, jobs: jobs.length }, 'rule notify requests could not be enqueued');
    }
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}

/** A stored notify action, or null when there is none or it cannot be read (counted; the rule still evaluates). */
export function safeNotify(raw: unknown): RuleNotify | null {
  try {
    return parseRuleNotify(raw);
  } catch {
    enqueuedTotal.inc({ outcome: 'invalid' });
    return null;
  }
}
