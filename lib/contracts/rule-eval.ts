import type { JobsOptions } from 'bullmq';
import { countRejected, isEpochMs, isRecord, isUuid, reject } from './contract.js';

/**
 * The `rule-eval` queue: ingest adds one job per organization per committed batch
 * ({@link ruleEvalJob}); the workers' rule evaluator consumes it ({@link parseRuleEvalJob}).
 * BullMQ keys live under `queuePrefix(REDIS_PREFIX)` (./queues.ts) on both sides.
 */

const CONTRACT = 'rule-eval';

/** Name of the BullMQ queue ingest fills with one job per committed batch per organization. */
export const RULE_EVAL_QUEUE = 'rule-eval';

/** One reading of a job: the newest of one device and metric in the batch. */
export interface RuleEvalReading {
  deviceId: string;
  metric: string;
  /** ms */
  ts: number;
  /** numbers, booleans as 1/0; null for strings (never compared with a threshold) */
  value: number | null;
}

/** What a `rule-eval` job carries: the newest reading per device and metric of one batch. */
export interface RuleEvalJob {
  orgId: string;
  readings: RuleEvalReading[];
}

/**
 * How a job is added. Retried with backoff: a worker that loses PostgreSQL for a while evaluates
 * the batch later.
 */
export const RULE_EVAL_JOB_OPTIONS = {
  removeOnComplete: 1000,
  removeOnFail: 5000,
  attempts: 8,
  backoff: { type: 'exponential', delay: 500 },
} as const satisfies JobsOptions;

/** One job, as `Queue.addBulk` takes it. */
export function ruleEvalJob(job: RuleEvalJob): { name: 'batch'; data: RuleEvalJob; opts: JobsOptions } {
  return { name: 'batch', data: job, opts: RULE_EVAL_JOB_OPTIONS };
}

const isReading = (r: unknown): r is RuleEvalReading =>
  isRecord(r) &&
  isUuid(r.deviceId) &&
  typeof r.metric === 'string' &&
  isEpochMs(r.ts) &&
  (r.value === null || (typeof r.value === 'number' && Number.isFinite(r.value)));

/**
 * A job's data. Throws a counted ContractError when the job itself is unusable (not an object,
 * `orgId` not a uuid, `readings` not an array); a malformed reading (device id not a uuid, no
 * metric, `ts` not a millisecond timestamp, `value` neither a finite number nor null) is skipped
 * and counted in `invalid`, and the job's other readings are kept.
 */
export function parseRuleEvalJob(data: unknown): { job: RuleEvalJob; invalid: number } {
  if (!isRecord(data)) return reject(CONTRACT, 'job data is not an object');
  if (!isUuid(data.orgId)) return reject(CONTRACT, 'orgId must be a uuid');
  if (!Array.isArray(data.readings)) return reject(CONTRACT, 'readings must be an array');
  const readings: RuleEvalReading[] = [];
  for (const r of data.readings as unknown[]) if (isReading(r)) readings.push(r);
  const invalid = data.readings.length - readings.length;
  countRejected(CONTRACT, invalid);
  return { job: { orgId: data.orgId, readings }, invalid };
}
