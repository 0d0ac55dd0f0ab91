import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { actorOf } from '../../lib/audit.js';
import {
  NOTIFICATION_EVENTS,
  NOTIFICATION_ROLES,
  NOTIFICATION_SEVERITIES,
  type NotificationInput,
  TEMPLATE_KEY_RE,
} from '../../lib/contracts/notifications.js';
import { isUuid } from '../../lib/db.js';
import { BadInputError, ForbiddenError } from '../../lib/errors.js';
import { decodeTimeIdCursor, encodeCursor } from '../../lib/graphql-scalars.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import { formatClock, parseClock, providerBodyProblem, templateProblem } from '../../lib/notifications.js';
import { canonicalTimeZone } from '../../lib/time-zones.js';
import { parseAllowlist, type WebhookAllowlist, webhookUrlProblem } from '../../lib/webhook-guard.js';
import type {
  ChannelDefinition,
  ChannelKind,
  ChannelRow,
  NotificationsRepository,
  PolicyDefinition,
  Preferences,
  RuleDefinition,
} from './repositories/notifications.js';
import { check, checkFirst, checkId } from './validation.js';

/**
 * Resolvers of the notifications part of the rules subgraph (`# --- notifications` in schema.graphql,
 * docs/notifications.md). Viewers read channels, rules, policies, templates and their organization's
 * delivery log; only admins write (API keys: `rules:write` with the admin role); every member sets
 * their own preferences. Merged into the subgraph's resolver map by resolvers.ts.
 */

const READ: Requirement = { role: 'viewer', scope: 'rules:read' };
const ADMIN: Requirement = { role: 'admin', scope: 'rules:write' };
const MAX_PAGE = 200;
const MAX_LIST = 100;

interface Ctx {
  identity: Identity;
  repos: { notifications: NotificationsRepository };
  /** adds a request to the `notify` queue (lib/contracts/notifications.ts) */
  notify?: ((input: NotificationInput) => Promise<void>) | undefined;
}
type Args = Record<string, unknown>;

/** `ALARM_RAISED` ↔ `alarm.raised` */
const EVENT_ENUM = Object.fromEntries(NOTIFICATION_EVENTS.map((e) => [e.replace('.', '_').toUpperCase(), e]));
const KIND_ENUM = { WEBHOOK: 'webhook', EMAIL: 'email', SMS: 'sms', CHAT: 'chat' };
const STATUS_ENUM = { PENDING: 'pending', DEFERRED: 'deferred', SENT: 'sent', FAILED: 'failed' };

const name = z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters');
const uuid = z.string().refine(isUuid, 'must be a uuid');
const ids = z.array(uuid).max(MAX_LIST, `at most ${MAX_LIST}`);
const email = z.string().trim().email('must be an e-mail address').max(254);
const PHONE_RE = /^\+?[0-9]{3,20}$/;
const phone = z.string().trim().regex(PHONE_RE, 'must be a phone number (digits, optionally a leading +)');
const severity = z.enum(NOTIFICATION_SEVERITIES);
const roles = z.array(z.enum(NOTIFICATION_ROLES)).max(3);
const secret = z.string().min(16, 'must be at least 16 characters').max(200, 'must be at most 200 characters');

const channelInput = z.object({
  name,
  kind: z.enum(['webhook', 'email', 'sms', 'chat']),
  url: z.string().max(2000, 'must be at most 2000 characters').nullish(),
  addresses: z.array(z.string()).max(MAX_LIST, `at most ${MAX_LIST}`).nullish(),
  bodyTemplate: z.string().max(10_000, 'must be at most 10000 characters').nullish(),
  secret: secret.nullish(),
  enabled: z.boolean().nullish(),
});
const channelPatch = z.object({
  name: name.optional(),
  url: z.string().max(2000, 'must be at most 2000 characters').optional(),
  addresses: z.array(z.string()).max(MAX_LIST, `at most ${MAX_LIST}`).optional(),
  bodyTemplate: z.string().max(10_000, 'must be at most 10000 characters').optional(),
  secret: z.union([z.literal(''), secret]).optional(),
  enabled: z.boolean().optional(),
});

const bad = (field: string, why: string) => new BadInputError(`${field}: ${why}`, { field });

/** What a channel of its kind must and may carry; BAD_USER_INPUT naming the field. */
function checkChannel(d: ChannelDefinition, hasSecret: boolean, allow: WebhookAllowlist): ChannelDefinition {
  const posts = d.kind !== 'email';
  if (posts) {
    if (!d.url) throw bad('input.url', `required for ${d.kind.toUpperCase()}`);
    const problem = webhookUrlProblem(d.url, allow);
    if (problem) throw bad('input.url', problem);
  } else if (d.url) throw bad('input.url', 'not allowed for EMAIL');
  if (d.kind === 'webhook' && d.bodyTemplate)
    throw bad('input.bodyTemplate', 'not allowed for WEBHOOK (the body is the notification as JSON)');
  if (d.kind === 'email' && d.bodyTemplate) throw bad('input.bodyTemplate', 'not allowed for EMAIL (use setNotificationTemplate)');
  if (d.bodyTemplate) {
    const problem = providerBodyProblem(d.bodyTemplate);
    if (problem) throw bad('input.bodyTemplate', problem);
  }
  if (d.kind === 'email' && hasSecret) throw bad('input.secret', 'not allowed for EMAIL');
  if (d.kind === 'webhook' || d.kind === 'chat') {
    if (d.addresses.length) throw bad('input.addresses', `not allowed for ${d.kind.toUpperCase()}`);
  }
  if (d.kind === 'email' && !d.addresses.length) throw bad('input.addresses', 'at least one e-mail address');
  const item = d.kind === 'email' ? email : phone;
  const addresses = d.addresses.map((a, i) => check(item, a, `input.addresses.${i}`));
  return { ...d, addresses: [...new Set(addresses)] };
}

const templateInput = z.object({
  subject: z.string().max(500, 'must be at most 500 characters'),
  body: z.string().max(20_000, 'must be at most 20000 characters'),
  html: z.string().max(50_000, 'must be at most 50000 characters').nullish(),
});

const ruleInput = z.object({
  name,
  enabled: z.boolean().nullish(),
  events: z.array(z.enum(NOTIFICATION_EVENTS)).min(1, 'at least one event').max(NOTIFICATION_EVENTS.length),
  minSeverity: severity,
  siteId: uuid.nullish(),
  roles: roles.nullish(),
  userIds: ids.nullish(),
  channelIds: ids.nullish(),
});

const levelInput = z.object({
  delaySeconds: z
    .number()
    .int()
    .min(1, 'must be at least 1')
    .max(7 * 86_400, 'must be at most 604800 (7 days)'),
  roles: roles.nullish(),
  userIds: ids.nullish(),
  channelIds: ids.nullish(),
});
const policyInput = z.object({
  name,
  enabled: z.boolean().nullish(),
  minSeverity: severity,
  siteId: uuid.nullish(),
  levels: z.array(levelInput).min(1, 'at least one level').max(10, 'at most 10 levels'),
});

const prefsInput = z.object({
  channels: z.array(z.enum(['email', 'sms'])).max(2),
  minSeverity: severity,
  phone: phone.nullish(),
  siteId: uuid.nullish(),
  timeZone: z.string().max(100),
  quietHours: z.object({ start: z.string(), end: z.string() }).nullish(),
});

const filterInput = z
  .object({
    alarmId: uuid.nullish(),
    channelId: uuid.nullish(),
    status: z.enum(['pending', 'deferred', 'sent', 'failed']).nullish(),
    from: z.date().nullish(),
    to: z.date().nullish(),
  })
  .nullish();

const uniq = <T>(xs: readonly T[] | null | undefined): T[] => [...new Set(xs ?? [])];

function parseRule(input: unknown): RuleDefinition {
  const r = check(ruleInput, input, 'input');
  const d: RuleDefinition = {
    name: r.name,
    enabled: r.enabled ?? true,
    events: uniq(r.events),
    minSeverity: r.minSeverity,
    siteId: r.siteId ?? null,
    roles: uniq(r.roles),
    userIds: uniq(r.userIds),
    channelIds: uniq(r.channelIds),
  };
  if (!d.roles.length && !d.userIds.length && !d.channelIds.length) throw bad('input', 'name at least one role, user or channel');
  return d;
}

function parsePolicy(input: unknown): PolicyDefinition {
  const r = check(policyInput, input, 'input');
  const levels = r.levels.map((l, i) => {
    const level = { delaySeconds: l.delaySeconds, roles: uniq(l.roles), userIds: uniq(l.userIds), channelIds: uniq(l.channelIds) };
    if (!level.roles.length && !level.userIds.length && !level.channelIds.length) {
      throw bad(`input.levels.${i}`, 'name at least one role, user or channel');
    }
    return level;
  });
  return { name: r.name, enabled: r.enabled ?? true, minSeverity: r.minSeverity, siteId: r.siteId ?? null, levels };
}

function parsePreferences(input: unknown): Preferences {
  const r = check(prefsInput, input, 'input');
  const timeZone = canonicalTimeZone(r.timeZone);
  if (!timeZone) throw bad('input.timeZone', 'unknown time zone');
  const channels = uniq(r.channels);
  if (channels.includes('sms') && !r.phone) throw bad('input.phone', 'required for sms');
  let quietStart: number | null = null;
  let quietEnd: number | null = null;
  if (r.quietHours) {
    quietStart = parseClock(r.quietHours.start);
    quietEnd = parseClock(r.quietHours.end);
    if (quietStart === null) throw bad('input.quietHours.start', 'must be HH:MM');
    if (quietEnd === null) throw bad('input.quietHours.end', 'must be HH:MM');
  }
  return { channels, minSeverity: r.minSeverity, phone: r.phone ?? null, siteId: r.siteId ?? null, timeZone, quietStart, quietEnd };
}

const DEFAULT_PREFERENCES: Preferences = {
  channels: ['email'],
  minSeverity: 'indeterminate',
  phone: null,
  siteId: null,
  timeZone: 'UTC',
  quietStart: null,
  quietEnd: null,
};

/** Preferences belong to a signed-in member; an API key has none. */
function member(identity: Identity): Identity {
  const i = authorize(identity, READ);
  if (i.kind !== 'user') throw new ForbiddenError('notification preferences belong to a signed-in member');
  return i;
}

function templateKey(key: unknown): string {
  if (typeof key !== 'string' || key.length > 100 || !TEMPLATE_KEY_RE.test(key))
    throw bad('key', 'must look like alarm.raised (lower case, dots)');
  return key;
}

export function notificationResolvers(o: { allow?: WebhookAllowlist } = {}) {
  const allow = o.allow ?? parseAllowlist('');
  return {
    NotificationEvent: EVENT_ENUM,
    NotificationChannelKind: KIND_ENUM,
    NotificationDeliveryStatus: STATUS_ENUM,
    Query: {
      notificationChannels(_: unknown, _args: Args, ctx: Ctx) {
        return ctx.repos.notifications.listChannels(authorize(ctx.identity, READ).orgId);
      },
      notificationChannel(_: unknown, args: Args, ctx: Ctx) {
        return ctx.repos.notifications.channel(authorize(ctx.identity, READ).orgId, checkId(args.id));
      },
      notificationTemplates(_: unknown, _args: Args, ctx: Ctx) {
        return ctx.repos.notifications.listTemplates(authorize(ctx.identity, READ).orgId);
      },
      notificationRules(_: unknown, _args: Args, ctx: Ctx) {
        return ctx.repos.notifications.listRules(authorize(ctx.identity, READ).orgId);
      },
      escalationPolicies(_: unknown, _args: Args, ctx: Ctx) {
        return ctx.repos.notifications.listPolicies(authorize(ctx.identity, READ).orgId);
      },
      async myNotificationPreferences(_: unknown, _args: Args, ctx: Ctx) {
        const i = member(ctx.identity);
        return (await ctx.repos.notifications.preferences(i.orgId, i.subject)) ?? DEFAULT_PREFERENCES;
      },
      async notifications(_: unknown, args: Args, ctx: Ctx) {
        const { orgId } = authorize(ctx.identity, READ);
        const first = checkFirst((args.first as number | null | undefined) ?? 50, MAX_PAGE);
        const f = check(filterInput, args.filter, 'filter') ?? {};
        const after = typeof args.after === 'string' ? decodeTimeIdCursor(args.after) : undefined;
        const filter = {
          alarmId: f.alarmId ?? undefined,
          channelId: f.channelId ?? undefined,
          status: f.status ?? undefined,
          from: f.from ?? undefined,
          to: f.to ?? undefined,
        };
        const rows = await ctx.repos.notifications.deliveries(orgId, { limit: first + 1, after, filter });
        const page = rows.slice(0, first);
        const attempts = page.length
          ? await ctx.repos.notifications.attempts(
              orgId,
              page.map((r) => r.id),
            )
          : [];
        const edges = page.map((r) => ({
          cursor: encodeCursor([r.createdAtText, r.id]),
          node: { ...r, attempts: attempts.filter((a) => a.deliveryId === r.id) },
        }));
        return { edges, pageInfo: { hasNextPage: rows.length > first, endCursor: edges.at(-1)?.cursor ?? null } };
      },
    },
    Mutation: {
      createNotificationChannel(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, ADMIN);
        const r = check(channelInput, args.input, 'input');
        const def = checkChannel(
          {
            name: r.name,
            kind: r.kind as ChannelKind,
            url: r.url ?? null,
            addresses: r.addresses ?? [],
            bodyTemplate: r.bodyTemplate ?? null,
            enabled: r.enabled ?? true,
          },
          !!r.secret,
          allow,
        );
        return ctx.repos.notifications.createChannel(identity, def, r.secret ?? null);
      },
      updateNotificationChannel(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, ADMIN);
        const id = checkId(args.id);
        const input = (args.input ?? {}) as Args;
        for (const [k, v] of Object.entries(input)) if (v === null) throw bad(`input.${k}`, 'must not be null');
        const r = check(channelPatch, input, 'input');
        const secretChange = r.secret === undefined ? undefined : r.secret === '' ? null : r.secret;
        return ctx.repos.notifications.updateChannel(
          identity,
          id,
          (before: ChannelRow) =>
            checkChannel(
              {
                name: r.name ?? before.name,
                kind: before.kind,
                url: r.url ?? before.url,
                addresses: r.addresses ?? before.addresses,
                bodyTemplate: r.bodyTemplate === undefined ? before.bodyTemplate : r.bodyTemplate || null,
                enabled: r.enabled ?? before.enabled,
              },
              secretChange === undefined ? before.hasSecret : secretChange !== null,
              allow,
            ),
          secretChange,
        );
      },
      async deleteNotificationChannel(_: unknown, args: Args, ctx: Ctx) {
        await ctx.repos.notifications.deleteChannel(authorize(ctx.identity, ADMIN), checkId(args.id));
        return true;
      },
      async testNotificationChannel(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, ADMIN);
        const channel = await ctx.repos.notifications.testChannel(identity, checkId(args.id));
        if (!ctx.notify) throw new Error('the notify queue is not available');
        await ctx.notify({
          orgId: identity.orgId,
          source: { kind: 'channel', id: channel.id },
          event: 'channel.test',
          siteId: null,
          severity: 'indeterminate',
          variables: { channelName: channel.name, actor: actorOf(identity) },
          recipients: { rules: false, roles: [], userIds: [], channelIds: [channel.id] },
          dedupKey: `channel-test:${channel.id}:${randomUUID()}`,
        });
        return true;
      },
      setNotificationTemplate(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, ADMIN);
        const key = templateKey(args.key);
        const r = check(templateInput, args.input, 'input');
        for (const field of ['subject', 'body', 'html'] as const) {
          const text = r[field];
          const problem = text ? templateProblem(text) : null;
          if (problem) throw bad(`input.${field}`, problem);
        }
        return ctx.repos.notifications.setTemplate(identity, key, { subject: r.subject, body: r.body, html: r.html ?? null });
      },
      async deleteNotificationTemplate(_: unknown, args: Args, ctx: Ctx) {
        await ctx.repos.notifications.deleteTemplate(authorize(ctx.identity, ADMIN), templateKey(args.key));
        return true;
      },
      createNotificationRule(_: unknown, args: Args, ctx: Ctx) {
        return ctx.repos.notifications.saveRule(authorize(ctx.identity, ADMIN), null, parseRule(args.input));
      },
      updateNotificationRule(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, ADMIN);
        return ctx.repos.notifications.saveRule(identity, checkId(args.id), parseRule(args.input));
      },
      async deleteNotificationRule(_: unknown, args: Args, ctx: Ctx) {
        await ctx.repos.notifications.deleteRule(authorize(ctx.identity, ADMIN), checkId(args.id));
        return true;
      },
      createEscalationPolicy(_: unknown, args: Args, ctx: Ctx) {
        return ctx.repos.notifications.savePolicy(authorize(ctx.identity, ADMIN), null, parsePolicy(args.input));
      },
      updateEscalationPolicy(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, ADMIN);
        return ctx.repos.notifications.savePolicy(identity, checkId(args.id), parsePolicy(args.input));
      },
      async deleteEscalationPolicy(_: unknown, args: Args, ctx: Ctx) {
        await ctx.repos.notifications.deletePolicy(authorize(ctx.identity, ADMIN), checkId(args.id));
        return true;
      },
      setMyNotificationPreferences(_: unknown, args: Args, ctx: Ctx) {
        return ctx.repos.notifications.setPreferences(member(ctx.identity), parsePreferences(args.input));
      },
    },
    NotificationPreferences: {
      quietHours: (p: Preferences) =>
        p.quietStart === null || p.quietEnd === null ? null : { start: formatClock(p.quietStart), end: formatClock(p.quietEnd) },
    },
  };
}
