import { sql } from 'kysely';
import { type CommandChange, historyEntry } from './commands.js';
import { commandJobUpdatedEvent, eventsChannel } from './contracts/events.js';
import type { Db, Tx } from './db.js';
import type { Redis } from './redis.js';

/**
 * Fleet jobs as both roles that touch them share them (docs/commands.md, "Fleet jobs"): the
 * progress of a job from its commands' statuses, the abort rule, the rollout rate, and the
 * set-based statements the commands subgraph (cancel) and the workers' job runner (abort) both run.
 * The pure parts are unit-tested in `command-jobs.test.ts`.
 */

export const JOB_STATUSES = ['RUNNING', 'PAUSED', 'CANCELED', 'ABORTED', 'COMPLETED'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
/** Statuses in which a job releases no more devices and its unreleased targets count as CANCELED. */
export const STOPPED_STATUSES = ['CANCELED', 'ABORTED'] as const satisfies readonly JobStatus[];
export const isStopped = (s: string) => s === 'CANCELED' || s === 'ABORTED';

/** Most devices one job may target. */
export const MAX_JOB_DEVICES = 100_000;
/** Highest rollout rate, also the cap of a growing one (devices per minute). */
export const MAX_ROLLOUT_PER_MINUTE = 100_000;
/** Most devices released in one statement (one tick of a job without a rate releases at most this many). */
export const RELEASE_SLICE = 2000;
/** A rate-limited job catches up at most this many seconds of rollout after a stall (workers down, paused). */
export const ROLLOUT_BURST_S = 10;

/** How many of a job's targets are in each state; sums to `total`. */
export interface JobProgress {
  total: number;
  queued: number;
  sent: number;
  delivered: number;
  succeeded: number;
  failed: number;
  expired: number;
  canceled: number;
}

export const emptyProgress = (): JobProgress => ({
  total: 0,
  queued: 0,
  sent: 0,
  delivered: 0,
  succeeded: 0,
  failed: 0,
  expired: 0,
  canceled: 0,
});

/**
 * The progress of a job from the counts of its commands by status: targets not released yet are
 * `queued` while the job may still release them, `canceled` once it was canceled or aborted.
 */
export function progressOf(
  counts: Readonly<Record<string, number>>,
  job: { total: number; released: number; status: string },
): JobProgress {
  const unreleased = Math.max(0, job.total - job.released);
  const n = (s: string) => counts[s] ?? 0;
  return {
    total: job.total,
    queued: n('QUEUED') + (isStopped(job.status) ? 0 : unreleased),
    sent: n('SENT'),
    delivered: n('DELIVERED'),
    succeeded: n('SUCCEEDED'),
    failed: n('FAILED'),
    expired: n('EXPIRED'),
    canceled: n('CANCELED') + (isStopped(job.status) ? unreleased : 0),
  };
}

/** Commands of the job that may still change (QUEUED, SENT, DELIVERED) plus targets not released yet. */
export const activeOf = (p: JobProgress) => p.queued + p.sent + p.delivered;

/** `abortWhen`: abort once `failedPercent` of the ended commands failed, counted after `minDevices` ended. */
export interface AbortRule {
  failedPercent: number;
  minDevices: number;
}

/**
 * Why the job must abort, or null. Ended = SUCCEEDED + FAILED + EXPIRED (a cancel is a person's
 * decision, not the device's); failed = FAILED (the device's answer, or no answer within the
 * timeout) + EXPIRED (never reached it in time).
 */
export function abortReason(p: JobProgress, rule: AbortRule | null): string | null {
  if (!rule) return null;
  const failures = p.failed + p.expired;
  const ended = p.succeeded + failures;
  if (ended < rule.minDevices || ended === 0) return null;
  const pct = (failures * 100) / ended;
  if (pct < rule.failedPercent) return null;
  return `${failures} of ${ended} ended commands failed or expired (${Number(pct.toFixed(2))} %), at or above the abort threshold of ${rule.failedPercent} % after at least ${rule.minDevices} devices`;
}

/** The rollout of a job: a token bucket of `perMinute` devices, optionally growing with successes. */
export interface Rollout {
  /** null: no rate, release as fast as slices go */
  perMinute: number | null;
  /** the rate is multiplied by `factor` every `every` succeeded devices */
  increase: { factor: number; every: number } | null;
}

/** The rate in force (devices per minute) after `succeeded` devices succeeded. */
export function currentRate(r: Rollout, succeeded: number): number | null {
  if (r.perMinute === null) return null;
  if (!r.increase) return r.perMinute;
  const steps = Math.floor(succeeded / r.increase.every);
  return Math.min(MAX_ROLLOUT_PER_MINUTE, Math.floor(r.perMinute * r.increase.factor ** Math.min(steps, 200)));
}

/**
 * How many devices a tick at `now` may release, and the bucket after it. The bucket fills at the
 * current rate since `at` (the previous tick, or the resume), holds at most
 * {@link ROLLOUT_BURST_S} seconds of rollout (at least one device), and never gives more than
 * `slice` or `remaining`.
 */
export function releasable(
  r: Rollout,
  bucket: { credit: number; at: Date },
  o: { now: Date; succeeded: number; remaining: number; slice?: number },
): { count: number; credit: number } {
  const slice = Math.min(o.slice ?? RELEASE_SLICE, Math.max(0, o.remaining));
  const rate = currentRate(r, o.succeeded);
  if (rate === null) return { count: slice, credit: bucket.credit };
  const elapsed = Math.max(0, o.now.getTime() - bucket.at.getTime());
  const cap = Math.max(1, (rate * ROLLOUT_BURST_S) / 60);
  const credit = Math.min(cap, bucket.credit + (rate * elapsed) / 60_000);
  const count = Math.min(slice, Math.floor(credit + 1e-9));
  return { count, credit: Math.max(0, credit - count) };
}

/** The counts of each job's commands by status (one grouped query through `commands_job_device_idx`). */
export async function commandCounts(db: Db | Tx, jobIds: readonly string[]): Promise<Map<string, Record<string, number>>> {
  const out = new Map<string, Record<string, number>>();
  if (!jobIds.length) return out;
  const { rows } = await sql<{ job_id: string; status: string; n: number }>`
    select job_id, status, count(*)::int as n from commands where job_id = any(${jobIds}::uuid[]) group by job_id, status`.execute(db);
  for (const r of rows) {
    const m = out.get(r.job_id) ?? {};
    m[r.status] = r.n;
    out.set(r.job_id, m);
  }
  return out;
}

/**
 * Cancels the job's commands still QUEUED (set-based, with a history entry each), in `tx`. A
 * command a worker is handing to the broker at that instant may still reach the device; its
 * answer is then refused as `command_ended` and counted (the same as for `cancelCommand`).
 */
export async function cancelQueuedCommands(
  tx: Tx,
  orgId: string,
  jobId: string,
  o: { actor: string; why: string; now: Date },
): Promise<CommandChange[]> {
  const entry = JSON.stringify([historyEntry('CANCELED', o.now, { by: o.actor, job: jobId, reason: o.why })]);
  const { rows } = await sql<{ id: string; device_id: string }>`
    update commands set status = 'CANCELED', completed_at = ${o.now}, updated_at = ${o.now}, due_at = null,
      error = ${o.why}, history = history || ${entry}::jsonb
    where job_id = ${jobId} and org_id = ${orgId} and status = 'QUEUED'
    returning id, device_id`.execute(tx);
  return rows.map((r) => ({ id: r.id, orgId, deviceId: r.device_id, status: 'CANCELED', jobId }));
}

/** Publishes `commandJobUpdated` for each job (one pipeline). Never throws: the change is committed; `onError` logs a lost event. */
export async function publishJobUpdates(
  redis: Redis,
  prefix: string,
  jobs: readonly { id: string; orgId: string; status: string }[],
  onError: (err: unknown) => void,
  now = Date.now(),
): Promise<void> {
  if (!jobs.length) return;
  try {
    const p = redis.pipeline();
    for (const j of jobs) p.publish(eventsChannel(prefix, j.orgId), commandJobUpdatedEvent(j, now));
    await p.exec();
  } catch (err) {
    onError(err);
  }
}
