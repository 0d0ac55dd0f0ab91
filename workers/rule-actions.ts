import { Queue } from 'bullmq';
import { COMMANDS_QUEUE, dispatchJobs } from '../lib/contracts/commands.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import type { Tx } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { type ActionResult, type FiredActions, parseRuleActions, type RuleAction, runRuleActions } from '../lib/rule-actions.js';

const invalidTotal = counter('rulr_rule_actions_invalid_total', 'Stored rule actions that could not be read (the rule still evaluates)');

export interface RuleActionsOptions {
  /** `COMMANDS_DEFAULT_TIMEOUT_S` @default 30 */
  timeoutS?: number;
  /** `COMMANDS_DEFAULT_EXPIRY_S` @default 86400 */
  expiryS?: number;
}

/**
 * The rules' device actions in the workers (lib/rule-actions.ts): run in the evaluation's transaction
 * (so a command is queued exactly when its alarm change commits), then a `dispatch` job after commit
 * makes the command dispatcher send at once (its sweep would find the marked devices anyway).
 */
export class RuleActionRunner {
  private readonly queue: Queue;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly logger: Logger,
    private readonly o: RuleActionsOptions = {},
  ) {
    this.queue = new Queue(COMMANDS_QUEUE, { connection: redis, prefix: queuePrefix(prefix) });
  }

  /** Runs the fired actions in `tx`; refused ones (the device's profile does not accept the command) are logged and counted. */
  run(tx: Tx, orgId: string, fired: readonly FiredActions[]): Promise<ActionResult> {
    return runRuleActions(tx, orgId, fired, {
      timeoutS: this.o.timeoutS ?? 30,
      expiryS: this.o.expiryS ?? 86_400,
      onRefused: (f, reason) => this.logger.warn({ orgId, ruleId: f.ruleId, deviceId: f.deviceId, reason }, 'rule action refused'),
    });
  }

  /** After commit: `dispatch` jobs for the marked devices; a failure is logged (the dispatch sweep sends them). */
  async dispatch(orgId: string, deviceIds: readonly string[]): Promise<void> {
    if (!deviceIds.length) return;
    try {
      await this.queue.addBulk(dispatchJobs(orgId, deviceIds));
    } catch (e) {
      this.logger.warn({ orgId, err: (e as Error).message }, 'rule actions: dispatch job not added; the sweep sends the commands');
    }
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}

/** Stored actions, or none when they cannot be read (counted and logged by the caller's rule load). */
export function safeActions(raw: unknown): RuleAction[] {
  try {
    return parseRuleActions(raw, 'actions');
  } catch {
    invalidTotal.inc();
    return [];
  }
}
