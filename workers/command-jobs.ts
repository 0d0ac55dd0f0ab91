import { Queue } from 'bullmq';
import { sql } from 'kysely';
import { audit } from '../lib/audit.js';
import {
  type AbortRule,
  abortReason,
  activeOf,
  cancelQueuedCommands,
  commandCounts,
  type JobProgress,
  progressOf,
  publishJobUpdates,
  RELEASE_SLICE,
  type Rollout,
  releasable,
} from '../lib/command-jobs.js';
import { type CommandChange, historyEntry, publishCommandChanges } from '../lib/commands.js';
import { COMMANDS_QUEUE, commandJobsWakeChannel, dispatchJobs, MAX_DISPATCH_DEVICES, parseJobWake } from '../lib/contracts/commands.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { type Db, type Tx, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import type { ClaimedCommand } from './commands.js';

/**
 * The fleet-job runner (docs/commands.md, "Fleet jobs"). Every tick it steps each job that is not
 * settled, each in its own transaction holding the job's row (`for update skip locked`: replicas
 * share the jobs, a restart resumes from the row):
 *
 * 1. progress from one grouped count of the job's commands;
 * 2. abort (RUNNING or PAUSED) when the failure share of ended commands reaches `abortWhen`: the
 *    job's QUEUED commands are CANCELED and the reason stored;
 * 3. release (RUNNING): the next slice of targets in device-id order that the rollout bucket
 *    allows becomes ordinary `commands` rows (one INSERT … SELECT), so one in flight per device, leases
 *    and the sweep apply to them as to any command. With a `sender` (the workers' dispatcher) the
 *    release claims them too, under the devices' `device_states` row locks as a dispatch would: the
 *    command of an online device with no active command is inserted with its lease (`attempts` 1), and
 *    only the others are marked `pending_dispatch` for the dispatcher;
 * 4. COMPLETED once every target was released and no command of the job is active;
 * 5. settled once stopped or completed and nothing of it can change any more.
 *
 * After the commit it publishes the claimed commands through the dispatcher (`sender.send`: PUBACK → SENT), without
 * waiting for them before the next release: at most `dispatchWindow` chunks are on their way at once. A claim whose
 * publish failed becomes a `dispatch` job (retried); one lost with the process lapses and the sweep offers it again
 * (`attempts` 2). Without a `sender` it marks every released device and adds `dispatch` jobs, which wait behind the
 * replies. Then it publishes `commandUpdated` / `commandJobUpdated`.
 * A new or resumed job is announced on {@link commandJobsWakeChannel}: the runner steps at once.
 */

const SYSTEM_ACTOR = 'system:command-jobs';

const releasedTotal = counter('rulr_command_job_released_total', 'Devices released by fleet jobs (commands queued)');
const jobsEndedTotal = counter('rulr_command_jobs_ended_total', 'Fleet jobs the runner ended, by status', ['status']);

export interface CommandJobRunnerOptions {
  db: Db;
  redis: Redis;
  /** `REDIS_PREFIX` */
  prefix: string;
  logger: Logger;
  /** `COMMANDS_SWEEP_MS` @default 1000 */
  tickMs?: number;
  /** most devices released per job per tick @default 2000 */
  slice?: number;
  /**
   * Tick interval while a job with a rollout rate still has devices to release: its bucket is drawn in smaller,
   * more frequent grants (a 1,000/s job releases ~250 every 250 ms rather than 1,000 every second), so the
   * dispatcher sends each grant sooner after it. @default 250 (never more than `tickMs`)
   */
  rolloutTickMs?: number;
  /** the rollout's clock (tests step it) @default () => new Date() */
  clock?: () => Date;
  /**
   * The workers' dispatcher (`CommandDispatcher`): the release claims the commands of online, idle devices itself and
   * hands them to `send`. Without it, the runner marks the released devices and adds `dispatch` jobs to the
   * `commands` queue, which wait behind the device replies.
   */
  sender?: ReleaseSender;
  /** `COMMANDS_LEASE_S`: the lease of a command claimed at its release @default 30 */
  leaseS?: number;
  /**
   * Chunks of at most 1,000 claimed commands being published at once; the next release waits while this many are
   * on their way (the release runs ahead of the broker by at most this many). @default 4
   */
  dispatchWindow?: number;
}

/** What the runner uses of the dispatcher of its process to send what it releases. */
export interface ReleaseSender {
  /** the devices of `ids` whose status says online */
  onlineOf(ids: readonly string[]): Promise<Set<string>>;
  /** publishes claimed commands and records SENT; throws when a publish failed (its claim given back) */
  send(claimed: readonly ClaimedCommand[]): Promise<number>;
}

interface JobRow {
  id: string;
  org_id: string;
  name: string;
  params: Record<string, unknown>;
  timeout_s: number;
  expiry_s: number;
  rollout_per_minute: number | null;
  rollout_increase_factor: number | null;
  rollout_increase_every: number | null;
  abort_failed_percent: number | null;
  abort_min_devices: number | null;
  status: string;
  total: number;
  released: number;
  release_cursor: string | null;
  rollout_credit: number;
  rollout_at: Date;
  progress: Partial<JobProgress>;
  created_by: string;
}

/** What one step did, for the work after its commit. */
export interface JobStep {
  id: string;
  orgId: string;
  status: string;
  released: string[];
  /** the released commands the release claimed (online, idle devices), to publish */
  claimed: ClaimedCommand[];
  canceled: CommandChange[];
  queued: CommandChange[];
  changed: boolean;
  progress: JobProgress;
  /** the job has a rollout rate */
  rated: boolean;
  /** RUNNING with a rollout rate and targets not released yet */
  rolling: boolean;
}

const ruleOf = (j: JobRow): AbortRule | null =>
  j.abort_failed_percent === null || j.abort_min_devices === null
    ? null
    : { failedPercent: j.abort_failed_percent, minDevices: j.abort_min_devices };

const rolloutOf = (j: JobRow): Rollout => ({
  perMinute: j.rollout_per_minute,
  increase:
    j.rollout_increase_factor !== null && j.rollout_increase_every !== null
      ? { factor: j.rollout_increase_factor, every: j.rollout_increase_every }
      : null,
});

const sameProgress = (a: Partial<JobProgress>, b: JobProgress) => (Object.keys(b) as (keyof JobProgress)[]).every((k) => a[k] === b[k]);

export class CommandJobRunner {
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<unknown>;
  private closed = false;
  private queue?: Queue;
  private loop?: () => void;
  /** a tick or a look is running (it sees `woken` when it ends) */
  private busy = false;
  /** a wake message came: step again at once */
  private woken = false;
  private sub?: Redis;
  /** dispatches of released devices on their way */
  private readonly sending = new Set<Promise<void>>();

  constructor(private readonly o: CommandJobRunnerOptions) {}

  start(): this {
    const loop = () => {
      this.timer = undefined;
      if (this.closed || this.busy) return;
      this.busy = true;
      this.woken = false;
      let next = this.o.tickMs ?? 1000;
      this.ticking = this.tick()
        .then((r) => {
          if (r.more) next = 0;
          else if (r.rolling) next = Math.min(next, this.o.rolloutTickMs ?? 250);
        })
        .catch((err) => this.o.logger.warn({ err: (err as Error).message }, 'command job tick failed'))
        .finally(() => {
          this.ticking = undefined;
          this.busy = false;
          if (this.woken) next = 0;
          if (!this.closed) this.wait(loop, Date.now() + next);
        });
    };
    this.loop = loop;
    this.timer = setTimeout(loop, 0);
    this.sub = this.o.redis.duplicate();
    this.sub.on('error', (err) => this.o.logger.warn({ err: err.message }, 'command job wake subscriber error'));
    this.sub.on('message', (_channel, message: string) => {
      try {
        parseJobWake(message);
      } catch {
        // refused and counted by the contract; a tick costs little, so step anyway
      }
      this.wake();
    });
    this.sub
      .subscribe(commandJobsWakeChannel(this.o.prefix))
      .catch((err: Error) =>
        this.o.logger.warn({ err: err.message }, 'command job wake channel not subscribed (new jobs start within 250 ms)'),
      );
    return this;
  }

  /** A job was created or resumed: step now (or right after the tick or look that is running). */
  private wake(): void {
    this.woken = true;
    if (this.closed || this.busy || !this.loop) return;
    if (this.timer) clearTimeout(this.timer);
    this.loop();
  }

  /**
   * Waits until `until` for the next tick, but looks every `rolloutTickMs` for a job with devices still to release
   * (one indexed query on the few unsettled jobs) and ticks at once when there is one: a new job starts within
   * 250 ms of `sendSiteCommand` instead of up to a whole `tickMs`.
   */
  private wait(loop: () => void, until: number): void {
    const peek = this.o.rolloutTickMs ?? 250;
    const left = until - Date.now();
    if (left <= peek) {
      this.timer = setTimeout(loop, Math.max(0, left));
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed || this.busy) return;
      this.busy = true;
      this.ticking = sql<{ id: string }>`
        select id from command_jobs where settled_at is null and status = 'RUNNING' and released < total limit 1`
        .execute(this.o.db)
        .then(
          (r) => r.rows.length > 0,
          () => false,
        )
        .then((releasable) => {
          this.ticking = undefined;
          this.busy = false;
          if (this.closed) return;
          if (releasable || this.woken) loop();
          else this.wait(loop, until);
        });
    }, peek);
  }

  /**
   * Steps every job that is not settled (oldest step first). `more` is true when a job released a
   * full slice without a rate limit (the next tick follows at once); `rolling` when a running job with a
   * rollout rate has devices left to release (the next tick after `rolloutTickMs`).
   */
  async tick(now = (this.o.clock ?? (() => new Date()))()): Promise<{ steps: JobStep[]; more: boolean; rolling: boolean }> {
    const { rows } = await sql<{ id: string; org_id: string }>`
      select id, org_id from command_jobs where settled_at is null order by updated_at limit 500`.execute(this.o.db);
    const steps: JobStep[] = [];
    let more = false;
    let rolling = false;
    for (const j of rows) {
      // the release runs ahead of the broker by at most `dispatchWindow` chunks
      while (this.sending.size >= (this.o.dispatchWindow ?? 4)) await Promise.race(this.sending);
      const s = await this.step(j.org_id, j.id, now);
      if (!s) continue;
      steps.push(s);
      if (s.released.length >= (this.o.slice ?? RELEASE_SLICE)) more = true;
      if (s.rolling) rolling = true;
      await this.afterStep(s);
    }
    return { steps, more, rolling };
  }

  /** One job's step in one transaction; null when another replica holds it or it is settled. */
  async step(orgId: string, jobId: string, now: Date): Promise<JobStep | null> {
    return withTenant(this.o.db, orgId, async (tx) => {
      const { rows } = await sql<JobRow>`
        select id, org_id, name, params, timeout_s, expiry_s, rollout_per_minute, rollout_increase_factor, rollout_increase_every,
               abort_failed_percent, abort_min_devices, status, total, released, release_cursor, rollout_credit, rollout_at,
               progress, created_by
        from command_jobs where id = ${jobId} and settled_at is null for update skip locked`.execute(tx);
      const job = rows[0];
      if (!job) return null;
      let counts = (await commandCounts(tx, [jobId])).get(jobId) ?? {};
      let p = progressOf(counts, job);
      let status = job.status;
      let reason: string | null = null;
      let canceled: CommandChange[] = [];
      let released: string[] = [];
      let claimed: ClaimedCommand[] = [];
      let queued: CommandChange[] = [];

      if (status === 'RUNNING' || status === 'PAUSED') {
        reason = abortReason(p, ruleOf(job));
        if (reason) {
          status = 'ABORTED';
          canceled = await cancelQueuedCommands(tx, orgId, jobId, { actor: SYSTEM_ACTOR, why: 'job aborted', now });
          await audit(tx, orgId, SYSTEM_ACTOR, 'command-job.abort', 'command_job', jobId, { status: job.status }, { status, reason });
        }
      }
      if (status === 'RUNNING' && job.released < job.total) {
        const r = await this.release(tx, job, p, now);
        released = r.deviceIds;
        claimed = r.claimed;
        queued = r.changes;
        job.released = r.released;
        job.total = r.total;
      }
      // the counts after this step's own changes (its transaction's): the canceled were QUEUED, the released are
      if (canceled.length || released.length) {
        const n = (k: string) => counts[k] ?? 0;
        counts = { ...counts, QUEUED: n('QUEUED') - canceled.length + released.length, CANCELED: n('CANCELED') + canceled.length };
      }
      p = progressOf(counts, { ...job, status });
      if (status === 'RUNNING' && job.released >= job.total && activeOf(p) === 0) {
        status = 'COMPLETED';
        await audit(tx, orgId, SYSTEM_ACTOR, 'command-job.complete', 'command_job', jobId, { status: job.status }, { status, progress: p });
      }
      const settled = status !== 'RUNNING' && status !== 'PAUSED' && activeOf(p) === 0;
      const changed = status !== job.status || !sameProgress(job.progress, p);
      if (changed || settled || released.length)
        await sql`
          update command_jobs set status = ${status}, abort_reason = coalesce(${reason}, abort_reason), progress = ${JSON.stringify(p)}::jsonb,
            total = ${job.total}, updated_at = ${now},
            completed_at = case when ${status} in ('COMPLETED', 'ABORTED') and completed_at is null then ${now}::timestamptz else completed_at end,
            settled_at = case when ${settled} then ${now}::timestamptz else null end
          where id = ${jobId}`.execute(tx);
      const rated = job.rollout_per_minute !== null;
      const rolling = status === 'RUNNING' && rated && job.released < job.total;
      return { id: jobId, orgId, status, released, claimed, canceled, queued, changed, progress: p, rated, rolling };
    });
  }

  /**
   * Releases the next slice the rollout allows: commands for those targets (claimed or marked for dispatch), and the
   * job's cursor and bucket.
   */
  private async release(
    tx: Tx,
    job: JobRow,
    p: JobProgress,
    now: Date,
  ): Promise<{ deviceIds: string[]; claimed: ClaimedCommand[]; changes: CommandChange[]; released: number; total: number }> {
    const { count, credit } = releasable(
      rolloutOf(job),
      { credit: job.rollout_credit, at: job.rollout_at },
      { now, succeeded: p.succeeded, remaining: job.total - job.released, slice: this.o.slice ?? RELEASE_SLICE },
    );
    if (count <= 0) return { deviceIds: [], claimed: [], changes: [], released: job.released, total: job.total };
    const { rows: targets } = await sql<{ device_id: string }>`
      select device_id from command_job_targets
      where job_id = ${job.id} and (${job.release_cursor}::uuid is null or device_id > ${job.release_cursor}::uuid)
      order by device_id limit ${count}`.execute(tx);
    const ids = targets.map((t) => t.device_id);
    const released = job.released + ids.length;
    // fewer targets than the count still missing: devices were deleted since the job was created
    const total = ids.length < count ? released : job.total;
    const history = JSON.stringify([historyEntry('QUEUED', now, { by: job.created_by, job: job.id })]);
    const expires = new Date(now.getTime() + job.expiry_s * 1000);
    const { inserted, claimed } = !ids.length
      ? { inserted: [], claimed: [] }
      : this.o.sender
        ? await this.insertClaimed(tx, job, ids, { now, expires, history, sender: this.o.sender })
        : { inserted: await this.insertMarked(tx, job, ids, { now, expires, history }), claimed: [] };
    await sql`
      update command_jobs set released = ${released}, release_cursor = coalesce(${ids.at(-1) ?? null}::uuid, release_cursor),
        rollout_credit = ${credit}, rollout_at = ${now}
      where id = ${job.id}`.execute(tx);
    releasedTotal.inc(inserted.length);
    return {
      deviceIds: inserted.map((r) => r.device_id),
      claimed,
      changes: inserted.map((r) => ({ id: r.id, orgId: job.org_id, deviceId: r.device_id, status: 'QUEUED', jobId: job.id })),
      released,
      total,
    };
  }

  /** The released commands, every device marked for dispatch (no `sender`: the dispatcher claims them). */
  private async insertMarked(
    tx: Tx,
    job: JobRow,
    ids: readonly string[],
    o: { now: Date; expires: Date; history: string },
  ): Promise<{ id: string; device_id: string }[]> {
    const { rows: inserted } = await sql<{ id: string; device_id: string }>`
      insert into commands (org_id, device_id, job_id, name, params, timeout_s, created_by, created_at, updated_at, expires_at, due_at, history)
      select ${job.org_id}::uuid, t.device_id, ${job.id}::uuid, ${job.name}, ${JSON.stringify(job.params)}::jsonb, ${job.timeout_s},
             ${job.created_by}, ${o.now}, ${o.now}, ${o.expires}, ${o.expires}, ${o.history}::jsonb
      from unnest(${[...ids]}::uuid[]) as t(device_id)
      on conflict (job_id, device_id) where job_id is not null do nothing
      returning id, device_id`.execute(tx);
    if (inserted.length)
      await sql`
        insert into device_states (device_id, org_id, pending_dispatch)
        select unnest(${inserted.map((r) => r.device_id)}::uuid[]), ${job.org_id}::uuid, true
        on conflict (device_id) do update set pending_dispatch = true`.execute(tx);
    return inserted;
  }

  /**
   * The released commands, claimed where the device is online and has no active command (a dispatch's claim, done
   * here in the same row write as the insert): the devices' `device_states` rows are locked in device-id order first,
   * as the dispatcher locks them, so a concurrent dispatch of one of them waits and the insert's snapshot sees every
   * claim committed before. Only the devices whose command stays unclaimed (offline, or busy with another command, or
   * with an older one waiting) are marked `pending_dispatch`; for the claimed ones `device_states` is not written.
   * Why: a released command was an insert, the mark, the dispatcher's lock-and-clear of the mark and its claim (four
   * row versions, three of them not HOT); it is now one (docs/commands.md, "Row versions per command").
   */
  private async insertClaimed(
    tx: Tx,
    job: JobRow,
    ids: readonly string[],
    o: { now: Date; expires: Date; history: string; sender: ReleaseSender },
  ): Promise<{ inserted: { id: string; device_id: string }[]; claimed: ClaimedCommand[] }> {
    const online = [...(await o.sender.onlineOf(ids))];
    const lock = (list: readonly string[]) =>
      sql<{ device_id: string }>`
        select device_id from device_states where device_id = any(${[...list]}::uuid[]) order by device_id for update`.execute(tx);
    const { rows: locked } = await lock(ids);
    // a device without a device_states row yet gets one, locked too (a row another transaction inserted meanwhile is
    // locked by the second statement; a row not yet committed elsewhere is invisible to a dispatch, which skips it)
    const have = new Set(locked.map((r) => r.device_id));
    const missing = ids.filter((id) => !have.has(id));
    if (missing.length) {
      await sql`
        insert into device_states (device_id, org_id) select unnest(${missing}::uuid[]), ${job.org_id}::uuid
        on conflict (device_id) do nothing`.execute(tx);
      await lock(missing);
    }
    const lease = this.o.leaseS ?? 30;
    const { rows } = await sql<ClaimedCommand & { claimed: boolean }>`
      with t as (
        select u.device_id, u.device_id = any(${online}::uuid[]) and not exists (
          select 1 from commands c where c.device_id = u.device_id and c.status in ('QUEUED', 'SENT', 'DELIVERED')) as free
        from unnest(${[...ids]}::uuid[]) as u(device_id)
      ), ins as (
        insert into commands (org_id, device_id, job_id, name, params, timeout_s, created_by, created_at, updated_at, expires_at, due_at,
                              history, lease_until, attempts)
        select ${job.org_id}::uuid, t.device_id, ${job.id}::uuid, ${job.name}, ${JSON.stringify(job.params)}::jsonb, ${job.timeout_s},
               ${job.created_by}, ${o.now}, ${o.now}, ${o.expires}, ${o.expires}, ${o.history}::jsonb,
               case when t.free then now() + ${lease} * interval '1 second' end, case when t.free then 1 else 0 end
        from t
        on conflict (job_id, device_id) where job_id is not null do nothing
        returning id, org_id, device_id, name, params, expires_at, job_id, lease_until is not null as claimed
      )
      select ins.*, d.serial, case when gp.is_gateway then g.id end as gateway_id
      from ins join devices d on d.id = ins.device_id
        left join devices g on g.id = d.parent_id
        left join device_profiles gp on gp.id = g.profile_id`.execute(tx);
    const waiting = rows.filter((r) => !r.claimed).map((r) => r.device_id);
    if (waiting.length)
      await sql`update device_states set pending_dispatch = true where device_id = any(${waiting}::uuid[]) and not pending_dispatch`.execute(
        tx,
      );
    return {
      inserted: rows.map((r) => ({ id: r.id, device_id: r.device_id })),
      claimed: rows.filter((r) => r.claimed).map(({ claimed: _, ...c }) => c),
    };
  }

  /** After a step's commit: wake the dispatcher for released devices, publish events. Never throws. */
  private async afterStep(s: JobStep): Promise<void> {
    const warn = (what: string) => (err: unknown) => this.o.logger.warn({ err: (err as Error).message, jobId: s.id }, what);
    if (s.status === 'COMPLETED' || s.status === 'ABORTED') jobsEndedTotal.inc({ status: s.status });
    if (this.o.sender)
      for (let i = 0; i < s.claimed.length; i += MAX_DISPATCH_DEVICES) this.send(s, s.claimed.slice(i, i + MAX_DISPATCH_DEVICES));
    else if (s.released.length) await this.addDispatchJobs(s, s.released);
    const changes = [...s.canceled, ...s.queued];
    if (changes.length)
      await publishCommandChanges(this.o.db, this.o.redis, this.o.prefix, changes, warn('commandUpdated events not published'));
    if (s.changed) await publishJobUpdates(this.o.redis, this.o.prefix, [s], warn('commandJobUpdated event not published'));
  }

  /**
   * Publishes commands the release claimed, not awaited (the next release waits only for the window). A failed
   * publish (the broker away) gave its claim back: `dispatch` jobs send those devices again, retried with backoff.
   */
  private send(s: JobStep, claimed: ClaimedCommand[]): void {
    const sender = this.o.sender;
    if (!sender) return;
    const p: Promise<void> = sender
      .send(claimed)
      .then(
        () => undefined,
        (err: unknown) => {
          this.o.logger.warn({ err: (err as Error).message, jobId: s.id }, 'released commands not all sent; retried as dispatch jobs');
          return this.addDispatchJobs(
            s,
            claimed.map((c) => c.device_id),
          );
        },
      )
      .finally(() => this.sending.delete(p));
    this.sending.add(p);
  }

  private async addDispatchJobs(s: JobStep, deviceIds: readonly string[]): Promise<void> {
    try {
      this.queue ??= new Queue(COMMANDS_QUEUE, { connection: this.o.redis, prefix: queuePrefix(this.o.prefix) });
      // a rated job's small steady grants go in order with the replies; a burst's waits behind them, so the
      // replies that end commands keep draining while thousands are handed to the broker
      await this.queue.addBulk(dispatchJobs(s.orgId, deviceIds, { inOrder: s.rated }));
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message, jobId: s.id }, 'dispatch jobs not added (the sweep sends the commands)');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking;
    await Promise.all(this.sending);
    this.sub?.disconnect();
    await this.queue?.close();
  }
}
