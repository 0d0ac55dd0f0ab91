import { type Job, Queue, Worker } from 'bullmq';
import { sql } from 'kysely';
import type { MqttClient } from 'mqtt';
import { type CommandChange, historyEntry, publishCommandChanges, SQL_DELTA } from '../lib/commands.js';
import {
  COMMANDS_QUEUE,
  type CommandReply,
  deviceCommandTopic,
  encodeCommandMessage,
  encodeGatewayCommandMessage,
  gatewayCommandTopic,
  isFinalStatus,
  type OnlineJob,
  parseCommandsJob,
  type RepliesJob,
  type ReplyItem,
  SET_STATE_COMMAND,
} from '../lib/contracts/commands.js';
import { statusKey } from '../lib/contracts/device-state.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { type Db, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';

/**
 * The command dispatcher (docs/commands.md). Commands are rows first (the outbox); this class
 * moves them, each step a conditional UPDATE so a repeated or concurrent step changes nothing:
 *
 * - **dispatch** (`dispatch` jobs, the sweep): per online device with nothing in flight, claims the
 *   oldest QUEUED command (a lease, attempts + 1) under the device's `device_states` row lock
 *   (skipping commands of a paused or stopped fleet job, workers/command-jobs.ts),
 *   publishes it at QoS 1 and records SENT with the broker's PUBACK as evidence. Offline devices
 *   keep their commands QUEUED until an `online` job wakes them.
 * - **replies** (from ingest): `received` → DELIVERED, `succeeded`/`failed` → SUCCEEDED/FAILED; a
 *   reply for an unknown command, another device's, one not sent, expired or ended is refused,
 *   counted and dead-lettered, and the command is left as it was. Then the device's next command goes.
 * - **online** (from ingest): stores the reported state, queues the desired-state delta again when
 *   they differ, and dispatches.
 * - **sweep** (every `COMMANDS_SWEEP_MS`, with no traffic needed): fires due timeouts (FAILED) and
 *   expiries (EXPIRED) with `for update skip locked`, re-offers commands whose claim lapsed (a worker
 *   killed between claim and PUBACK: sent again with the same id, which devices deduplicate), and
 *   dispatches devices marked `pending_dispatch` (commands queued in bulk by programs, lost jobs).
 */

const transitionsTotal = counter('rulr_command_transitions_total', 'Command status changes, by new status', ['status']);
const repliesTotal = counter('rulr_command_replies_total', 'Device command replies handled by the dispatcher, by outcome', ['outcome']);
const publishFailedTotal = counter('rulr_command_publish_failed_total', 'Command publishes the broker did not acknowledge');

export interface CommandDispatcherOptions {
  db: Db;
  redis: Redis;
  redisUrl: string;
  /** `REDIS_PREFIX` */
  prefix: string;
  /** connected MQTT client of the workers role (QoS 1 publishes) */
  mqtt: MqttClient;
  logger: Logger;
  /** `COMMANDS_CONCURRENCY` @default 4 */
  concurrency?: number;
  /** `COMMANDS_SWEEP_MS` @default 1000 */
  sweepMs?: number;
  /** `COMMANDS_LEASE_S` @default 30 */
  leaseS?: number;
  /** timeout of desired-state commands (`COMMANDS_DEFAULT_TIMEOUT_S`) @default 30 */
  timeoutS?: number;
  /** expiry of desired-state commands (`COMMANDS_DEFAULT_EXPIRY_S`) @default 86400 */
  expiryS?: number;
  /** most devices dispatched per sweep @default 5000 */
  sweepBatch?: number;
  /** called after every committed batch of changes (fleet-job progress) */
  onChanged?: (changes: readonly CommandChange[]) => Promise<void>;
}

/** A command claimed for publishing (leased, `attempts` counted), with where it goes. */
export interface ClaimedCommand {
  id: string;
  org_id: string;
  device_id: string;
  name: string;
  params: Record<string, unknown>;
  expires_at: Date;
  job_id: string | null;
  serial: string;
  gateway_id: string | null;
}

interface ChangeRow {
  id: string;
  org_id: string;
  device_id: string;
  status: string;
  job_id: string | null;
}

/**
 * A `locked` CTE that locks the commands `ids` in id order; the statement joins it (`from locked … where c.id =
 * locked.id`). Every multi-row update of commands by the dispatcher (SENT after PUBACK, a batch's replies, whose
 * `received` may be in one job and its result in a concurrent one) takes its row locks in this one order and so
 * never deadlocks, in one statement (no transaction round trips: on a loaded database those are what cost).
 */
const lockedInIdOrder = (ids: readonly string[]) =>
  sql`locked as (select id from commands where id = any(${[...ids]}::uuid[]) order by id for update)`;

/**
 * The devices with a lapsed claim (a QUEUED command whose lease ended: a worker killed between the claim and the
 * PUBACK). Written with `commands_active_idx`'s predicate so it reads that index, not the whole table.
 */
const lapsedClaims = (at: Date) =>
  sql`select device_id from commands
    where status in ('QUEUED', 'SENT', 'DELIVERED') and status = 'QUEUED' and lease_until < ${at}`;

const toChange = (r: ChangeRow): CommandChange => ({ id: r.id, orgId: r.org_id, deviceId: r.device_id, status: r.status, jobId: r.job_id });

/** What deciding a refusal reads of a command. */
interface RefusalRow {
  org_id: string;
  device_id: string;
  status: string;
  delivered_at: Date | null;
  expires_at: Date;
  lease_until: Date | null;
  due_at: Date | null;
}

/** A refused reply's dead-letter reason. */
type Refusal = 'unknown_command' | 'wrong_device' | 'command_not_sent' | 'command_expired' | 'command_timed_out' | 'command_ended';

/** Dispatch transactions the sweep runs at once (each on up to 1,000 distinct devices). */
const SWEEP_PARALLEL = 4;
/** Oldest waiting and delayed `commands` jobs the sweep reads for {@link CommandDispatcher.waitingReplies}. */
const HORIZON_SCAN = 50;
/** Slack for replies in jobs the scan did not reach: ingest hands a batch over within this of receiving it, ms. */
const HORIZON_SLACK_MS = 1000;

export class CommandDispatcher {
  private worker?: Worker;
  private queue?: Queue;
  private timer?: NodeJS.Timeout;
  private sweeping?: Promise<unknown>;
  private closed = false;
  /** when the sweep last looked for lapsed claims, ms */
  private lapsedAt = 0;

  constructor(private readonly o: CommandDispatcherOptions) {}

  /**
   * How often the sweep looks for lapsed claims: every 5 s, or every half lease when that is shorter. No index
   * holds `lease_until` any more (so the claim is a HOT update, migration 0012); the search reads the QUEUED
   * commands through `commands_active_idx`, which is not worth doing every second for claims that lapse after
   * `COMMANDS_LEASE_S` (30 s). A lapsed claim is offered again at most this long after its lease ended.
   */
  private lapsedEveryMs(): number {
    return Math.min(5000, ((this.o.leaseS ?? 30) * 1000) / 2);
  }

  start(): this {
    const connection = { url: this.o.redisUrl, maxRetriesPerRequest: null };
    this.worker = new Worker(COMMANDS_QUEUE, (job) => this.handle(job), {
      connection,
      prefix: queuePrefix(this.o.prefix),
      concurrency: this.o.concurrency ?? 4,
      // A killed worker's active jobs (device replies among them) come back after its lock lapses and
      // the next stall check: 10 s + 5 s instead of BullMQ's 30 s + 30 s, so replies are applied well
      // before a typical command timeout fires (the lock is renewed every 5 s while a job runs).
      lockDuration: 10_000,
      stalledInterval: 5_000,
    });
    this.worker.on('failed', (job, err) =>
      this.o.logger.warn(
        { jobId: job?.id, name: job?.name, attempts: job?.attemptsMade, err: err.message },
        'commands job failed; retried',
      ),
    );
    this.worker.on('error', (err) => this.o.logger.warn({ err: err.message }, 'commands worker error'));
    const tick = () => {
      if (this.closed) return;
      let more = false;
      this.sweeping = this.sweep()
        .then((r) => {
          more = r.more;
        })
        .catch((err) => this.o.logger.warn({ err: (err as Error).message }, 'command sweep failed'))
        .finally(() => {
          this.sweeping = undefined;
          // a full batch of devices to dispatch (a program's firing): the next sweep at once
          if (!this.closed) this.timer = setTimeout(tick, more ? 0 : (this.o.sweepMs ?? 1000));
        });
    };
    this.timer = setTimeout(tick, 0);
    return this;
  }

  /** One job of the `commands` queue. */
  async handle(job: Pick<Job, 'name' | 'data'>): Promise<void> {
    const { job: j } = parseCommandsJob(job.name, job.data);
    if (j.name === 'dispatch') await this.dispatch(j.data.orgId, j.data.deviceIds);
    else if (j.name === 'replies') await this.replies(j.data);
    else await this.online(j.data);
  }

  private async changed(rows: readonly ChangeRow[]): Promise<void> {
    if (!rows.length) return;
    const changes = rows.map(toChange);
    for (const c of changes) transitionsTotal.inc({ status: c.status });
    await publishCommandChanges(this.o.db, this.o.redis, this.o.prefix, changes, (err) =>
      this.o.logger.warn({ err: (err as Error).message }, 'commandUpdated events not published'),
    );
    await this.o.onChanged?.(changes);
  }

  /** The devices of `ids` whose status hash says online. */
  async onlineOf(ids: readonly string[]): Promise<Set<string>> {
    const p = this.o.redis.pipeline();
    for (const id of ids) p.hget(statusKey(this.o.prefix, id), 'online');
    const res = (await p.exec()) ?? [];
    const out = new Set<string>();
    res.forEach(([err, v], i) => {
      if (err) throw err;
      if (v === '1') out.add(ids[i] as string);
    });
    return out;
  }

  /**
   * Sends the next command of each online device of `deviceIds` that has none in flight. Returns how many were sent.
   * `skipLocked` (the sweep): devices another dispatch holds are left to it. Nothing is lost by that: every path
   * that queues a command marks the device (`pending_dispatch`) under the same row lock, so a command the holder's
   * claim cannot see leaves the mark set for the next sweep.
   */
  async dispatch(orgId: string, deviceIds: readonly string[], o: { skipLocked?: boolean } = {}): Promise<number> {
    if (!deviceIds.length) return 0;
    const online = await this.onlineOf(deviceIds);
    const lease = this.o.leaseS ?? 30;
    const claimed = await withTenant(this.o.db, orgId, async (tx) => {
      // The row locks serialize dispatch per device across replicas; the claim below is a separate
      // statement so its snapshot sees every claim committed before the locks were granted.
      const { rows: locked } = await sql<{ device_id: string }>`
        with locked as (
          select device_id, pending_dispatch from device_states where org_id = ${orgId} and device_id = any(${deviceIds}::uuid[])
          order by device_id for update ${o.skipLocked ? sql`skip locked` : sql``}
        ), cleared as (
          update device_states s set pending_dispatch = false from locked l where s.device_id = l.device_id and l.pending_dispatch
        )
        select device_id from locked`.execute(tx);
      if (!locked.length) return [];
      const all = locked.map((r) => r.device_id);
      const off = all.filter((id) => !online.has(id));
      if (off.length)
        await sql`update commands set lease_until = null
          where device_id = any(${off}::uuid[]) and status = 'QUEUED' and lease_until < now()`.execute(tx);
      const on = all.filter((id) => online.has(id));
      if (!on.length) return [];
      const { rows } = await sql<ClaimedCommand>`
        with busy as (
          select distinct device_id from commands
          where device_id = any(${on}::uuid[]) and (status in ('SENT', 'DELIVERED') or (status = 'QUEUED' and lease_until > now()))
        ), next as (
          select distinct on (c.device_id) c.id from commands c
          where c.device_id = any(${on}::uuid[]) and c.device_id not in (select device_id from busy)
            and c.status = 'QUEUED' and c.expires_at > now()
            and (c.job_id is null or not exists (
              select 1 from command_jobs j where j.id = c.job_id and j.status in ('PAUSED', 'CANCELED', 'ABORTED')))
          order by c.device_id, c.created_at, c.id
        )
        update commands c set lease_until = now() + ${lease} * interval '1 second', attempts = c.attempts + 1, updated_at = now()
        from next, devices d
          left join devices g on g.id = d.parent_id
          left join device_profiles gp on gp.id = g.profile_id
        where c.id = next.id and d.id = c.device_id
        returning c.id, c.org_id, c.device_id, c.name, c.params, c.expires_at, c.job_id, d.serial,
          case when gp.is_gateway then g.id end as gateway_id`.execute(tx);
      return rows;
    });
    return this.send(claimed);
  }

  /**
   * Publishes claimed commands at QoS 1 and records SENT with each PUBACK as evidence; returns how many were sent. A
   * publish the broker refused gives its claim back (QUEUED, no lease) and makes this throw, so the caller retries.
   * The second half of {@link dispatch}, and what a fleet job's release calls for the commands it claimed itself.
   */
  async send(claimed: readonly ClaimedCommand[]): Promise<number> {
    if (!claimed.length) return 0;
    const results = await Promise.all(claimed.map((c) => this.publish(c)));
    const sent = results.filter((r) => r.ok);
    const failed = results.filter((r) => !r.ok).map((r) => r.c.id);
    if (failed.length) {
      publishFailedTotal.inc(failed.length);
      await sql`update commands set lease_until = null where id = any(${failed}::uuid[]) and status = 'QUEUED' and sent_at is null`.execute(
        this.o.db,
      );
    }
    if (sent.length) {
      const at = new Date();
      const ids = sent.map((r) => r.c.id);
      const { rows } = await sql<ChangeRow>`
        with ${lockedInIdOrder(ids)}
        update commands c set status = case when c.status = 'QUEUED' then 'SENT' else c.status end,
          sent_at = ${at}, updated_at = ${at},
          due_at = case when c.status = 'QUEUED' then least(c.expires_at, ${at}::timestamptz + c.timeout_s * interval '1 second') else c.due_at end,
          history = c.history || jsonb_build_array(jsonb_build_object('status', 'SENT', 'at', ${at.toISOString()}::text, 'evidence', e.ev))
        from locked, unnest(${ids}::uuid[], ${sent.map((r) => JSON.stringify(r.evidence))}::jsonb[]) as e(id, ev)
        where c.id = locked.id and c.id = e.id and c.sent_at is null and c.status not in ('EXPIRED', 'CANCELED')
        returning c.id, c.org_id, c.device_id, c.status, c.job_id`.execute(this.o.db);
      await this.changed(rows.filter((r) => r.status === 'SENT'));
    }
    if (failed.length) throw new Error(`${failed.length} command publishes failed`);
    return sent.length;
  }

  private publish(c: ClaimedCommand): Promise<{ c: ClaimedCommand; ok: boolean; evidence?: Record<string, unknown> }> {
    const msg = { id: c.id, name: c.name, params: c.params, expiresAt: c.expires_at.toISOString() };
    const [topic, payload] = c.gateway_id
      ? [gatewayCommandTopic(c.gateway_id), encodeGatewayCommandMessage({ ...msg, serial: c.serial })]
      : [deviceCommandTopic(c.device_id), encodeCommandMessage(msg)];
    return new Promise((resolve) => {
      this.o.mqtt.publish(topic, payload, { qos: 1 }, (err, packet) => {
        if (err) {
          this.o.logger.warn({ commandId: c.id, err: err.message }, 'command publish failed');
          resolve({ c, ok: false });
        } else
          resolve({
            c,
            ok: true,
            evidence: { broker: 'PUBACK', topic, qos: 1, ...(packet?.messageId !== undefined ? { messageId: packet.messageId } : {}) },
          });
      });
    });
  }

  /**
   * Applies one batch of replies; refused ones are dead-lettered. A device that answers at once sends
   * `received` and its result in the same ingest batch: such a pair is one UPDATE for all the batch's
   * pairs, recording DELIVERED and the result exactly as the two replies in turn would (both changes
   * are reported). The other replies are independent across commands, so they go in rounds, round k
   * holding each command's k-th remaining reply: one UPDATE per round for `received` replies and one
   * for results, whatever the batch size, while a command's own replies keep their order. Replies that
   * changed nothing are read back (one query per round) to say why.
   */
  async replies(job: RepliesJob): Promise<void> {
    const changes: ChangeRow[] = [];
    const dead: { item: ReplyItem; reason: Refusal; detail: string }[] = [];
    const consumed = new Set<ReplyItem>();
    const pairs = replyPairs(job.replies);
    if (pairs.length) {
      const applied = await this.applyPairs(job.orgId, pairs);
      for (const p of pairs) {
        const row = applied.get(p.received.reply.id);
        if (!row) continue; // not applicable as a pair: each reply goes on its own below
        consumed.add(p.received).add(p.final);
        changes.push({ ...row, status: 'DELIVERED' }, row);
        repliesTotal.inc({ outcome: 'applied' }, 2);
      }
    }
    for (const round of replyRounds(consumed.size ? job.replies.filter((i) => !consumed.has(i)) : job.replies)) {
      const applied = await this.applyRound(job.orgId, round);
      const refusedRows = await this.refusalRows(round.filter((i) => !applied.has(i.reply.id)).map((i) => i.reply.id));
      for (const item of round) {
        const row = applied.get(item.reply.id);
        if (row) {
          changes.push(row);
          repliesTotal.inc({ outcome: 'applied' });
          continue;
        }
        const r = this.refusal(refusedRows.get(item.reply.id), job.orgId, item.deviceId, item.reply, new Date(item.receivedAt));
        if (r.kind === 'duplicate') repliesTotal.inc({ outcome: 'duplicate' });
        else {
          repliesTotal.inc({ outcome: r.reason });
          dead.push({ item, reason: r.reason, detail: r.detail });
        }
      }
    }
    if (dead.length) {
      await sql`
        insert into dead_letters (org_id, device_id, topic, reason, detail, payload)
        select ${job.orgId}::uuid, d.device_id, d.topic, d.reason, d.detail, d.payload
        from unnest(${dead.map((d) => d.item.deviceId)}::uuid[], ${dead.map((d) => d.item.topic.slice(0, 512))}::text[],
                    ${dead.map((d) => d.reason)}::text[], ${dead.map((d) => d.detail)}::text[], ${dead.map((d) => d.item.raw.slice(0, 2048))}::text[])
          as d(device_id, topic, reason, detail, payload)`.execute(this.o.db);
      this.o.logger.info(
        { refused: dead.map((d) => ({ topic: d.item.topic, reason: d.reason })) },
        'command replies refused (dead letters)',
      );
    }
    await this.changed(changes);
    const freed = [...new Set(changes.filter((c) => c.status !== 'DELIVERED').map((c) => c.device_id))];
    if (freed.length) await this.dispatch(job.orgId, await this.waiting(freed));
  }

  /**
   * Applies `received` + result pairs (distinct commands) in one statement: the conditions are those
   * of the `received` reply, after which the result's always hold. Returns the changed rows by id.
   */
  private async applyPairs(orgId: string, pairs: readonly ReplyPair[]): Promise<Map<string, ChangeRow>> {
    const at = new Date();
    const entry = (item: ReplyItem, status: string) =>
      JSON.stringify(
        historyEntry(status, at, { reply: item.reply.status, topic: item.topic, receivedAt: new Date(item.receivedAt).toISOString() }),
      );
    const statusOf = (i: ReplyItem) => (i.reply.status === 'succeeded' ? 'SUCCEEDED' : 'FAILED');
    const { rows } = await sql<ChangeRow>`
      with ${lockedInIdOrder(pairs.map((p) => p.received.reply.id))}
      update commands c set status = r.status, delivered_at = ${at}, completed_at = ${at}, updated_at = ${at}, due_at = null,
        result = r.result, error = r.error, history = c.history || jsonb_build_array(r.delivered, r.final)
      from locked, unnest(${pairs.map((p) => p.received.reply.id)}::uuid[], ${pairs.map((p) => p.received.deviceId)}::uuid[],
                  ${pairs.map((p) => new Date(p.received.receivedAt).toISOString())}::timestamptz[], ${pairs.map((p) => statusOf(p.final))}::text[],
                  ${pairs.map((p) => (p.final.reply.result === undefined ? null : JSON.stringify(p.final.reply.result)))}::jsonb[],
                  ${pairs.map((p) => (p.final.reply.status === 'failed' ? (p.final.reply.error ?? 'failed') : null))}::text[],
                  ${pairs.map((p) => entry(p.received, 'DELIVERED'))}::jsonb[], ${pairs.map((p) => entry(p.final, statusOf(p.final)))}::jsonb[])
        as r(id, device_id, received, status, result, error, delivered, final)
      where c.id = locked.id and c.id = r.id and c.org_id = ${orgId} and c.device_id = r.device_id
        and c.status in ('QUEUED', 'SENT') and c.lease_until is not null and c.delivered_at is null and c.expires_at > r.received
        and (c.due_at is null or c.due_at > r.received)
      returning c.id, c.org_id, c.device_id, c.status, c.job_id`.execute(this.o.db);
    return new Map(rows.map((r) => [r.id, r]));
  }

  /**
   * Applies replies about distinct commands, set-based: `received` → DELIVERED, `succeeded` /
   * `failed` → SUCCEEDED / FAILED (with DELIVERED recorded first when no `received` came). Each
   * condition is the one a single reply would meet. Returns the changed rows by command id.
   */
  private async applyRound(orgId: string, items: readonly ReplyItem[]): Promise<Map<string, ChangeRow>> {
    const at = new Date();
    const entry = (item: ReplyItem, status: string) =>
      JSON.stringify(
        historyEntry(status, at, { reply: item.reply.status, topic: item.topic, receivedAt: new Date(item.receivedAt).toISOString() }),
      );
    const receivedAt = (list: readonly ReplyItem[]) => list.map((i) => new Date(i.receivedAt).toISOString());
    const out = new Map<string, ChangeRow>();
    const received = items.filter((i) => i.reply.status === 'received');
    if (received.length) {
      const { rows } = await sql<ChangeRow>`
            with ${lockedInIdOrder(received.map((i) => i.reply.id))}
            update commands c set status = 'DELIVERED', delivered_at = ${at}, updated_at = ${at},
              due_at = coalesce(c.sent_at, ${at}) + c.timeout_s * interval '1 second',
              history = c.history || jsonb_build_array(r.entry)
            from locked, unnest(${received.map((i) => i.reply.id)}::uuid[], ${received.map((i) => i.deviceId)}::uuid[],
                        ${receivedAt(received)}::timestamptz[], ${received.map((i) => entry(i, 'DELIVERED'))}::jsonb[])
              as r(id, device_id, received, entry)
            where c.id = locked.id and c.id = r.id and c.org_id = ${orgId} and c.device_id = r.device_id
              and c.status in ('QUEUED', 'SENT') and c.lease_until is not null and c.delivered_at is null and c.expires_at > r.received
              and (c.due_at is null or c.due_at > r.received)
            returning c.id, c.org_id, c.device_id, c.status, c.job_id`.execute(this.o.db);
      for (const r of rows) out.set(r.id, r);
    }
    const final = items.filter((i) => i.reply.status !== 'received');
    if (final.length) {
      const statusOf = (i: ReplyItem) => (i.reply.status === 'succeeded' ? 'SUCCEEDED' : 'FAILED');
      const { rows } = await sql<ChangeRow>`
            with ${lockedInIdOrder(final.map((i) => i.reply.id))}
            update commands c set status = r.status, completed_at = ${at}, updated_at = ${at}, due_at = null,
              delivered_at = coalesce(c.delivered_at, ${at}), result = r.result, error = r.error,
              history = c.history || case when c.delivered_at is null then jsonb_build_array(r.delivered) else '[]'::jsonb end
                || jsonb_build_array(r.final)
            from locked, unnest(${final.map((i) => i.reply.id)}::uuid[], ${final.map((i) => i.deviceId)}::uuid[], ${receivedAt(final)}::timestamptz[],
                        ${final.map(statusOf)}::text[],
                        ${final.map((i) => (i.reply.result === undefined ? null : JSON.stringify(i.reply.result)))}::jsonb[],
                        ${final.map((i) => (i.reply.status === 'failed' ? (i.reply.error ?? 'failed') : null))}::text[],
                        ${final.map((i) => entry(i, 'DELIVERED'))}::jsonb[], ${final.map((i) => entry(i, statusOf(i)))}::jsonb[])
              as r(id, device_id, received, status, result, error, delivered, final)
            where c.id = locked.id and c.id = r.id and c.org_id = ${orgId} and c.device_id = r.device_id
              and c.status in ('QUEUED', 'SENT', 'DELIVERED') and c.lease_until is not null
              and (c.delivered_at is not null or c.expires_at > r.received) and (c.due_at is null or c.due_at > r.received)
            returning c.id, c.org_id, c.device_id, c.status, c.job_id`.execute(this.o.db);
      for (const r of rows) out.set(r.id, r);
    }
    return out;
  }

  /**
   * The devices of `ids` with a QUEUED command: the ones a reply freed that have a next command to send. Read
   * after the reply's commit, so a command queued meanwhile is either seen here or dispatched by its own job
   * (which then finds the device free).
   */
  private async waiting(ids: readonly string[]): Promise<string[]> {
    const { rows } = await sql<{ device_id: string }>`
      select distinct device_id from commands where device_id = any(${[...ids]}::uuid[]) and status = 'QUEUED'`.execute(this.o.db);
    return rows.map((r) => r.device_id);
  }

  /** The commands some refused replies name (one query for a round's). */
  private async refusalRows(ids: readonly string[]): Promise<Map<string, RefusalRow>> {
    if (!ids.length) return new Map();
    const { rows } = await sql<RefusalRow & { id: string }>`
      select id, org_id, device_id, status, delivered_at, expires_at, lease_until, due_at from commands where id = any(${[...ids]}::uuid[])`.execute(
      this.o.db,
    );
    return new Map(rows.map((r) => [r.id, r]));
  }

  /** Why a reply changed nothing, from its command's row (undefined: none). */
  private refusal(
    c: RefusalRow | undefined,
    orgId: string,
    deviceId: string,
    reply: CommandReply,
    received: Date,
  ): { kind: 'duplicate' } | { kind: 'refused'; reason: Refusal; detail: string } {
    const refused = (reason: Refusal, detail: string) => ({ kind: 'refused' as const, reason, detail });
    if (!c || c.org_id !== orgId) return refused('unknown_command', `no command ${reply.id} for this device's organization`);
    if (c.device_id !== deviceId) return refused('wrong_device', `command ${reply.id} is another device's`);
    const mapped = reply.status === 'succeeded' ? 'SUCCEEDED' : reply.status === 'failed' ? 'FAILED' : null;
    if (c.delivered_at && (reply.status === 'received' || c.status === mapped)) return { kind: 'duplicate' };
    if (c.status === 'EXPIRED' || (!c.delivered_at && c.expires_at <= received))
      return refused('command_expired', `command ${reply.id} expired at ${c.expires_at.toISOString()}`);
    if (c.status === 'QUEUED' && !c.lease_until) return refused('command_not_sent', `command ${reply.id} was not sent yet`);
    if (!isFinalStatus(c.status) && c.due_at && c.due_at <= received)
      return refused(
        'command_timed_out',
        `command ${reply.id} timed out at ${c.due_at.toISOString()}; the reply reached the platform at ${received.toISOString()}`,
      );
    return refused('command_ended', `command ${reply.id} is already ${c.status}`);
  }

  /** Devices came back: store what they report, queue the desired-state delta again where it differs, dispatch. */
  async online(job: OnlineJob): Promise<void> {
    const { orgId } = job;
    const at = new Date();
    const withState = job.devices.filter((d) => d.state);
    if (withState.length) {
      const ids = withState.map((d) => d.deviceId);
      const queued = JSON.stringify([
        historyEntry('QUEUED', at, { by: 'system:desired-state', source: 'reconnect with a differing state' }),
      ]);
      const expires = new Date(at.getTime() + (this.o.expiryS ?? 86_400) * 1000);
      await withTenant(this.o.db, orgId, async (tx) => {
        await sql`
          insert into device_states as s (device_id, org_id, reported, reported_at, updated_at)
          select i.device_id, ${orgId}::uuid, i.state, ${at}, ${at}
          from unnest(${ids}::uuid[], ${withState.map((d) => JSON.stringify(d.state))}::jsonb[]) as i(device_id, state)
          join devices d on d.id = i.device_id
          on conflict (device_id) do update set reported = s.reported || excluded.reported, reported_at = excluded.reported_at,
            updated_at = excluded.updated_at`.execute(tx);
        await sql`
          insert into commands (org_id, device_id, name, params, timeout_s, created_by, created_at, updated_at, expires_at, due_at, history)
          select s.org_id, s.device_id, ${SET_STATE_COMMAND}, jsonb_build_object('desired', ${SQL_DELTA}, 'version', s.version),
                 ${this.o.timeoutS ?? 30}, 'system:desired-state', ${at}, ${at}, ${expires}, ${expires}, ${queued}::jsonb
          from device_states s
          where s.device_id = any(${ids}::uuid[]) and not s.in_sync
            and not exists (select 1 from commands c where c.device_id = s.device_id and c.name = ${SET_STATE_COMMAND}
                            and c.status in ('QUEUED', 'SENT', 'DELIVERED'))`.execute(tx);
      });
    }
    await this.dispatch(
      orgId,
      job.devices.map((d) => d.deviceId),
    );
  }

  /**
   * Timeouts and expiries that are due, lapsed claims, and devices marked for dispatch (at most
   * `sweepBatch`; `more` says there may be others, and `start` sweeps again at once).
   */
  async sweep(): Promise<{ ended: number; dispatched: number; more: boolean }> {
    const at = new Date();
    const iso = at.toISOString();
    // Cheap check first: is any timeout or expiry due at all (one probe of `commands_due_idx`)? Only then read the
    // queue for replies still waiting (up to ~1,100 jobs parsed) and judge at its horizon, which is never after now.
    const { rows: due } = await sql<{ one: number }>`
      select 1 as one from commands where due_at <= ${at} and status in ('QUEUED', 'SENT', 'DELIVERED') limit 1`.execute(this.o.db);
    // a command with a reply waiting is judged when the reply is applied; the others at the horizon
    const waiting = due.length ? await this.waitingReplies(at.getTime()) : { horizon: at.getTime(), commands: new Set<string>() };
    const judged = new Date(waiting.horizon);
    const { rows: ended } = !due.length
      ? { rows: [] as ChangeRow[] }
      : await sql<ChangeRow>`
      with due as (
        select id, (delivered_at is null and expires_at <= ${judged}) as expired from commands
        where due_at <= ${judged} and status in ('QUEUED', 'SENT', 'DELIVERED') and id <> all(${[...waiting.commands]}::uuid[])
        order by due_at limit 1000 for update skip locked
      )
      update commands c set status = case when due.expired then 'EXPIRED' else 'FAILED' end,
        completed_at = ${at}, updated_at = ${at}, due_at = null,
        error = case when due.expired then 'expired before the device received it'
                     else 'timeout: no result within ' || c.timeout_s || ' s' end,
        history = c.history || jsonb_build_array(jsonb_build_object(
          'status', case when due.expired then 'EXPIRED' else 'FAILED' end, 'at', ${iso}::text,
          'evidence', jsonb_build_object('sweep', case when due.expired then 'expired' else 'timeout' end,
                                         'dueAt', to_jsonb(c.due_at), 'expiresAt', to_jsonb(c.expires_at))))
      from due where c.id = due.id
      returning c.id, c.org_id, c.device_id, c.status, c.job_id`.execute(this.o.db);
    await this.changed(ended);
    // lapsed claims (killed between claim and PUBACK) and freed devices: back to the dispatch sweep
    const lapsed = at.getTime() - this.lapsedAt >= this.lapsedEveryMs();
    if (lapsed) this.lapsedAt = at.getTime();
    if (lapsed || ended.length)
      await sql`
        update device_states set pending_dispatch = true
        where not pending_dispatch and device_id in (
          ${lapsed ? sql`${lapsedClaims(at)} union ` : sql``}select unnest(${ended.map((e) => e.device_id)}::uuid[]))`.execute(this.o.db);
    const { rows: pending } = await sql<{ org_id: string; device_id: string }>`
      select org_id, device_id from device_states where pending_dispatch limit ${this.o.sweepBatch ?? 5000}`.execute(this.o.db);
    const byOrg = new Map<string, string[]>();
    for (const p of pending) {
      const l = byOrg.get(p.org_id);
      if (l) l.push(p.device_id);
      else byOrg.set(p.org_id, [p.device_id]);
    }
    // chunks of distinct devices, SWEEP_PARALLEL at a time (a fleet job's release marks thousands at once)
    const chunks: [string, string[]][] = [];
    for (const [orgId, ids] of byOrg) for (let i = 0; i < ids.length; i += 1000) chunks.push([orgId, ids.slice(i, i + 1000)]);
    let dispatched = 0;
    for (let i = 0; i < chunks.length; i += SWEEP_PARALLEL)
      for (const n of await Promise.all(
        chunks.slice(i, i + SWEEP_PARALLEL).map(([orgId, ids]) => this.dispatch(orgId, ids, { skipLocked: true })),
      ))
        dispatched += n;
    return { ended: ended.length, dispatched, more: pending.length >= (this.o.sweepBatch ?? 5000) };
  }

  /**
   * What the sweep must not judge yet: the commands named by device replies still waiting in the `commands`
   * queue (active, waiting, or delayed for a retry), and a horizon before which every other waiting reply
   * reached ingest (`now` when the read saw them all). The sweep times out and expires the other commands whose
   * due time is before the horizon, and leaves the named ones to the apply, which judges each reply by its
   * `receivedAt` (the reply contract): under queue lag (a burst, a restarted worker) a command whose device
   * answered in time is not failed while its answer waits. Reads the active jobs and the {@link HORIZON_SCAN}
   * oldest waiting and delayed ones; when more wait, the unread ones are newer, and the horizon is kept
   * {@link HORIZON_SLACK_MS} before the newest read (every timeout then waits for the queue to catch up).
   */
  async waitingReplies(now: number): Promise<{ horizon: number; commands: Set<string> }> {
    this.queue ??= new Queue(COMMANDS_QUEUE, { connection: this.o.redis, prefix: queuePrefix(this.o.prefix) });
    const [active, waiting, delayed] = await Promise.all([
      this.queue.getActive(0, 999),
      this.queue.getWaiting(0, HORIZON_SCAN - 1),
      this.queue.getDelayed(0, HORIZON_SCAN - 1),
    ]);
    let horizon = now;
    const commands = new Set<string>();
    for (const list of [waiting, delayed])
      if (list.length >= HORIZON_SCAN) horizon = Math.min(horizon, Math.max(...list.map((j) => j?.timestamp ?? 0)) - HORIZON_SLACK_MS);
    for (const j of [...active, ...waiting, ...delayed]) {
      if (j?.name !== 'replies') continue;
      try {
        const { job } = parseCommandsJob(j.name, j.data);
        if (job.name === 'replies') for (const r of job.data.replies) commands.add(r.reply.id);
      } catch {
        // a corrupt job fails on its own; it holds no reply that can be applied
      }
    }
    return { horizon, commands };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.sweeping;
    await this.worker?.close();
    await this.queue?.close();
  }
}

/**
 * A batch of replies as rounds: round k holds, in arrival order, the k-th reply of each command
 * the batch mentions, so a round names each command once and the rounds keep every command's order.
 */
export function replyRounds(items: readonly ReplyItem[]): ReplyItem[][] {
  const seen = new Map<string, number>();
  const rounds: ReplyItem[][] = [];
  for (const item of items) {
    const k = seen.get(item.reply.id) ?? 0;
    seen.set(item.reply.id, k + 1);
    const round = rounds[k] ?? [];
    round.push(item);
    rounds[k] = round;
  }
  return rounds;
}

/** A command's `received` reply and the result that follows it, from the same device. */
export interface ReplyPair {
  received: ReplyItem;
  final: ReplyItem;
}

/** The commands of a batch whose first two replies are `received` then a result, from the same device. */
export function replyPairs(items: readonly ReplyItem[]): ReplyPair[] {
  const firstTwo = new Map<string, ReplyItem[]>();
  for (const item of items) {
    const l = firstTwo.get(item.reply.id) ?? [];
    if (l.length < 2) l.push(item);
    firstTwo.set(item.reply.id, l);
  }
  const out: ReplyPair[] = [];
  for (const [received, final] of firstTwo.values()) {
    if (received?.reply.status === 'received' && final && final.reply.status !== 'received' && final.deviceId === received.deviceId)
      out.push({ received, final });
  }
  return out;
}
