import { randomUUID } from 'node:crypto';
import { type RawBuilder, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { sealChannelSecret } from '../../../lib/contracts/channel-secret.js';
import { type Db, isUniqueViolation, isUuid, type Tx, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';

/**
 * SQL of the notifications part of the rules subgraph (docs/notifications.md): channels, templates,
 * recipient rules, escalation policies, members' preferences and the delivery log. Every statement
 * runs in a tenant transaction (row-level security) and filters `org_id`; writes are audited. A
 * channel's secret is written here, sealed (lib/contracts/channel-secret.ts), and never selected
 * (only whether one is set).
 */

export type ChannelKind = 'webhook' | 'email' | 'sms' | 'chat';

export interface ChannelDefinition {
  name: string;
  kind: ChannelKind;
  url: string | null;
  addresses: string[];
  bodyTemplate: string | null;
  enabled: boolean;
}

export interface ChannelRow extends ChannelDefinition {
  id: string;
  hasSecret: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface TemplateRow {
  key: string;
  subject: string;
  body: string;
  html: string | null;
  updatedAt: Date;
}

export interface RuleDefinition {
  name: string;
  enabled: boolean;
  events: string[];
  minSeverity: string;
  siteId: string | null;
  roles: string[];
  userIds: string[];
  channelIds: string[];
}
export interface NotificationRuleRow extends RuleDefinition {
  id: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface EscalationLevel {
  delaySeconds: number;
  roles: string[];
  userIds: string[];
  channelIds: string[];
}
export interface PolicyDefinition {
  name: string;
  enabled: boolean;
  minSeverity: string;
  siteId: string | null;
  levels: EscalationLevel[];
}
export interface PolicyRow extends PolicyDefinition {
  id: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface Preferences {
  channels: string[];
  minSeverity: string;
  phone: string | null;
  siteId: string | null;
  timeZone: string;
  quietStart: number | null;
  quietEnd: number | null;
}

export interface DeliveryFilter {
  alarmId?: string | undefined;
  channelId?: string | undefined;
  status?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
}

export interface DeliveryRow {
  id: string;
  notificationId: string;
  event: string;
  severity: string;
  subject: string;
  count: number;
  alarmId: string | null;
  channelId: string | null;
  userId: string | null;
  kind: ChannelKind;
  address: string;
  status: string;
  notBefore: Date | null;
  lastError: string | null;
  createdAt: Date;
  createdAtText: string;
  sentAt: Date | null;
}

export interface AttemptRow {
  deliveryId: string;
  at: Date;
  ok: boolean;
  httpStatus: number | null;
  response: string | null;
  error: string | null;
  durationMs: number;
}

const CHANNEL = sql`id, name, kind, url, addresses, body_template as "bodyTemplate", (secret is not null or secret_sealed is not null) as "hasSecret", enabled,
  created_at as "createdAt", updated_at as "updatedAt"`;
const RULE = sql`id, name, enabled, events, min_severity as "minSeverity", site_id as "siteId", roles, user_ids as "userIds",
  channel_ids as "channelIds", created_at as "createdAt", updated_at as "updatedAt"`;
const POLICY = sql`id, name, enabled, min_severity as "minSeverity", site_id as "siteId", levels, created_at as "createdAt", updated_at as "updatedAt"`;

const conflict = (what: string, name: string) => (e: unknown) => {
  if (isUniqueViolation(e)) throw new ConflictError(`a ${what} named "${name}" already exists`);
  throw e;
};

async function first<T>(tx: Tx, q: RawBuilder<T>, what: string): Promise<T> {
  const { rows } = await q.execute(tx);
  const row = rows[0];
  if (!row) throw new NotFoundError(what);
  return row;
}

export class NotificationsRepository {
  constructor(
    private readonly db: Db,
    private readonly secretKey: Buffer,
  ) {}

  private tenant<T>(orgId: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return withTenant(this.db, orgId, fn);
  }

  // --- references

  /** BAD_USER_INPUT naming `field` unless every id is one of the organization's rows of `table`. */
  private async refs(tx: Tx, orgId: string, table: 'sites' | 'notification_channels', ids: string[], field: string): Promise<void> {
    if (!ids.length) return;
    const { rows } = await sql<{
      id: string;
    }>`select id from ${sql.table(table)} where org_id = ${orgId} and id = any(${ids}::uuid[])`.execute(tx);
    const found = new Set(rows.map((r) => r.id));
    const missing = ids.findIndex((id) => !found.has(id));
    if (missing >= 0) {
      const what = table === 'sites' ? 'site' : 'channel';
      throw new BadInputError(`${field}: ${what} not found`, { field });
    }
  }

  private async members(tx: Tx, orgId: string, ids: string[], field: string): Promise<void> {
    if (!ids.length) return;
    const { rows } = await sql<{ user_id: string }>`
      select user_id from memberships where org_id = ${orgId} and user_id = any(${ids}::uuid[])`.execute(tx);
    if (rows.length !== new Set(ids).size) throw new BadInputError(`${field}: not a member of this organization`, { field });
  }

  // --- channels

  listChannels(orgId: string): Promise<ChannelRow[]> {
    return this.tenant(orgId, async (tx) => {
      const { rows } =
        await sql<ChannelRow>`select ${CHANNEL} from notification_channels where org_id = ${orgId} order by created_at, id`.execute(tx);
      return rows;
    });
  }

  async channel(orgId: string, id: string): Promise<ChannelRow | null> {
    if (!isUuid(id)) return null;
    return this.tenant(orgId, async (tx) => {
      const { rows } = await sql<ChannelRow>`select ${CHANNEL} from notification_channels where org_id = ${orgId} and id = ${id}`.execute(
        tx,
      );
      return rows[0] ?? null;
    });
  }

  createChannel(identity: Identity, def: ChannelDefinition, secret: string | null): Promise<ChannelRow> {
    const orgId = identity.orgId;
    // the id is chosen here: the sealed secret names its row
    const id = randomUUID();
    const sealed = secret === null ? null : sealChannelSecret(this.secretKey, orgId, id, secret);
    return this.tenant(orgId, async (tx) => {
      const row = await first(
        tx,
        sql<ChannelRow>`insert into notification_channels (id, org_id, name, kind, url, addresses, body_template, secret_sealed, enabled, created_by)
          values (${id}, ${orgId}, ${def.name}, ${def.kind}, ${def.url}, ${def.addresses}, ${def.bodyTemplate}, ${sealed}, ${def.enabled}, ${actorOf(identity)})
          returning ${CHANNEL}`,
        'channel',
      ).catch(conflict('channel', def.name));
      await audit(tx, orgId, actorOf(identity), 'notification_channel.create', 'notification_channel', row.id, null, row);
      return row;
    });
  }

  /** `secret`: undefined keeps it, null removes it. `next` builds the new definition from the old (checked by the caller). */
  updateChannel(
    identity: Identity,
    id: string,
    next: (before: ChannelRow) => ChannelDefinition,
    secret: string | null | undefined,
  ): Promise<ChannelRow> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const before = await first(
        tx,
        sql<ChannelRow>`select ${CHANNEL} from notification_channels where org_id = ${orgId} and id = ${id} for update`,
        'channel',
      );
      const d = next(before);
      const row = await first(
        tx,
        sql<ChannelRow>`update notification_channels set name = ${d.name}, url = ${d.url}, addresses = ${d.addresses},
          body_template = ${d.bodyTemplate}, enabled = ${d.enabled}, updated_at = now()
          ${
            secret === undefined
              ? sql``
              : sql`, secret = null, secret_sealed = ${secret === null ? null : sealChannelSecret(this.secretKey, orgId, id, secret)}`
          }
          where org_id = ${orgId} and id = ${id} returning ${CHANNEL}`,
        'channel',
      ).catch(conflict('channel', d.name));
      await audit(tx, orgId, actorOf(identity), 'notification_channel.update', 'notification_channel', id, before, row);
      return row;
    });
  }

  /** Deletes a channel and removes it from the rules and escalation levels that name it. */
  deleteChannel(identity: Identity, id: string): Promise<void> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const before = await first(
        tx,
        sql<ChannelRow>`delete from notification_channels where org_id = ${orgId} and id = ${id} returning ${CHANNEL}`,
        'channel',
      );
      await sql`update notification_rules set channel_ids = array_remove(channel_ids, ${id}::uuid), updated_at = now()
        where org_id = ${orgId} and ${id}::uuid = any(channel_ids)`.execute(tx);
      await audit(tx, orgId, actorOf(identity), 'notification_channel.delete', 'notification_channel', id, before, null);
    });
  }

  /** The channel's row for a test message (NOT_FOUND when it is not the caller's), audited. */
  testChannel(identity: Identity, id: string): Promise<ChannelRow> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const row = await first(
        tx,
        sql<ChannelRow>`select ${CHANNEL} from notification_channels where org_id = ${orgId} and id = ${id}`,
        'channel',
      );
      await audit(tx, orgId, actorOf(identity), 'notification_channel.test', 'notification_channel', id, null, null);
      return row;
    });
  }

  // --- templates

  listTemplates(orgId: string): Promise<TemplateRow[]> {
    return this.tenant(orgId, async (tx) => {
      const { rows } = await sql<TemplateRow>`select key, subject, body, html, updated_at as "updatedAt" from notification_templates
        where org_id = ${orgId} order by key`.execute(tx);
      return rows;
    });
  }

  setTemplate(identity: Identity, key: string, t: { subject: string; body: string; html: string | null }): Promise<TemplateRow> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const row = await first(
        tx,
        sql<TemplateRow>`insert into notification_templates (org_id, key, subject, body, html, updated_by)
          values (${orgId}, ${key}, ${t.subject}, ${t.body}, ${t.html}, ${actorOf(identity)})
          on conflict (org_id, key) do update set subject = excluded.subject, body = excluded.body, html = excluded.html,
            updated_by = excluded.updated_by, updated_at = now()
          returning key, subject, body, html, updated_at as "updatedAt"`,
        'template',
      );
      await audit(tx, orgId, actorOf(identity), 'notification_template.set', 'notification_template', null, null, row);
      return row;
    });
  }

  deleteTemplate(identity: Identity, key: string): Promise<void> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const before = await first(
        tx,
        sql<TemplateRow>`delete from notification_templates where org_id = ${orgId} and key = ${key}
          returning key, subject, body, html, updated_at as "updatedAt"`,
        'template',
      );
      await audit(tx, orgId, actorOf(identity), 'notification_template.delete', 'notification_template', null, before, null);
    });
  }

  // --- recipient rules

  listRules(orgId: string): Promise<NotificationRuleRow[]> {
    return this.tenant(orgId, async (tx) => {
      const { rows } =
        await sql<NotificationRuleRow>`select ${RULE} from notification_rules where org_id = ${orgId} order by created_at, id`.execute(tx);
      return rows;
    });
  }

  private async checkRule(tx: Tx, orgId: string, d: { siteId: string | null; userIds: string[]; channelIds: string[] }) {
    await this.refs(tx, orgId, 'sites', d.siteId ? [d.siteId] : [], 'input.siteId');
    await this.refs(tx, orgId, 'notification_channels', d.channelIds, 'input.channelIds');
    await this.members(tx, orgId, d.userIds, 'input.userIds');
  }

  /** Creates (no `id`) or replaces a recipient rule, its references checked in the transaction. */
  saveRule(identity: Identity, id: string | null, d: RuleDefinition): Promise<NotificationRuleRow> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      await this.checkRule(tx, orgId, d);
      const before = id
        ? await first(
            tx,
            sql<NotificationRuleRow>`select ${RULE} from notification_rules where org_id = ${orgId} and id = ${id} for update`,
            'rule',
          )
        : null;
      const row = id
        ? await first(
            tx,
            sql<NotificationRuleRow>`update notification_rules set name = ${d.name}, enabled = ${d.enabled}, events = ${d.events},
              min_severity = ${d.minSeverity}, site_id = ${d.siteId}, roles = ${d.roles}, user_ids = ${d.userIds}::uuid[],
              channel_ids = ${d.channelIds}::uuid[], updated_at = now() where org_id = ${orgId} and id = ${id} returning ${RULE}`,
            'rule',
          )
        : await first(
            tx,
            sql<NotificationRuleRow>`insert into notification_rules (org_id, name, enabled, events, min_severity, site_id, roles, user_ids, channel_ids, created_by)
              values (${orgId}, ${d.name}, ${d.enabled}, ${d.events}, ${d.minSeverity}, ${d.siteId}, ${d.roles}, ${d.userIds}::uuid[],
                      ${d.channelIds}::uuid[], ${actorOf(identity)}) returning ${RULE}`,
            'rule',
          );
      await audit(
        tx,
        orgId,
        actorOf(identity),
        id ? 'notification_rule.update' : 'notification_rule.create',
        'notification_rule',
        row.id,
        before,
        row,
      );
      return row;
    });
  }

  deleteRule(identity: Identity, id: string): Promise<void> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const before = await first(
        tx,
        sql<NotificationRuleRow>`delete from notification_rules where org_id = ${orgId} and id = ${id} returning ${RULE}`,
        'rule',
      );
      await audit(tx, orgId, actorOf(identity), 'notification_rule.delete', 'notification_rule', id, before, null);
    });
  }

  // --- escalation policies

  listPolicies(orgId: string): Promise<PolicyRow[]> {
    return this.tenant(orgId, async (tx) => {
      const { rows } =
        await sql<PolicyRow>`select ${POLICY} from escalation_policies where org_id = ${orgId} order by created_at, id`.execute(tx);
      return rows;
    });
  }

  /** Creates (no `id`) or replaces an escalation policy; its references checked in the transaction. */
  savePolicy(identity: Identity, id: string | null, d: PolicyDefinition): Promise<PolicyRow> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      await this.refs(tx, orgId, 'sites', d.siteId ? [d.siteId] : [], 'input.siteId');
      for (const [i, l] of d.levels.entries()) {
        await this.refs(tx, orgId, 'notification_channels', l.channelIds, `input.levels.${i}.channelIds`);
        await this.members(tx, orgId, l.userIds, `input.levels.${i}.userIds`);
      }
      const levels = JSON.stringify(d.levels);
      const before = id
        ? await first(
            tx,
            sql<PolicyRow>`select ${POLICY} from escalation_policies where org_id = ${orgId} and id = ${id} for update`,
            'escalation policy',
          )
        : null;
      const row = id
        ? await first(
            tx,
            sql<PolicyRow>`update escalation_policies set name = ${d.name}, enabled = ${d.enabled}, min_severity = ${d.minSeverity},
              site_id = ${d.siteId}, levels = ${levels}::jsonb, updated_at = now() where org_id = ${orgId} and id = ${id} returning ${POLICY}`,
            'escalation policy',
          )
        : await first(
            tx,
            sql<PolicyRow>`insert into escalation_policies (org_id, name, enabled, min_severity, site_id, levels, created_by)
              values (${orgId}, ${d.name}, ${d.enabled}, ${d.minSeverity}, ${d.siteId}, ${levels}::jsonb, ${actorOf(identity)}) returning ${POLICY}`,
            'escalation policy',
          );
      await audit(
        tx,
        orgId,
        actorOf(identity),
        id ? 'escalation_policy.update' : 'escalation_policy.create',
        'escalation_policy',
        row.id,
        before,
        row,
      );
      return row;
    });
  }

  deletePolicy(identity: Identity, id: string): Promise<void> {
    const orgId = identity.orgId;
    return this.tenant(orgId, async (tx) => {
      const before = await first(
        tx,
        sql<PolicyRow>`delete from escalation_policies where org_id = ${orgId} and id = ${id} returning ${POLICY}`,
        'escalation policy',
      );
      await audit(tx, orgId, actorOf(identity), 'escalation_policy.delete', 'escalation_policy', id, before, null);
    });
  }

  // --- preferences

  preferences(orgId: string, userId: string): Promise<Preferences | null> {
    return this.tenant(orgId, async (tx) => {
      const { rows } =
        await sql<Preferences>`select channels, min_severity as "minSeverity", phone, site_id as "siteId", time_zone as "timeZone",
        quiet_start as "quietStart", quiet_end as "quietEnd" from notification_preferences where org_id = ${orgId} and user_id = ${userId}`.execute(
          tx,
        );
      return rows[0] ?? null;
    });
  }

  setPreferences(identity: Identity, p: Preferences): Promise<Preferences> {
    const orgId = identity.orgId;
    const userId = identity.subject;
    return this.tenant(orgId, async (tx) => {
      await this.members(tx, orgId, [userId], 'identity');
      await this.refs(tx, orgId, 'sites', p.siteId ? [p.siteId] : [], 'input.siteId');
      const row = await first(
        tx,
        sql<Preferences>`insert into notification_preferences (org_id, user_id, channels, min_severity, phone, site_id, time_zone, quiet_start, quiet_end)
          values (${orgId}, ${userId}, ${p.channels}, ${p.minSeverity}, ${p.phone}, ${p.siteId}, ${p.timeZone}, ${p.quietStart}, ${p.quietEnd})
          on conflict (org_id, user_id) do update set channels = excluded.channels, min_severity = excluded.min_severity, phone = excluded.phone,
            site_id = excluded.site_id, time_zone = excluded.time_zone, quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end,
            updated_at = now()
          returning channels, min_severity as "minSeverity", phone, site_id as "siteId", time_zone as "timeZone",
            quiet_start as "quietStart", quiet_end as "quietEnd"`,
        'preferences',
      );
      await audit(tx, orgId, actorOf(identity), 'notification_preferences.set', 'user', userId, null, row);
      return row;
    });
  }

  // --- the delivery log

  /** Deliveries newest first, `limit` after the cursor `(createdAt text, id)`. */
  deliveries(orgId: string, o: { limit: number; after?: [string, string] | undefined; filter: DeliveryFilter }): Promise<DeliveryRow[]> {
    const f = o.filter;
    return this.tenant(orgId, async (tx) => {
      const { rows } = await sql<DeliveryRow>`
        select d.id, d.notification_id as "notificationId", n.event, n.severity, n.subject, n.count,
          case when n.source_kind = 'alarm' then n.source_id end as "alarmId", d.channel_id as "channelId", d.user_id as "userId",
          d.kind, d.address, d.status, d.not_before as "notBefore", d.last_error as "lastError", d.created_at as "createdAt",
          d.created_at::text as "createdAtText", d.sent_at as "sentAt"
        from notification_deliveries d join notifications n on n.id = d.notification_id and n.org_id = d.org_id
        where d.org_id = ${orgId}
          ${f.channelId ? sql`and d.channel_id = ${f.channelId}` : sql``}
          ${f.status ? sql`and d.status = ${f.status}` : sql``}
          ${f.from ? sql`and d.created_at >= ${f.from}` : sql``}
          ${f.to ? sql`and d.created_at < ${f.to}` : sql``}
          ${
            f.alarmId
              ? sql`and exists (select 1 from notifications g where g.org_id = ${orgId} and g.source_kind = 'alarm' and g.source_id = ${f.alarmId}
                  and (g.id = n.id or (g.digest_id is not null and g.digest_id = n.digest_id)))`
              : sql``
          }
          ${o.after ? sql`and (d.created_at, d.id) < (${o.after[0]}::timestamptz, ${o.after[1]}::uuid)` : sql``}
        order by d.created_at desc, d.id desc limit ${o.limit}`.execute(tx);
      return rows;
    });
  }

  /** Every attempt of these deliveries, oldest first. */
  attempts(orgId: string, deliveryIds: readonly string[]): Promise<AttemptRow[]> {
    return this.tenant(orgId, async (tx) => {
      const { rows } = await sql<AttemptRow>`
        select delivery_id as "deliveryId", at, ok, http_status as "httpStatus", response, error, duration_ms as "durationMs"
        from notification_attempts where org_id = ${orgId} and delivery_id = any(${deliveryIds}::uuid[]) order by id`.execute(tx);
      return rows;
    });
  }
}
