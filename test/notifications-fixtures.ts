import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { channelSecretKey, sealChannelSecret } from '../lib/contracts/channel-secret.js';
import { createLogger } from '../lib/logger.js';
import type { MailSender } from '../lib/mail.js';
import { LogMailSender } from '../lib/mail.js';
import { parseAllowlist } from '../lib/webhook-guard.js';
import type { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import { Notifier, type NotifierOptions } from '../workers/notifier.js';
import type { SubgraphFixture } from './devices-fixtures.js';

/** The alarms subgraph's fixture: its database, Redis prefix and mutations (raise, acknowledge). */
export type AlarmsFixture = SubgraphFixture<ReturnType<typeof createAlarmsSubgraph>>;
/** What the helpers below need of any subgraph's fixture: its database and configuration. */
type Fixture = Pick<SubgraphFixture, 't' | 'ctx' | 'org'>;

const label = (id: string) => id.replaceAll('-', '_');
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value; throws after `timeoutMs`. */
export async function until<T>(fn: () => Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** An organization with one site (`Main street`) and `devices` lamps on it. */
export async function tenant(f: Fixture, devices = 1) {
  const orgId = await f.org();
  const siteId = randomUUID();
  await sql`insert into sites (id, org_id, name, path) values (${siteId}, ${orgId}, 'Main street', ${label(siteId)}::ltree)`.execute(
    f.t.db,
  );
  const deviceIds = Array.from({ length: devices }, () => randomUUID());
  for (const [i, id] of deviceIds.entries()) {
    await sql`insert into devices (id, org_id, serial, name, site_id) values (${id}, ${orgId}, ${`SN-${id}`}, ${`lamp ${i + 1}`}, ${siteId})`.execute(
      f.t.db,
    );
  }
  return { orgId, siteId, deviceIds };
}

/**
 * A webhook channel of `orgId` (stored directly: the API is tested on its own), its secret sealed as
 * the API stores it; `clear: true` stores it in clear as rows written before migration 0057 were.
 */
export async function webhookChannel(
  f: Fixture,
  orgId: string,
  url: string,
  secret: string | null = null,
  kind = 'webhook',
  o: { clear?: boolean } = {},
) {
  const id = randomUUID();
  const sealed = secret && !o.clear ? sealChannelSecret(channelSecretKey(f.ctx.config.RULR_SECRET), orgId, id, secret) : null;
  await sql`insert into notification_channels (id, org_id, name, kind, url, secret, secret_sealed, created_by)
    values (${id}, ${orgId}, ${`hook ${randomUUID()}`}, ${kind}, ${url}, ${o.clear ? secret : null}, ${sealed}, 'test')`.execute(f.t.db);
  return id;
}

/** A recipient rule of `orgId`: these events, at least `minSeverity`, to these channels and roles. */
export async function recipientRule(
  f: Fixture,
  orgId: string,
  o: { events?: string[]; channelIds?: string[]; roles?: string[]; minSeverity?: string; siteId?: string | null },
) {
  await sql`insert into notification_rules (org_id, name, events, min_severity, site_id, roles, channel_ids, created_by)
    values (${orgId}, ${`rule ${randomUUID()}`}, ${o.events ?? ['alarm.raised']}, ${o.minSeverity ?? 'indeterminate'}, ${o.siteId ?? null},
            ${o.roles ?? []}, ${o.channelIds ?? []}::uuid[], 'test')`.execute(f.t.db);
}

const RAISE = `mutation($i: RaiseAlarmInput!) { raiseAlarm(input: $i) { id } }`;

/** Raises an alarm through the alarms API (as an admin of `orgId`); returns its id. */
export async function raise(f: AlarmsFixture, orgId: string, deviceId: string, type = `T-${randomUUID()}`, severity = 'MAJOR') {
  const r = await f.ok<{ raiseAlarm: { id: string } }>(f.as(orgId, 'admin'), RAISE, {
    i: { deviceId, type, severity, message: 'power 0 W while on' },
  });
  return r.raiseAlarm.id;
}

/** A notifier over the fixture's database and Redis prefix, fast clocks, 127.0.0.1 allowed. */
export function startNotifier(f: Fixture, o: Partial<NotifierOptions> & { mail?: MailSender } = {}): Notifier {
  const logger = createLogger('silent');
  return new Notifier({
    db: f.t.db,
    redisUrl: f.ctx.config.REDIS_URL,
    prefix: f.ctx.config.REDIS_PREFIX,
    mail: o.mail ?? new LogMailSender(logger),
    logger,
    tickMs: 50,
    digestWindowMs: 200,
    backoffMs: 100,
    allow: parseAllowlist('127.0.0.1/32'),
    channelSecretKey: channelSecretKey(f.ctx.config.RULR_SECRET),
    ...o,
  }).start();
}

/** A notification's deliveries and their attempts, oldest first. */
export async function deliveryLog(f: Fixture, orgId: string) {
  const deliveries = await sql<{
    id: string;
    kind: string;
    address: string;
    status: string;
    attempts: number;
    not_before: Date | null;
    event: string;
  }>`
    select d.id, d.kind, d.address, d.status, d.attempts, d.not_before, n.event from notification_deliveries d
    join notifications n on n.id = d.notification_id where d.org_id = ${orgId} order by d.created_at, d.id`.execute(f.t.db);
  const attempts = await sql<{ delivery_id: string; ok: boolean; http_status: number | null; error: string | null }>`
    select delivery_id, ok, http_status, error from notification_attempts where org_id = ${orgId} order by id`.execute(f.t.db);
  return { deliveries: deliveries.rows, attempts: attempts.rows };
}

/** The delivery log of `orgId` once its first delivery is `status` (waited for, as {@link until} does). */
export const deliveryLogOnce = (f: Fixture, orgId: string, status: 'sent' | 'failed', what = `the delivery to be ${status}`) =>
  until(async () => {
    const l = await deliveryLog(f, orgId);
    return l.deliveries[0]?.status === status ? l : null;
  }, what);
