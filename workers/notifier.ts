import { DelayedError, type Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import { sql } from 'kysely';
import { type Agent, request } from 'undici';
import { openChannelSecret, sealChannelSecret } from '../lib/contracts/channel-secret.js';
import {
  NOTIFY_QUEUE,
  type NotificationRequest,
  type NotificationSeverity,
  notifyJob,
  parseNotificationRequest,
  severityRank,
} from '../lib/contracts/notifications.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { type Db, isUuid, type Tx } from '../lib/db.js';
import { ContractError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { MailSender } from '../lib/mail.js';
import { counter } from '../lib/metrics.js';
import {
  DEFAULT_TEMPLATES,
  DELIVERY_HEADER,
  FALLBACK_TEMPLATE,
  meetsSeverity,
  quietUntil,
  render,
  renderMessage,
  SIGNATURE_HEADER,
  signWebhook,
  type TemplateText,
  TIMESTAMP_HEADER,
} from '../lib/notifications.js';
import { parseRuleNotify, ruleNotification } from '../lib/rule-notify.js';
import type { Severity } from '../lib/rules.js';
import { guardedAgent, parseAllowlist, RefusedAddressError, type WebhookAllowlist, webhookUrlProblem } from '../lib/webhook-guard.js';

/**
 * The notifier (docs/notifications.md): consumes the `notify` queue (the alarm feed below and the
 * rules' notify action produce it), groups requests of a site and rule into digests, resolves
 * recipients and channels, and sends each delivery from its own queue with retries, logging every
 * attempt. A ticker reads new `alarm_events` (one cursor, row-locked: one replica at a time),
 * flushes due digests and runs due escalation levels (`notification_escalations`, claimed with
 * SKIP LOCKED), so all of it survives a restart and runs once with several replicas.
 */

/** The workers' own queue of single deliveries (not a contract: only the notifier fills and consumes it). */
export const DELIVERY_QUEUE = 'notify-delivery';

/** How many digest items are listed (the rest are counted). */
export const DIGEST_ITEMS = 10;

const processed = counter('rulr_notifications_total', 'Notification requests the notifier handled, by outcome', ['outcome']);
const ruleNotifyInvalid = counter(
  'rulr_rule_notify_invalid_total',
  'Stored rule notify actions that could not be read (the alarm notification still goes)',
);
/** an alarm event's actor when a rule raised or cleared it */
const RULE_ACTOR_RE = '^rule:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
const attemptsTotal = counter('rulr_notification_attempts_total', 'Delivery attempts, by channel kind and result', ['kind', 'result']);

export interface NotifierOptions {
  db: Db;
  redisUrl: string;
  /** `REDIS_PREFIX` */
  prefix: string;
  mail: MailSender;
  logger: Logger;
  tickMs?: number;
  digestWindowMs?: number;
  webhookTimeoutMs?: number;
  attempts?: number;
  backoffMs?: number;
  /** read the alarm feed (off in tests that only feed the queue) */
  feed?: boolean;
  /** opens channel secrets (lib/contracts/channel-secret.ts: `channelSecretKey(RULR_SECRET)`) */
  channelSecretKey: Buffer;
  /** RULR_SECRET_PREVIOUS's keys: channel secrets sealed before RULR_SECRET was rotated still open (`rulr secrets reseal` moves them) */
  previousChannelSecretKeys?: readonly Buffer[] | undefined;
  /** private addresses outgoing requests may reach (`NOTIFY_WEBHOOK_ALLOW`) @default none */
  allow?: WebhookAllowlist;
  /** deliveries still pending this long after creation without a queued job are queued again @default 60000 */
  repairAfterMs?: number;
  /**
   * How long the feed waits at a hole in `alarm_events` ids (an earlier id whose transaction has not
   * committed yet) before it treats the hole as a rolled-back insert and reads on @default 10000
   */
  feedGapMs?: number;
  /** how long a delivery attempt holds its row against a second attempt @default webhookTimeoutMs + 5000 */
  leaseMs?: number;
  /** BullMQ lock of a running job: a process killed mid-job leaves it to another after this @default 30000 */
  lockDurationMs?: number;
  /** test hook: called before each delivery attempt (a test may kill the process while it waits) */
  beforeSend?: (deliveryId: string) => Promise<void>;
  /** test hook: called once an attempt and its outcome are committed */
  afterAttempt?: (deliveryId: string, ok: boolean) => void;
}

type Kind = 'webhook' | 'email' | 'sms' | 'chat';

interface NewDelivery {
  channel_id: string | null;
  kind: Kind;
  user_id: string | null;
  address: string;
  status: 'pending' | 'deferred';
  not_before: Date | null;
  payload: unknown;
}

interface ChannelRow {
  id: string;
  kind: Kind;
  url: string | null;
  addresses: string[];
  body_template: string | null;
}

/** A row of the alarm feed: an alarm event with its alarm, device, site and rules. */
interface FeedEvent {
  id: string;
  org_id: string;
  alarm_id: string;
  kind: string;
  at: Date;
  type: string;
  severity: NotificationSeverity;
  message: string;
  value: number | null;
  rule_id: string | null;
  device_id: string;
  device_name: string | null;
  site_id: string | null;
  site_name: string | null;
  rule_name: string | null;
  /** the rule that made this change (the event's actor `rule:<id>`), when it has a notify action */
  change_rule_id: string | null;
  change_rule_notify: unknown;
}

interface DeliveryJob {
  orgId: string;
  deliveryId: string;
}

interface Level {
  delaySeconds: number;
  roles?: string[];
  userIds?: string[];
  channelIds?: string[];
}

export class Notifier {
  readonly queue: Queue;
  readonly deliveries: Queue;
  private workers: Worker[] = [];
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private closed = false;
  private readonly allow: WebhookAllowlist;
  private readonly agent: Agent;
  private lastRepair = 0;
  private legacySealed = false;
  /** holes in the feed's ids: the id after which one begins → when this process first saw it */
  private readonly gaps = new Map<string, number>();

  constructor(private readonly o: NotifierOptions) {
    const connection = { url: o.redisUrl, maxRetriesPerRequest: null };
    this.queue = new Queue(NOTIFY_QUEUE, { connection, prefix: queuePrefix(o.prefix) });
    this.deliveries = new Queue(DELIVERY_QUEUE, { connection, prefix: queuePrefix(o.prefix) });
    this.allow = o.allow ?? parseAllowlist('');
    this.agent = guardedAgent(this.allow, { timeoutMs: o.webhookTimeoutMs ?? 10_000 });
  }

  start(): this {
    const connection = { url: this.o.redisUrl, maxRetriesPerRequest: null };
    const prefix = queuePrefix(this.o.prefix);
    const lock = this.o.lockDurationMs ? { lockDuration: this.o.lockDurationMs, stalledInterval: this.o.lockDurationMs } : {};
    this.workers.push(
      new Worker(NOTIFY_QUEUE, (job) => this.onRequest(job), { connection, prefix, concurrency: 4, ...lock }),
      new Worker(DELIVERY_QUEUE, (job, token) => this.onDelivery(job as Job<DeliveryJob>, token), {
        connection,
        prefix,
        concurrency: 8,
        ...lock,
      }),
    );
    for (const w of this.workers) w.on('error', (err) => this.o.logger.warn({ err }, 'notifier queue error'));
    const every = this.o.tickMs ?? 1000;
    this.timer = setInterval(() => {
      if (this.ticking) return;
      this.ticking = this.tick()
        .catch((err) => this.o.logger.warn({ err }, 'notifier tick failed'))
        .finally(() => {
          this.ticking = undefined;
        });
    }, every);
    return this;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.ticking;
    await Promise.all(this.workers.map((w) => w.close()));
    await this.queue.close();
    await this.deliveries.close();
    await this.agent.close();
  }

  /** One pass of the ticker: the alarm feed, due digests, due escalation levels. */
  async tick(now = Date.now()): Promise<void> {
    if (!this.legacySealed) {
      await this.sealLegacySecrets();
      this.legacySealed = true;
    }
    if (this.o.feed !== false) await this.readFeed();
    if (this.closed) return;
    await this.flushDigests(now);
    if (this.closed) return;
    await this.runEscalations(now);
    if (this.closed) return;
    await this.repair(now);
  }

  /**
   * Seals the channel secrets stored in clear before migration 0057 (`secret` → `secret_sealed`):
   * once per process, at its first tick. Returns how many it sealed.
   */
  async sealLegacySecrets(): Promise<number> {
    const rows = await sql<{ id: string; org_id: string; secret: string }>`
      select id, org_id, secret from notification_channels where secret is not null`.execute(this.o.db);
    let n = 0;
    for (const r of rows.rows) {
      const sealed = sealChannelSecret(this.o.channelSecretKey, r.org_id, r.id, r.secret);
      // `and secret = …`: an admin's change meanwhile wins
      const u = await sql`update notification_channels set secret_sealed = ${sealed}, secret = null
        where id = ${r.id} and secret = ${r.secret}`.execute(this.o.db);
      n += Number(u.numAffectedRows ?? 0);
    }
    if (n) this.o.logger.info({ channels: n }, 'sealed channel secrets stored in clear');
    return n;
  }

  /**
   * Queues again the deliveries whose job was lost (a process killed between the commit of a
   * notification and the enqueue of its deliveries). A delivery whose job still exists keeps it:
   * the job id is the delivery's, so BullMQ ignores the repeat.
   */
  async repair(now = Date.now()): Promise<number> {
    const after = this.o.repairAfterMs ?? 60_000;
    if (now - this.lastRepair < Math.min(after, 30_000)) return 0;
    this.lastRepair = now;
    const rows = await sql<{ id: string; org_id: string; not_before: Date | null }>`
      select id, org_id, not_before from notification_deliveries
      where status in ('pending', 'deferred') and created_at < ${new Date(now - after)}
      order by created_at limit 500`.execute(this.o.db);
    const byOrg = new Map<string, { id: string; delay: number }[]>();
    for (const r of rows.rows) {
      const list = byOrg.get(r.org_id) ?? [];
      list.push({ id: r.id, delay: r.not_before ? Math.max(0, r.not_before.getTime() - now) : 0 });
      byOrg.set(r.org_id, list);
    }
    for (const [orgId, ids] of byOrg) await this.enqueueDeliveries(orgId, ids);
    return rows.rows.length;
  }

  // -------------------------------------------------------------------------------------------
  // requests

  private async onRequest(job: Job): Promise<void> {
    let req: NotificationRequest;
    try {
      req = parseNotificationRequest(job.data);
    } catch (err) {
      // counted by the contract; a bad job is not retried (it would fail the same way)
      processed.inc({ outcome: 'invalid' });
      this.o.logger.warn({ err, jobId: job.id }, 'notification request rejected');
      throw new UnrecoverableError((err as Error).message);
    }
    await this.handle(req);
  }

  /** Groups a request with a group key, or creates its notification and deliveries and queues them. */
  async handle(req: NotificationRequest): Promise<void> {
    if (req.groupKey) {
      await this.o.db.transaction().execute((tx) => this.group(tx, req));
      return;
    }
    const queued = await this.o.db.transaction().execute((tx) => this.createNotification(tx, req));
    await this.enqueueDeliveries(req.orgId, queued);
  }

  private async group(tx: Tx, req: NotificationRequest): Promise<void> {
    const ins = await sql<{ id: string }>`
      insert into notifications (org_id, dedup_key, source_kind, source_id, event, site_id, severity, template_key, grouped)
      values (${req.orgId}, ${req.dedupKey}, ${req.source.kind}, ${req.source.id}, ${req.event}, ${req.siteId}, ${req.severity}, ${req.templateKey}, true)
      on conflict (org_id, dedup_key) do nothing returning id`.execute(tx);
    const id = ins.rows[0]?.id;
    if (!id) return void processed.inc({ outcome: 'duplicate' });
    const item = JSON.stringify([
      { deviceName: req.variables.deviceName ?? null, message: req.variables.message ?? null, sourceId: req.source.id },
    ]);
    const window = this.o.digestWindowMs ?? 30_000;
    const d = await sql<{ id: string }>`
      insert into notification_digests (org_id, group_key, first_request, items, max_severity, due_at)
      values (${req.orgId}, ${req.groupKey}, ${JSON.stringify(req)}::jsonb, ${item}::jsonb, ${req.severity},
              now() + make_interval(secs => ${window / 1000}))
      on conflict (org_id, group_key) where flushed_at is null do update set
        count = notification_digests.count + 1,
        items = case when jsonb_array_length(notification_digests.items) < ${DIGEST_ITEMS}
                then notification_digests.items || excluded.items else notification_digests.items end,
        max_severity = case when ${severityRank(req.severity)} > (4 - array_position(
            array['critical','major','minor','warning','indeterminate'], notification_digests.max_severity) + 1)
          then excluded.max_severity else notification_digests.max_severity end
      returning id`.execute(tx);
    await sql`update notifications set digest_id = ${d.rows[0]?.id} where id = ${id}`.execute(tx);
    processed.inc({ outcome: 'grouped' });
  }

  /** Sends due digests: one alone as itself, several as one `alarm.digest` message. */
  async flushDigests(now = Date.now()): Promise<void> {
    const queued = await this.o.db.transaction().execute(async (tx) => {
      const due = await sql<{ id: string; org_id: string; first_request: unknown; count: number; items: unknown[]; max_severity: string }>`
        select id, org_id, first_request, count, items, max_severity from notification_digests
        where flushed_at is null and due_at <= ${new Date(now)} order by due_at limit 50 for update skip locked`.execute(tx);
      const out: { orgId: string; ids: { id: string; delay: number }[] }[] = [];
      for (const d of due.rows) {
        await sql`update notification_digests set flushed_at = now() where id = ${d.id}`.execute(tx);
        let first: NotificationRequest;
        try {
          first = parseNotificationRequest(d.first_request);
        } catch {
          continue; // counted; the digest is closed
        }
        // The digest's own key: the grouped request's key is already taken by its `grouped` row.
        const req: NotificationRequest =
          d.count === 1
            ? { ...first, dedupKey: `digest:${d.id}`, groupKey: null }
            : {
                ...first,
                dedupKey: `digest:${d.id}`,
                templateKey: 'alarm.digest',
                severity: d.max_severity as NotificationSeverity,
                groupKey: null,
                variables: first.variables,
              };
        const extra =
          d.count === 1
            ? {}
            : {
                count: d.count,
                items: d.items,
                more: Math.max(0, d.count - d.items.length),
                eventWord: first.event === 'alarm.cleared' ? 'cleared' : 'raised',
                windowSeconds: Math.round((this.o.digestWindowMs ?? 30_000) / 1000),
              };
        out.push({ orgId: d.org_id, ids: await this.createNotification(tx, req, extra, d.count, d.id) });
      }
      return out;
    });
    for (const q of queued) await this.enqueueDeliveries(q.orgId, q.ids);
  }

  private async template(tx: Tx, orgId: string, key: string): Promise<TemplateText> {
    const own = await tx
      .selectFrom('notification_templates')
      .select(['subject', 'body', 'html'])
      .where('org_id', '=', orgId)
      .where('key', '=', key)
      .executeTakeFirst();
    return own ?? DEFAULT_TEMPLATES[key] ?? FALLBACK_TEMPLATE;
  }

  /**
   * The notification of a request and its deliveries, once per `(orgId, dedupKey)`; returns the
   * deliveries to queue (on a repeat: those still pending, so a lost enqueue is made good).
   */
  private async createNotification(
    tx: Tx,
    req: NotificationRequest,
    extra: Record<string, unknown> = {},
    count = 1,
    digestId: string | null = null,
  ): Promise<{ id: string; delay: number }[]> {
    const view: Record<string, unknown> = {
      ...(await this.names(tx, req)),
      ...req.variables,
      ...extra,
      severity: req.severity,
      event: req.event,
      at: new Date(req.at).toISOString(),
    };
    const message = renderMessage(await this.template(tx, req.orgId, req.templateKey), view);
    const ins = await sql<{ id: string }>`
      insert into notifications (org_id, dedup_key, source_kind, source_id, event, site_id, severity, template_key, count, subject, digest_id)
      values (${req.orgId}, ${req.dedupKey}, ${req.source.kind}, ${req.source.id}, ${req.event}, ${req.siteId}, ${req.severity},
              ${req.templateKey}, ${count}, ${message.subject}, ${digestId})
      on conflict (org_id, dedup_key) do nothing returning id`.execute(tx);
    const notificationId = ins.rows[0]?.id;
    if (!notificationId) {
      processed.inc({ outcome: 'duplicate' });
      const pending = await sql<{ id: string; not_before: Date | null }>`
        select d.id, d.not_before from notification_deliveries d join notifications n on n.id = d.notification_id
        where n.org_id = ${req.orgId} and n.dedup_key = ${req.dedupKey} and d.status in ('pending', 'deferred')`.execute(tx);
      return pending.rows.map((r) => ({ id: r.id, delay: r.not_before ? Math.max(0, r.not_before.getTime() - Date.now()) : 0 }));
    }
    const roles = new Set<string>(req.recipients.roles);
    const userIds = new Set<string>(req.recipients.userIds);
    const channelIds = new Set<string>(req.recipients.channelIds);
    if (req.recipients.rules) {
      const rules = await sql<{ min_severity: NotificationSeverity; roles: string[]; user_ids: string[]; channel_ids: string[] }>`
        select r.min_severity, r.roles, r.user_ids, r.channel_ids from notification_rules r
        where r.org_id = ${req.orgId} and r.enabled and ${req.event} = any(r.events)
          and (r.site_id is null or exists (
            select 1 from sites s join sites rs on rs.id = r.site_id and rs.org_id = s.org_id
            where s.id = ${req.siteId} and s.org_id = ${req.orgId} and s.path <@ rs.path))`.execute(tx);
      for (const r of rules.rows) {
        if (!meetsSeverity(req.severity, r.min_severity)) continue;
        for (const x of r.roles) roles.add(x);
        for (const x of r.user_ids) userIds.add(x);
        for (const x of r.channel_ids) channelIds.add(x);
      }
    }
    const deliveries: NewDelivery[] = [];
    const base = {
      notificationId,
      orgId: req.orgId,
      event: req.event,
      severity: req.severity,
      source: req.source,
      siteId: req.siteId,
      templateKey: req.templateKey,
      count,
      subject: message.subject,
      text: message.text,
      variables: view,
      at: view.at,
    };
    const channels = (
      await sql<ChannelRow>`select id, kind, url, addresses, body_template from notification_channels
        where org_id = ${req.orgId} and enabled and (id = any(${[...channelIds]}::uuid[]) or kind = 'sms')
        order by created_at`.execute(tx)
    ).rows;
    const providerBody = (c: ChannelRow, to: string) =>
      render(c.body_template ?? '{"text":"{{subject}}\\n{{text}}"}', { ...view, subject: message.subject, text: message.text, to }, 'json');
    for (const c of channels.filter((x) => channelIds.has(x.id))) {
      if (c.kind === 'webhook' && c.url) deliveries.push(this.now(c, c.url, null, { ...base, body: base }));
      else if (c.kind === 'chat' && c.url) deliveries.push(this.now(c, c.url, null, { ...base, body: providerBody(c, '') }));
      else if (c.kind === 'email') for (const a of c.addresses) deliveries.push(this.now(c, a, null, { ...base, html: message.html }));
      else if (c.kind === 'sms')
        for (const a of c.addresses) deliveries.push(this.now(c, a, null, { ...base, body: providerBody(c, a), url: c.url }));
    }
    if (roles.size || userIds.size) {
      const sms = channels.find((c) => c.kind === 'sms' && c.url);
      const people = await sql<{
        user_id: string;
        email: string;
        channels: string[] | null;
        min_severity: NotificationSeverity | null;
        phone: string | null;
        time_zone: string | null;
        quiet_start: number | null;
        quiet_end: number | null;
        in_scope: boolean;
      }>`
        select m.user_id, u.email, p.channels, p.min_severity, p.phone, p.time_zone, p.quiet_start, p.quiet_end,
          (p.site_id is null or exists (select 1 from sites s join sites ps on ps.id = p.site_id and ps.org_id = s.org_id
             where s.id = ${req.siteId} and s.org_id = ${req.orgId} and s.path <@ ps.path)) as in_scope
        from memberships m join users u on u.id = m.user_id
        left join notification_preferences p on p.org_id = m.org_id and p.user_id = m.user_id
        where m.org_id = ${req.orgId} and u.disabled_at is null
          and (m.role = any(${[...roles]}::text[]) or m.user_id = any(${[...userIds]}::uuid[]))`.execute(tx);
      for (const p of people.rows) {
        if (!p.in_scope || !meetsSeverity(req.severity, p.min_severity ?? 'indeterminate')) continue;
        // Quiet hours defer everything but critical to their end (docs/notifications.md).
        const until =
          p.quiet_start != null && p.quiet_end != null && req.severity !== 'critical'
            ? quietUntil(Date.now(), { timeZone: p.time_zone ?? 'UTC', start: p.quiet_start, end: p.quiet_end })
            : null;
        const wants = p.channels ?? ['email'];
        const push = (d: NewDelivery) =>
          deliveries.push(
            until ? { ...d, status: 'deferred', not_before: new Date(until), user_id: p.user_id } : { ...d, user_id: p.user_id },
          );
        if (wants.includes('email')) push({ ...this.now(null, p.email, null, { ...base, html: message.html }), kind: 'email' });
        if (wants.includes('sms') && sms && p.phone)
          push(this.now(sms, p.phone, null, { ...base, body: providerBody(sms, p.phone), url: sms.url }));
      }
    }
    const out: { id: string; delay: number }[] = [];
    for (const d of deliveries) {
      const r = await sql<{ id: string }>`
        insert into notification_deliveries (org_id, notification_id, channel_id, kind, user_id, address, status, not_before, payload)
        values (${req.orgId}, ${notificationId}, ${d.channel_id}, ${d.kind}, ${d.user_id}, ${d.address}, ${d.status}, ${d.not_before},
                ${JSON.stringify(d.payload)}::jsonb)
        on conflict (notification_id, kind, address) do nothing returning id`.execute(tx);
      const id = r.rows[0]?.id;
      if (id) out.push({ id, delay: d.not_before ? Math.max(0, d.not_before.getTime() - Date.now()) : 0 });
    }
    processed.inc({ outcome: out.length ? 'created' : 'no-recipient' });
    return out;
  }

  /**
   * Names a rule's notify request does not carry (it names ids): the rule's, the device's and its
   * site's, and the alarm type, so `rule.notify` templates can say "dark lamps on lamp 1".
   */
  private async names(tx: Tx, req: NotificationRequest): Promise<Record<string, string | null>> {
    if (req.source.kind !== 'rule') return {};
    const deviceId = isUuid(req.variables.deviceId) ? req.variables.deviceId : null;
    const { rows } = await sql<{ rule_name: string | null; device_name: string | null; site_name: string | null }>`
      select (select name from rules where org_id = ${req.orgId} and id = ${req.source.id}) as rule_name,
        d.name as device_name, s.name as site_name
      from (select 1) one
      left join devices d on d.org_id = ${req.orgId} and d.id = ${deviceId}::uuid
      left join sites s on s.org_id = d.org_id and s.id = d.site_id`.execute(tx);
    const r = rows[0];
    const out: Record<string, string | null> = {
      ruleName: r?.rule_name ?? null,
      deviceName: r?.device_name ?? null,
      siteName: r?.site_name ?? null,
    };
    if (typeof req.variables.type === 'string') out.alarmType = req.variables.type;
    return out;
  }

  private now(c: ChannelRow | null, address: string, userId: string | null, payload: unknown): NewDelivery {
    return { channel_id: c?.id ?? null, kind: c?.kind ?? 'email', user_id: userId, address, status: 'pending', not_before: null, payload };
  }

  private async enqueueDeliveries(orgId: string, ids: { id: string; delay: number }[]): Promise<void> {
    if (!ids.length) return;
    await this.deliveries.addBulk(
      ids.map(({ id, delay }) => ({
        name: 'deliver',
        data: { orgId, deliveryId: id } satisfies DeliveryJob,
        opts: {
          jobId: `d-${id}`,
          delay,
          attempts: this.o.attempts ?? 6,
          backoff: { type: 'exponential', delay: this.o.backoffMs ?? 2000 },
          removeOnComplete: 1000,
          removeOnFail: 5000,
        },
      })),
    );
  }

  // -------------------------------------------------------------------------------------------
  // deliveries

  private async onDelivery(job: Job<DeliveryJob>, token?: string): Promise<void> {
    const { orgId, deliveryId } = job.data;
    // The lease makes one attempt at a time whatever BullMQ does (a job it thinks stalled runs twice).
    const leaseMs = this.o.leaseMs ?? (this.o.webhookTimeoutMs ?? 10_000) + 5000;
    const claim = await sql<{ id: string }>`
      update notification_deliveries set lease_until = now() + make_interval(secs => ${leaseMs / 1000})
      where id = ${deliveryId} and org_id = ${orgId} and status in ('pending', 'deferred')
        and (lease_until is null or lease_until < now())
      returning id`.execute(this.o.db);
    if (!claim.rows.length) {
      const held = await sql<{ status: string; wait_ms: number }>`
        select status, greatest(0, extract(epoch from (lease_until - now())) * 1000)::int as wait_ms
        from notification_deliveries where id = ${deliveryId} and org_id = ${orgId}`.execute(this.o.db);
      const h = held.rows[0];
      if (!h || h.status === 'sent' || h.status === 'failed' || !token) return;
      // another worker is sending it: look again when its lease ends, without spending an attempt
      await job.moveToDelayed(Date.now() + h.wait_ms + 100, token);
      throw new DelayedError();
    }
    const d = await sql<{
      id: string;
      kind: Kind;
      address: string;
      status: string;
      payload: Record<string, unknown>;
      channel_id: string | null;
      secret: string | null;
      secret_sealed: Buffer | null;
    }>`select d.id, d.kind, d.address, d.status, d.payload, c.id as channel_id, c.secret, c.secret_sealed from notification_deliveries d
       left join notification_channels c on c.id = d.channel_id and c.org_id = d.org_id
       where d.id = ${deliveryId} and d.org_id = ${orgId}`.execute(this.o.db);
    const row = d.rows[0];
    if (!row || row.status === 'sent' || row.status === 'failed') return;
    await this.o.beforeSend?.(deliveryId);
    const started = Date.now();
    const last = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    let result: { ok: boolean; retry: boolean; http?: number; response?: string; error?: string };
    try {
      if (row.kind === 'email') result = await this.sendMail(row);
      else {
        const secret = this.secretOf(orgId, row);
        result = typeof secret === 'string' || secret === null ? await this.post({ ...row, secret }) : secret;
      }
    } catch (e) {
      result = { ok: false, retry: true, error: (e as Error).message.slice(0, 500) };
    }
    const status = result.ok ? 'sent' : result.retry && !last ? 'pending' : 'failed';
    await this.o.db.transaction().execute(async (tx) => {
      await sql`insert into notification_attempts (org_id, delivery_id, ok, http_status, response, error, duration_ms)
        values (${orgId}, ${deliveryId}, ${result.ok}, ${result.http ?? null}, ${result.response ?? null}, ${result.error ?? null},
                ${Date.now() - started})`.execute(tx);
      await sql`update notification_deliveries set attempts = attempts + 1, status = ${status}, last_error = ${result.error ?? null},
        sent_at = ${result.ok ? new Date() : null}, lease_until = null where id = ${deliveryId}`.execute(tx);
    });
    attemptsTotal.inc({ kind: row.kind, result: result.ok ? 'ok' : status === 'pending' ? 'retry' : 'failed' });
    this.o.afterAttempt?.(deliveryId, result.ok);
    if (status === 'pending') throw new Error(result.error ?? 'delivery failed');
  }

  /**
   * The channel's signing secret in clear (sealed, or still in clear before the first tick sealed
   * it); when the sealed one does not open (another `RULR_SECRET`, or copied from another row) a
   * final failure: the delivery is not sent unsigned, and retrying would not help.
   */
  private secretOf(
    orgId: string,
    row: { channel_id: string | null; secret: string | null; secret_sealed: Buffer | null },
  ): string | null | { ok: false; retry: false; error: string } {
    if (!row.secret_sealed || !row.channel_id) return row.secret;
    try {
      return openChannelSecret(
        [this.o.channelSecretKey, ...(this.o.previousChannelSecretKeys ?? [])],
        orgId,
        row.channel_id,
        row.secret_sealed,
      );
    } catch (e) {
      const reason = e instanceof ContractError ? e.reason : (e as Error).message;
      return { ok: false, retry: false, error: `the channel's secret ${reason} (was RULR_SECRET changed?)` };
    }
  }

  private async sendMail(row: { address: string; payload: Record<string, unknown>; id: string }) {
    const p = row.payload;
    const sent = await this.o.mail.send({
      to: row.address,
      subject: String(p.subject ?? ''),
      text: String(p.text ?? ''),
      html: typeof p.html === 'string' ? p.html : undefined,
      headers: { 'X-RULR-Notification': String(p.notificationId ?? ''), 'X-RULR-Delivery': row.id },
    });
    return { ok: true, retry: false, response: `accepted ${sent.accepted.join(', ')} as ${sent.messageId}`.slice(0, 500) };
  }

  private async post(row: { id: string; kind: Kind; address: string; payload: Record<string, unknown>; secret: string | null }) {
    const body = typeof row.payload.body === 'string' ? row.payload.body : JSON.stringify(row.payload.body ?? row.payload);
    const ts = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'RULR-Notifier',
      [TIMESTAMP_HEADER]: String(ts),
      [DELIVERY_HEADER]: row.id,
    };
    if (row.secret) headers[SIGNATURE_HEADER] = signWebhook(row.secret, ts, body);
    // SSRF: the URL's scheme and literal address here, every resolved address when connecting.
    // an SMS delivery's address is the phone number; it posts to its provider's URL
    const url = typeof row.payload.url === 'string' ? row.payload.url : row.address;
    const problem = webhookUrlProblem(url, this.allow);
    if (problem) return { ok: false, retry: false, error: `the URL ${problem}` };
    let status: number;
    let text: string;
    try {
      const res = await request(url, {
        method: 'POST',
        headers,
        body,
        dispatcher: this.agent,
        signal: AbortSignal.timeout(this.o.webhookTimeoutMs ?? 10_000),
      });
      status = res.statusCode;
      text = (await res.body.text().catch(() => '')).slice(0, 500);
    } catch (e) {
      const err = e as Error & { cause?: unknown };
      if (err instanceof RefusedAddressError || err.cause instanceof RefusedAddressError) {
        return { ok: false, retry: false, error: new RefusedAddressError().message };
      }
      const timedOut = err.name === 'TimeoutError' || err.name === 'AbortError' || /timeout/i.test(err.name);
      return { ok: false, retry: true, error: timedOut ? 'timed out' : `request failed: ${err.message}`.slice(0, 500) };
    }
    if (status >= 200 && status < 300) return { ok: true, retry: false, http: status, response: text };
    const retry = status >= 500 || status === 408 || status === 429;
    return { ok: false, retry, http: status, response: text, error: `HTTP ${status}` };
  }

  // -------------------------------------------------------------------------------------------
  // the alarm feed and escalations

  /** New alarm events (raised, acknowledged, cleared) → notification requests and escalation due times. */
  async readFeed(): Promise<number> {
    return this.o.db.transaction().execute(async (tx) => {
      const cur = await sql<{ last_id: string }>`
        select last_id from notification_feed where name = 'alarm_events' for update skip locked`.execute(tx);
      const lastId = cur.rows[0]?.last_id;
      if (lastId === undefined) return 0; // another replica is reading it
      const events = await sql<FeedEvent>`
        select e.id, e.org_id, e.alarm_id, e.kind, e.at, a.type, a.severity, a.message, a.value, a.rule_id, a.device_id,
          d.name as device_name, d.site_id, s.name as site_name, r.name as rule_name,
          nr.id as change_rule_id, nr.notify as change_rule_notify
        from alarm_events e join alarms a on a.id = e.alarm_id
        left join devices d on d.id = a.device_id left join sites s on s.id = d.site_id left join rules r on r.id = a.rule_id
        left join rules nr on nr.org_id = e.org_id and nr.notify is not null and nr.id = (case when e.actor ~ ${RULE_ACTOR_RE}
          then substr(e.actor, 6)::uuid end)
        where e.id > ${lastId} order by e.id limit 500`.execute(tx);
      const ready = this.contiguous(lastId, events.rows);
      if (!ready.length) return 0;
      const jobs = [];
      for (const e of ready) {
        if (e.kind !== 'raised' && e.kind !== 'acknowledged' && e.kind !== 'cleared') continue;
        if (e.kind === 'acknowledged' || e.kind === 'cleared') {
          await sql`update notification_escalations set status = 'stopped', stopped_reason = ${e.kind}, updated_at = now()
            where alarm_id = ${e.alarm_id} and status = 'waiting'`.execute(tx);
          if (e.kind === 'acknowledged') continue;
        }
        const event = e.kind === 'raised' ? 'alarm.raised' : 'alarm.cleared';
        jobs.push(
          notifyJob({
            orgId: e.org_id,
            source: { kind: 'alarm', id: e.alarm_id },
            event,
            siteId: e.site_id,
            severity: e.severity,
            variables: alarmVariables(e),
            dedupKey: `alarm:${e.alarm_id}:${e.kind}`,
            groupKey: `${e.kind}:${e.site_id ?? 'no-site'}:${e.rule_id ?? e.type}`,
            at: e.at.getTime(),
          }),
        );
        const ruleJob = e.change_rule_id ? this.ruleNotifyJob(e, e.change_rule_id, event) : null;
        if (ruleJob) jobs.push(ruleJob);
        if (e.kind === 'raised') {
          await sql`
            insert into notification_escalations (org_id, alarm_id, policy_id, level, due_at)
            select p.org_id, ${e.alarm_id}, p.id, 0, ${e.at}::timestamptz + make_interval(secs => (p.levels -> 0 ->> 'delaySeconds')::int)
            from escalation_policies p
            where p.org_id = ${e.org_id} and p.enabled and jsonb_array_length(p.levels) > 0
              and (4 - array_position(array['critical','major','minor','warning','indeterminate'], p.min_severity) + 1) <= ${severityRank(e.severity)}
              and (p.site_id is null or exists (select 1 from sites s join sites ps on ps.id = p.site_id and ps.org_id = s.org_id
                   where s.id = ${e.site_id} and s.org_id = ${e.org_id} and s.path <@ ps.path))
            on conflict (alarm_id, policy_id) do nothing`.execute(tx);
        }
      }
      // queued before the cursor moves: a failure rolls the cursor back (job ids make a repeat harmless)
      if (jobs.length) await this.queue.addBulk(jobs);
      await sql`update notification_feed set last_id = ${ready.at(-1)?.id} where name = 'alarm_events'`.execute(tx);
      return ready.length;
    });
  }

  /**
   * The `notify` action of the rule that raised or cleared the alarm (the event's actor is
   * `rule:<id>`), read from the same committed event as the alarm notification: a process killed
   * after the evaluation committed loses nothing, and a repeat is one job (the dedup key).
   */
  private ruleNotifyJob(e: FeedEvent, ruleId: string, event: 'alarm.raised' | 'alarm.cleared') {
    const change = event === 'alarm.raised' ? 'raised' : 'cleared';
    try {
      const notify = parseRuleNotify(e.change_rule_notify);
      if (!notify) return null;
      const input = ruleNotification({
        orgId: e.org_id,
        ruleId,
        notify,
        change,
        alarm: {
          id: e.alarm_id,
          deviceId: e.device_id,
          type: e.type,
          severity: e.severity as Severity,
          value: e.value,
          message: e.message,
        },
        siteId: e.site_id,
        at: e.at.getTime(),
      });
      return input ? notifyJob(input) : null;
    } catch (err) {
      ruleNotifyInvalid.inc();
      this.o.logger.warn({ ruleId, err: (err as Error).message }, 'rule notify action refused');
      return null;
    }
  }

  /**
   * The events up to the first hole in their ids that may still fill. Ids are taken when a row is
   * inserted, not when it commits: a transaction that inserted id 7 may commit after the one that
   * inserted id 8, so reading 8 and moving the cursor past 7 would lose 7. The feed stops before a
   * hole until it has seen the hole for `feedGapMs` (then the insert was rolled back, or its row was
   * deleted with its alarm) and reads on.
   */
  private contiguous<E extends { id: string }>(lastId: string, rows: E[], now = Date.now()): E[] {
    const wait = this.o.feedGapMs ?? 10_000;
    let prev = BigInt(lastId);
    const out: E[] = [];
    for (const e of rows) {
      const id = BigInt(e.id);
      if (id !== prev + 1n) {
        const key = String(prev);
        const since = this.gaps.get(key) ?? now;
        this.gaps.set(key, since);
        if (now - since < wait) break;
      }
      out.push(e);
      prev = id;
    }
    for (const key of this.gaps.keys()) if (BigInt(key) < prev) this.gaps.delete(key);
    return out;
  }

  /** Due escalation levels: notify the level's recipients unless the alarm was acknowledged or cleared. */
  async runEscalations(now = Date.now()): Promise<void> {
    await this.o.db.transaction().execute(async (tx) => {
      const due = await sql<{
        id: string;
        org_id: string;
        alarm_id: string;
        level: number;
        due_at: Date;
        levels: Level[];
        enabled: boolean;
        acknowledged_at: Date | null;
        cleared_at: Date | null;
        type: string;
        severity: NotificationSeverity;
        message: string;
        value: number | null;
        device_id: string;
        device_name: string | null;
        site_id: string | null;
        site_name: string | null;
        rule_name: string | null;
      }>`
        select x.id, x.org_id, x.alarm_id, x.level, x.due_at, p.levels, p.enabled, a.acknowledged_at, a.cleared_at, a.type, a.severity,
          a.message, a.value, a.device_id, d.name as device_name, d.site_id, s.name as site_name, r.name as rule_name
        from notification_escalations x join escalation_policies p on p.id = x.policy_id join alarms a on a.id = x.alarm_id
        left join devices d on d.id = a.device_id left join sites s on s.id = d.site_id left join rules r on r.id = a.rule_id
        where x.status = 'waiting' and x.due_at <= ${new Date(now)} order by x.due_at limit 100 for update of x skip locked`.execute(tx);
      const jobs = [];
      for (const x of due.rows) {
        const level = x.levels[x.level];
        if (x.acknowledged_at || x.cleared_at || !x.enabled || !level) {
          const reason = x.acknowledged_at ? 'acknowledged' : x.cleared_at ? 'cleared' : !x.enabled ? 'policy disabled' : 'no level';
          await sql`update notification_escalations set status = 'stopped', stopped_reason = ${reason}, updated_at = now() where id = ${x.id}`.execute(
            tx,
          );
          continue;
        }
        jobs.push(
          notifyJob({
            orgId: x.org_id,
            source: { kind: 'alarm', id: x.alarm_id },
            event: 'alarm.escalated',
            siteId: x.site_id,
            severity: x.severity,
            variables: { ...alarmVariables({ ...x, alarm_id: x.alarm_id, at: x.due_at }), level: x.level + 1 },
            recipients: {
              rules: false,
              roles: (level.roles ?? []) as never,
              userIds: level.userIds ?? [],
              channelIds: level.channelIds ?? [],
            },
            dedupKey: `alarm:${x.alarm_id}:escalated:${x.id}:${x.level}`,
            at: now,
          }),
        );
        const next = x.levels[x.level + 1];
        if (next) {
          await sql`update notification_escalations set level = level + 1, updated_at = now(),
            due_at = due_at + make_interval(secs => ${next.delaySeconds}) where id = ${x.id}`.execute(tx);
        } else {
          await sql`update notification_escalations set status = 'done', updated_at = now() where id = ${x.id}`.execute(tx);
        }
      }
      if (jobs.length) await this.queue.addBulk(jobs);
    });
  }
}

function alarmVariables(e: {
  alarm_id: string;
  type: string;
  message: string;
  value: number | null;
  device_id: string;
  device_name: string | null;
  site_id: string | null;
  site_name: string | null;
  rule_name: string | null;
  at: Date;
}): Record<string, string | number | null> {
  return {
    alarmId: e.alarm_id,
    alarmType: e.type,
    message: e.message,
    value: e.value,
    deviceId: e.device_id,
    deviceName: e.device_name ?? e.device_id,
    siteId: e.site_id,
    siteName: e.site_name,
    ruleName: e.rule_name,
  };
}
