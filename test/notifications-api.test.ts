import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { channelSecretKey, openChannelSecret } from '../lib/contracts/channel-secret.js';
import { createSubgraph as createRulesSubgraph, typeDefs as rulesTypeDefs } from '../subgraphs/rules/index.js';
import type { Notifier } from '../workers/notifier.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';
import { startNotifier, tenant, until } from './notifications-fixtures.js';
import { startWebhookServer, type TestWebhookServer } from './support/webhook.js';

// The notifications API of the rules subgraph: channels (secrets write-only, SSRF rule), templates,
// recipient rules, escalation policies, preferences and the delivery log; admin-only writes and
// tenant isolation. The delivery log is filled by a real notifier (workers) through the real queue.

let f: SubgraphFixture<ReturnType<typeof createRulesSubgraph>>;
let hooks: TestWebhookServer;
let notifier: Notifier | undefined;

beforeAll(async () => {
  // the subgraph accepts 127.0.0.1 like a deployment that allowlists it; other private ranges stay refused
  f = await subgraphFixture(createRulesSubgraph, { NOTIFY_WEBHOOK_ALLOW: '127.0.0.1/32' });
  hooks = await startWebhookServer();
});
afterEach(async () => {
  await notifier?.close();
  notifier = undefined;
});
afterAll(async () => {
  await hooks?.close();
  await f?.close();
});

const CHANNEL = `id name kind url addresses bodyTemplate hasSecret enabled`;
const CREATE = `mutation($i: CreateNotificationChannelInput!) { createNotificationChannel(input: $i) { ${CHANNEL} } }`;
const UPDATE = `mutation($id: ID!, $i: UpdateNotificationChannelInput!) { updateNotificationChannel(id: $id, input: $i) { ${CHANNEL} } }`;
const DELETE = `mutation($id: ID!) { deleteNotificationChannel(id: $id) }`;
const TEST = `mutation($id: ID!) { testNotificationChannel(id: $id) }`;
const CHANNELS = `{ notificationChannels { ${CHANNEL} } }`;
const LOG = `query($f: NotificationFilter, $first: Int, $after: String) { notifications(filter: $f, first: $first, after: $after) {
  edges { cursor node { id event kind address status channelId subject attempts { ok httpStatus error } } } pageInfo { hasNextPage endCursor } } }`;
const RULE = `mutation($i: NotificationRuleInput!) { createNotificationRule(input: $i) { id events minSeverity roles channelIds siteId } }`;
const POLICY = `mutation($i: EscalationPolicyInput!) { createEscalationPolicy(input: $i) { id minSeverity levels { delaySeconds roles channelIds } } }`;
const PREFS = `{ myNotificationPreferences { channels minSeverity phone timeZone quietHours { start end } } }`;
const SET_PREFS = `mutation($i: NotificationPreferencesInput!) { setMyNotificationPreferences(input: $i) { channels minSeverity phone timeZone quietHours { start end } } }`;
const TEMPLATE = `mutation($k: String!, $i: NotificationTemplateInput!) { setNotificationTemplate(key: $k, input: $i) { key subject body } }`;

const hook = (path = `/api/${randomUUID()}`) => ({ name: `hook ${randomUUID()}`, kind: 'WEBHOOK', url: `${hooks.url}${path}` });

describe('channels', () => {
  it('store a webhook secret without ever returning it', async () => {
    const orgId = await f.org();
    const secret = 'a-very-long-signing-secret';
    const r = await f.run(f.as(orgId), CREATE, { i: { ...hook(), secret } });
    expect(r.errors).toBeUndefined();
    expect(JSON.stringify(r.data)).not.toContain(secret);
    expect(r.data?.createNotificationChannel).toMatchObject({ kind: 'WEBHOOK', hasSecret: true, addresses: [] });
    const listed = await f.run(f.as(orgId, 'viewer'), CHANNELS);
    expect(JSON.stringify(listed.data)).not.toContain(secret);
    // the type has no field that could carry it
    const type = rulesTypeDefs.definitions.find((d) => 'name' in d && d.name?.value === 'NotificationChannel');
    const fields = type && 'fields' in type ? (type.fields ?? []).map((x) => x.name.value) : [];
    expect(fields).toContain('hasSecret');
    expect(fields.filter((x) => /secret/i.test(x))).toEqual(['hasSecret']);
    const id = (r.data as { createNotificationChannel: { id: string } }).createNotificationChannel.id;
    // stored sealed, never in clear: a dump of the table does not hold it
    const stored = async () =>
      (
        await sql<{ secret: string | null; secret_sealed: Buffer | null }>`select secret, secret_sealed from notification_channels
          where id = ${id}`.execute(f.t.db)
      ).rows[0];
    const created = await stored();
    expect(created?.secret).toBeNull();
    expect(created?.secret_sealed?.includes(Buffer.from(secret))).toBe(false);
    const key = channelSecretKey(f.ctx.config.RULR_SECRET);
    expect(openChannelSecret(key, orgId, id, created?.secret_sealed as Buffer)).toBe(secret);
    const rotated = await f.ok(f.as(orgId), UPDATE, { id, i: { secret: 'another-long-signing-secret' } });
    expect(rotated.updateNotificationChannel.hasSecret).toBe(true);
    expect(openChannelSecret(key, orgId, id, (await stored())?.secret_sealed as Buffer)).toBe('another-long-signing-secret');
    const removed = await f.ok(f.as(orgId), UPDATE, { id, i: { secret: '' } });
    expect(removed.updateNotificationChannel.hasSecret).toBe(false);
    expect(await stored()).toEqual({ secret: null, secret_sealed: null });
  });

  it('refuse URLs that are not http(s) or point to private, loopback or link-local addresses', async () => {
    const orgId = await f.org();
    for (const url of [
      'ftp://example.com/x',
      'http://10.0.0.7/hook',
      'http://169.254.169.254/latest',
      'http://[::1]:80/',
      'http://192.168.0.10/',
    ]) {
      const r = await f.run(f.as(orgId), CREATE, { i: { name: `c ${randomUUID()}`, kind: 'WEBHOOK', url } });
      expect(codes(r), url).toEqual(['BAD_USER_INPUT']);
      expect(r.errors?.[0]?.message, url).toMatch(/^input\.url: /);
    }
    const ok = await f.run(f.as(orgId), CREATE, { i: { name: `c ${randomUUID()}`, kind: 'CHAT', url: 'https://hooks.example.com/x' } });
    expect(ok.errors).toBeUndefined();
    const moved = await f.run(f.as(orgId), UPDATE, {
      id: (ok.data as { createNotificationChannel: { id: string } }).createNotificationChannel.id,
      i: { url: 'http://10.1.1.1/' },
    });
    expect(codes(moved)).toEqual(['BAD_USER_INPUT']);
  });

  it('check what each kind carries', async () => {
    const orgId = await f.org();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ kind: 'EMAIL', addresses: [] }, /input\.addresses: at least one/],
      [{ kind: 'EMAIL', addresses: ['not-mail'] }, /input\.addresses\.0: must be an e-mail address/],
      [{ kind: 'EMAIL', addresses: ['ops@example.com'], url: 'https://example.com/' }, /input\.url: not allowed/],
      [{ kind: 'SMS', url: 'https://sms.example.com/send', addresses: ['call me'] }, /input\.addresses\.0: must be a phone number/],
      [{ kind: 'CHAT', url: 'https://chat.example.com/x', bodyTemplate: '{"text": {{text}}' }, /input\.bodyTemplate: /],
      [{ kind: 'WEBHOOK', url: 'https://example.com/', secret: 'short' }, /input\.secret: must be at least 16/],
    ];
    for (const [input, why] of cases) {
      const r = await f.run(f.as(orgId), CREATE, { i: { name: `c ${randomUUID()}`, ...input } });
      expect(r.errors?.[0]?.message, JSON.stringify(input)).toMatch(why);
    }
    const mail = await f.ok(f.as(orgId), CREATE, { i: { name: 'ops', kind: 'EMAIL', addresses: ['ops@example.com', 'ops@example.com'] } });
    expect(mail.createNotificationChannel.addresses).toEqual(['ops@example.com']);
    const dup = await f.run(f.as(orgId), CREATE, { i: { name: 'OPS', kind: 'EMAIL', addresses: ['x@example.com'] } });
    expect(codes(dup)).toEqual(['CONFLICT']);
  });

  it('are written by admins only', async () => {
    const orgId = await f.org();
    for (const role of ['viewer', 'operator'] as const) {
      const r = await f.run(f.as(orgId, role), CREATE, { i: hook() });
      expect(codes(r), role).toEqual(['FORBIDDEN']);
    }
    const key = await f.run(f.as(orgId, 'admin', 'apikey', ['rules:read']), CREATE, { i: hook() });
    expect(codes(key)).toEqual(['FORBIDDEN']);
    const created = await f.ok(f.as(orgId), CREATE, { i: hook() });
    const id = created.createNotificationChannel.id;
    for (const [q, v] of [
      [UPDATE, { id, i: { enabled: false } }],
      [DELETE, { id }],
      [TEST, { id }],
    ] as const) {
      expect(codes(await f.run(f.as(orgId, 'operator'), q, v))).toEqual(['FORBIDDEN']);
    }
  });

  it('of another organization are invisible and cannot be changed, tested or used', async () => {
    const a = await f.org();
    const b = await f.org();
    const theirs = (await f.ok(f.as(a), CREATE, { i: hook() })).createNotificationChannel.id;
    expect((await f.ok(f.as(b), CHANNELS)).notificationChannels).toEqual([]);
    expect((await f.ok(f.as(b), `query($id: ID!) { notificationChannel(id: $id) { id } }`, { id: theirs })).notificationChannel).toBeNull();
    for (const [q, v] of [
      [UPDATE, { id: theirs, i: { url: `${hooks.url}/stolen` } }],
      [DELETE, { id: theirs }],
      [TEST, { id: theirs }],
    ] as const) {
      expect(codes(await f.run(f.as(b), q, v))).toEqual(['NOT_FOUND']);
    }
    const rule = await f.run(f.as(b), RULE, { i: { name: 'steal', events: ['ALARM_RAISED'], minSeverity: 'MINOR', channelIds: [theirs] } });
    expect(codes(rule)).toEqual(['BAD_USER_INPUT']);
    expect(rule.errors?.[0]?.message).toBe('input.channelIds: channel not found');
    const policy = await f.run(f.as(b), POLICY, {
      i: { name: 'steal', minSeverity: 'MINOR', levels: [{ delaySeconds: 60, channelIds: [theirs] }] },
    });
    expect(policy.errors?.[0]?.message).toBe('input.levels.0.channelIds: channel not found');
    const still = await f.ok(f.as(a), CHANNELS);
    expect(still.notificationChannels[0]).toMatchObject({ id: theirs, enabled: true });
  });
});

describe('templates, rules and policies', () => {
  it('refuse templates that do not parse or use partials, and keep good ones', async () => {
    const orgId = await f.org();
    const broken = await f.run(f.as(orgId), TEMPLATE, { k: 'alarm.raised', i: { subject: '{{#open}}', body: 'x' } });
    expect(broken.errors?.[0]?.message).toMatch(/^input\.subject: is not a valid template/);
    const partial = await f.run(f.as(orgId), TEMPLATE, { k: 'alarm.raised', i: { subject: 's', body: '{{> secrets}}' } });
    expect(partial.errors?.[0]?.message).toBe('input.body: may not use partials');
    expect(codes(await f.run(f.as(orgId), TEMPLATE, { k: 'Bad Key', i: { subject: 's', body: 'b' } }))).toEqual(['BAD_USER_INPUT']);
    const ok = await f.ok(f.as(orgId), TEMPLATE, { k: 'lamp.dark', i: { subject: '{{deviceName}} is dark', body: 'at {{siteName}}' } });
    expect(ok.setNotificationTemplate).toEqual({ key: 'lamp.dark', subject: '{{deviceName}} is dark', body: 'at {{siteName}}' });
    expect((await f.ok(f.as(orgId, 'viewer'), `{ notificationTemplates { key } }`)).notificationTemplates).toEqual([{ key: 'lamp.dark' }]);
    expect((await f.ok(f.as(orgId), `mutation { deleteNotificationTemplate(key: "lamp.dark") }`)).deleteNotificationTemplate).toBe(true);
  });

  it('create recipient rules by role and site, and refuse ones that name nobody or an unknown site', async () => {
    const w = await tenant(f);
    const r = await f.ok(f.as(w.orgId), RULE, {
      i: { name: 'street', events: ['ALARM_RAISED', 'ALARM_CLEARED'], minSeverity: 'MAJOR', roles: ['operator'], siteId: w.siteId },
    });
    expect(r.createNotificationRule).toMatchObject({
      events: ['ALARM_RAISED', 'ALARM_CLEARED'],
      minSeverity: 'MAJOR',
      roles: ['operator'],
      siteId: w.siteId,
    });
    const nobody = await f.run(f.as(w.orgId), RULE, { i: { name: 'x', events: ['ALARM_RAISED'], minSeverity: 'MAJOR' } });
    expect(nobody.errors?.[0]?.message).toBe('input: name at least one role, user or channel');
    const site = await f.run(f.as(w.orgId), RULE, {
      i: { name: 'x', events: ['ALARM_RAISED'], minSeverity: 'MAJOR', roles: ['admin'], siteId: randomUUID() },
    });
    expect(site.errors?.[0]?.message).toBe('input.siteId: site not found');
    const stranger = await f.run(f.as(w.orgId), RULE, {
      i: { name: 'x', events: ['ALARM_RAISED'], minSeverity: 'MAJOR', userIds: [randomUUID()] },
    });
    expect(stranger.errors?.[0]?.message).toBe('input.userIds: not a member of this organization');
    expect(
      codes(
        await f.run(f.as(w.orgId, 'operator'), RULE, {
          i: { name: 'x', events: ['ALARM_RAISED'], minSeverity: 'MAJOR', roles: ['admin'] },
        }),
      ),
    ).toEqual(['FORBIDDEN']);
    const other = await f.org();
    expect((await f.ok(f.as(other), `{ notificationRules { id } }`)).notificationRules).toEqual([]);
  });

  it('create escalation policies with levels, and refuse an empty level', async () => {
    const orgId = await f.org();
    const p = await f.ok(f.as(orgId), POLICY, {
      i: {
        name: 'night',
        minSeverity: 'CRITICAL',
        levels: [
          { delaySeconds: 600, roles: ['operator'] },
          { delaySeconds: 1800, roles: ['admin'] },
        ],
      },
    });
    expect(p.createEscalationPolicy.levels).toEqual([
      { delaySeconds: 600, roles: ['operator'], channelIds: [] },
      { delaySeconds: 1800, roles: ['admin'], channelIds: [] },
    ]);
    const empty = await f.run(f.as(orgId), POLICY, { i: { name: 'x', minSeverity: 'MAJOR', levels: [{ delaySeconds: 60 }] } });
    expect(empty.errors?.[0]?.message).toBe('input.levels.0: name at least one role, user or channel');
    const zero = await f.run(f.as(orgId), POLICY, {
      i: { name: 'x', minSeverity: 'MAJOR', levels: [{ delaySeconds: 0, roles: ['admin'] }] },
    });
    expect(zero.errors?.[0]?.message).toBe('input.levels.0.delaySeconds: must be at least 1');
  });
});

describe('preferences', () => {
  it('are each member’s own, with quiet hours, and refused to API keys', async () => {
    const orgId = await f.org();
    const u = await f.user(orgId, 'viewer');
    const me = { ...f.as(orgId, 'viewer'), subject: u.id };
    expect((await f.ok(me, PREFS)).myNotificationPreferences).toEqual({
      channels: ['email'],
      minSeverity: 'INDETERMINATE',
      phone: null,
      timeZone: 'UTC',
      quietHours: null,
    });
    const set = await f.ok(me, SET_PREFS, {
      i: {
        channels: ['email', 'sms'],
        minSeverity: 'MAJOR',
        phone: '+31201234567',
        timeZone: 'Europe/Amsterdam',
        quietHours: { start: '22:00', end: '07:00' },
      },
    });
    expect(set.setMyNotificationPreferences).toEqual({
      channels: ['email', 'sms'],
      minSeverity: 'MAJOR',
      phone: '+31201234567',
      timeZone: 'Europe/Amsterdam',
      quietHours: { start: '22:00', end: '07:00' },
    });
    const other = await f.user(orgId, 'viewer');
    expect((await f.ok({ ...f.as(orgId, 'viewer'), subject: other.id }, PREFS)).myNotificationPreferences.minSeverity).toBe(
      'INDETERMINATE',
    );
    const bad = [
      [{ timeZone: 'Mars/Olympus' }, 'input.timeZone: unknown time zone'],
      [{ quietHours: { start: '25:00', end: '07:00' } }, 'input.quietHours.start: must be HH:MM'],
      [{ channels: ['sms'], phone: null }, 'input.phone: required for sms'],
    ] as const;
    for (const [patch, why] of bad) {
      const r = await f.run(me, SET_PREFS, { i: { channels: ['email'], minSeverity: 'MAJOR', timeZone: 'UTC', ...patch } });
      expect(r.errors?.[0]?.message).toBe(why);
    }
    expect(codes(await f.run(f.as(orgId, 'admin', 'apikey', ['*']), PREFS))).toEqual(['FORBIDDEN']);
    // a member of another organization has no preferences here
    const outsider = await f.user(await f.org(), 'admin');
    const r = await f.run({ ...f.as(orgId, 'viewer'), subject: outsider.id }, SET_PREFS, {
      i: { channels: ['email'], minSeverity: 'MAJOR', timeZone: 'UTC' },
    });
    expect(codes(r)).toEqual(['BAD_USER_INPUT']);
  });
});

describe('delivery log', () => {
  it('shows a channel test with every attempt to the organization’s viewers, and nothing to another organization', async () => {
    const orgId = await f.org();
    const path = `/log/${randomUUID()}`;
    const id = (await f.ok(f.as(orgId), CREATE, { i: hook(path) })).createNotificationChannel.id;
    hooks.answer(503);
    notifier = startNotifier(f, { feed: false });
    expect((await f.ok(f.as(orgId), TEST, { id })).testNotificationChannel).toBe(true);
    const [, delivered] = await hooks.waitFor(2, (h) => h.path === path);
    expect(JSON.parse(delivered?.body ?? '{}').subject).toBe(
      `RULR test notification: ${(await f.ok(f.as(orgId), CHANNELS)).notificationChannels[0].name}`,
    );

    const log = await until(async () => {
      const r = await f.ok(f.as(orgId, 'viewer'), LOG, { f: { channelId: id, status: 'SENT' } });
      return r.notifications.edges.length ? r.notifications : null;
    }, 'the sent delivery in the log');
    expect(log.edges).toHaveLength(1);
    expect(log.edges[0].node).toMatchObject({
      event: 'CHANNEL_TEST',
      kind: 'WEBHOOK',
      status: 'SENT',
      channelId: id,
      address: `${hooks.url}${path}`,
      attempts: [
        { ok: false, httpStatus: 503, error: 'HTTP 503' },
        { ok: true, httpStatus: 200, error: null },
      ],
    });
    expect((await f.ok(f.as(orgId), LOG, { f: { status: 'FAILED' } })).notifications.edges).toEqual([]);
    expect((await f.ok(f.as(await f.org(), 'admin'), LOG, {})).notifications.edges).toEqual([]);

    // a second test, then pages of one
    await f.ok(f.as(orgId), TEST, { id });
    await hooks.waitFor(3, (h) => h.path === path);
    const p1 = await f.ok(f.as(orgId), LOG, { first: 1 });
    expect(p1.notifications.pageInfo.hasNextPage).toBe(true);
    const p2 = await f.ok(f.as(orgId), LOG, { first: 1, after: p1.notifications.pageInfo.endCursor });
    expect(p2.notifications.edges[0].node.id).not.toBe(p1.notifications.edges[0].node.id);
    expect(p2.notifications.pageInfo.hasNextPage).toBe(false);
    expect(codes(await f.run(f.as(orgId), LOG, { after: 'garbage' }))).toEqual(['BAD_USER_INPUT']);
  });
});
