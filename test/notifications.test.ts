import { createHmac, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { channelSecretKey, openChannelSecret } from '../lib/contracts/channel-secret.js';
import { NOTIFY_QUEUE } from '../lib/contracts/notifications.js';
import { createLogger } from '../lib/logger.js';
import { SmtpMailSender } from '../lib/mail.js';
import { quietUntil } from '../lib/notifications.js';
import { parseAllowlist } from '../lib/webhook-guard.js';
import { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import type { Notifier } from '../workers/notifier.js';
import { subgraphFixture } from './devices-fixtures.js';
import {
  type AlarmsFixture,
  deliveryLog,
  deliveryLogOnce,
  raise,
  recipientRule,
  sleep,
  startNotifier,
  tenant,
  until,
  webhookChannel,
} from './notifications-fixtures.js';
import { startSmtpServer, type TestSmtpServer } from './support/smtp.js';
import { startWebhookServer, type TestWebhookServer } from './support/webhook.js';

// Notifications (issue 14 item 8): the workers' notifier against real PostgreSQL, Redis, an HTTP
// receiver and an SMTP server started here. Alarms are raised and acknowledged through the alarms API;
// the notifier reads them from the alarm feed like in production.

let f: AlarmsFixture;
let hooks: TestWebhookServer;
let smtp: TestSmtpServer;
let notifier: Notifier | undefined;

beforeAll(async () => {
  f = await subgraphFixture(createAlarmsSubgraph);
  hooks = await startWebhookServer();
  smtp = await startSmtpServer();
});
afterEach(async () => {
  await notifier?.close();
  notifier = undefined;
});
afterAll(async () => {
  await hooks?.close();
  await smtp?.close();
  await f?.close();
});

const ACK = `mutation($id: ID!) { acknowledgeAlarm(id: $id, note: "on it") { id status } }`;
const mailer = () => new SmtpMailSender({ url: smtp.url, from: 'RULR <rulr@test.example>', logger: createLogger('silent') });
/** The signature a receiver computes from the documented format: `v1=` hex HMAC-SHA256 of `<timestamp>.<raw body>`. */
const expectedSignature = (secret: string, ts: string, body: string) =>
  `v1=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;

describe('webhook channel', () => {
  it('retries a delivery answered 500 and signs every attempt with the channel secret', async () => {
    const w = await tenant(f);
    const secret = `s-${randomUUID()}`;
    const path = `/hook/${randomUUID()}`;
    const ch = await webhookChannel(f, w.orgId, `${hooks.url}${path}`, secret);
    await recipientRule(f, w.orgId, { channelIds: [ch] });
    hooks.answer(500);
    notifier = startNotifier(f);
    const alarmId = await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp dark');

    const [first, second] = await hooks.waitFor(2, (h) => h.path === path);
    expect(first?.status).toBe(500);
    expect(second?.status).toBe(200);
    for (const h of [first, second]) {
      const ts = String(h?.headers['x-rulr-timestamp']);
      expect(h?.headers['x-rulr-signature']).toBe(expectedSignature(secret, ts, h?.body ?? ''));
      expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(60);
      expect(h?.headers['x-rulr-signature']).not.toBe(expectedSignature('another secret', ts, h?.body ?? ''));
    }
    expect(second?.headers['x-rulr-delivery']).toBe(first?.headers['x-rulr-delivery']);
    const body = JSON.parse(second?.body ?? '{}');
    expect(body).toMatchObject({ event: 'alarm.raised', severity: 'major', source: { kind: 'alarm', id: alarmId } });
    expect(body.subject).toBe('[major] Lamp dark on lamp 1');

    const log = await deliveryLogOnce(f, w.orgId, 'sent');
    expect(log.deliveries).toHaveLength(1);
    expect(log.deliveries[0]).toMatchObject({ kind: 'webhook', attempts: 2, id: first?.headers['x-rulr-delivery'] });
    expect(log.attempts.map((a) => [a.ok, a.http_status])).toEqual([
      [false, 500],
      [true, 200],
    ]);
  });

  it('does not retry a delivery answered 400 and logs the failed attempt', async () => {
    const w = await tenant(f);
    const path = `/hook/${randomUUID()}`;
    await recipientRule(f, w.orgId, { channelIds: [await webhookChannel(f, w.orgId, `${hooks.url}${path}`)] });
    hooks.answer(400);
    notifier = startNotifier(f);
    await raise(f, w.orgId, w.deviceIds[0] as string);
    const log = await deliveryLogOnce(f, w.orgId, 'failed', 'the delivery to fail');
    await sleep(500);
    expect(hooks.received.filter((h) => h.path === path)).toHaveLength(1);
    expect(log.attempts).toEqual([expect.objectContaining({ ok: false, http_status: 400, error: 'HTTP 400' })]);
  });

  it('seals a secret stored in clear before migration 0057 at its first tick, and signs with it', async () => {
    const w = await tenant(f);
    const path = `/hook/${randomUUID()}`;
    const secret = `legacy-${randomUUID()}`;
    const ch = await webhookChannel(f, w.orgId, `${hooks.url}${path}`, secret, 'webhook', { clear: true });
    await recipientRule(f, w.orgId, { channelIds: [ch] });
    notifier = startNotifier(f);
    await raise(f, w.orgId, w.deviceIds[0] as string);
    const [h] = await hooks.waitFor(1, (x) => x.path === path);
    expect(h?.headers['x-rulr-signature']).toBe(expectedSignature(secret, String(h?.headers['x-rulr-timestamp']), h?.body ?? ''));
    const row = (
      await sql<{ secret: string | null; secret_sealed: Buffer | null }>`select secret, secret_sealed from notification_channels
        where id = ${ch}`.execute(f.t.db)
    ).rows[0];
    expect(row?.secret).toBeNull();
    expect(row?.secret_sealed?.includes(Buffer.from(secret))).toBe(false);
    expect(openChannelSecret(channelSecretKey(f.ctx.config.RULR_SECRET), w.orgId, ch, row?.secret_sealed as Buffer)).toBe(secret);
  });

  it('fails, unsent and without retrying, a delivery whose sealed secret was copied from another channel', async () => {
    const w = await tenant(f);
    const path = `/hook/${randomUUID()}`;
    const donor = await webhookChannel(f, w.orgId, `${hooks.url}/unused`, `donor-${randomUUID()}`);
    const ch = await webhookChannel(f, w.orgId, `${hooks.url}${path}`);
    await sql`update notification_channels set secret_sealed = (select secret_sealed from notification_channels where id = ${donor})
      where id = ${ch}`.execute(f.t.db);
    await recipientRule(f, w.orgId, { channelIds: [ch] });
    notifier = startNotifier(f);
    await raise(f, w.orgId, w.deviceIds[0] as string);
    const log = await deliveryLogOnce(f, w.orgId, 'failed', 'the delivery to fail');
    await sleep(300);
    expect(hooks.received.filter((x) => x.path === path)).toHaveLength(0);
    expect(log.attempts).toHaveLength(1);
    expect(log.attempts[0]?.error).toContain("the channel's secret does not open with this key and channel");
  });
});

describe('SSRF rule', () => {
  // The machine's own host name resolves to a loopback or private address (/etc/hosts): refused when
  // connecting, on the resolver's answer, not by the URL's text.
  it('refuses to post to a loopback address that the allowlist does not name, by address, by localhost and by a resolved name', async () => {
    const w = await tenant(f);
    const byAddress = `/hook/${randomUUID()}`;
    const byName = `/hook/${randomUUID()}`;
    const byResolved = `/hook/${randomUUID()}`;
    const port = new URL(hooks.url).port;
    const a = await webhookChannel(f, w.orgId, `${hooks.url}${byAddress}`);
    const b = await webhookChannel(f, w.orgId, `http://localhost:${port}${byName}`);
    const c = await webhookChannel(f, w.orgId, `http://${hostname()}:${port}${byResolved}`);
    await recipientRule(f, w.orgId, { channelIds: [a, b, c] });
    notifier = startNotifier(f, { allow: parseAllowlist('') });
    await raise(f, w.orgId, w.deviceIds[0] as string);
    const log = await until(async () => {
      const l = await deliveryLog(f, w.orgId);
      return l.deliveries.length === 3 && l.deliveries.every((d) => d.status === 'failed') ? l : null;
    }, 'the three deliveries to be refused');
    expect(hooks.received.filter((h) => [byAddress, byName, byResolved].includes(h.path))).toEqual([]);
    expect(log.attempts).toHaveLength(3);
    for (const at of log.attempts) expect(at.error).toMatch(/private, loopback or link-local address/);
  });
});

describe('e-mail', () => {
  it('sends the rendered template to the members a recipient rule names, retrying a refused message', async () => {
    const w = await tenant(f);
    const operator = await f.user(w.orgId, 'operator');
    const viewer = await f.user(w.orgId, 'viewer');
    await recipientRule(f, w.orgId, { roles: ['operator'] });
    smtp.refuseNext(1, 451);
    notifier = startNotifier(f, { mail: mailer() });
    await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp dark', 'MINOR');

    const m = await smtp.waitFor((x) => x.to.includes(operator.email));
    expect(m.mail.subject).toBe('[minor] Lamp dark on lamp 1');
    expect(m.text).toContain('Lamp dark raised on lamp 1 at Main street (minor).');
    expect(m.text).toContain('power 0 W while on');
    expect(m.mail.html).toContain('Lamp dark raised on lamp 1 at Main street');
    const log = await deliveryLogOnce(f, w.orgId, 'sent', 'the mail delivery to be sent');
    expect(log.deliveries.map((d) => d.address)).toEqual([operator.email]);
    expect(log.attempts.map((a) => a.ok)).toEqual([false, true]);
    expect(smtp.messages.some((x) => x.to.includes(viewer.email))).toBe(false);
  });
});

describe('recipients', () => {
  it('follow a recipient rule’s site subtree and minimum severity, and each member’s own minimum', async () => {
    const w = await tenant(f);
    const other = await tenant(f); // its site is not under Main street
    await sql`update devices set org_id = ${w.orgId}, site_id = null where id = ${other.deviceIds[0]}`.execute(f.t.db);
    const keen = await f.user(w.orgId, 'operator');
    const calm = await f.user(w.orgId, 'operator');
    await sql`insert into notification_preferences (org_id, user_id, min_severity) values (${w.orgId}, ${calm.id}, 'critical')`.execute(
      f.t.db,
    );
    await recipientRule(f, w.orgId, { roles: ['operator'], siteId: w.siteId, minSeverity: 'minor' });
    notifier = startNotifier(f, { mail: mailer() });
    await raise(f, w.orgId, other.deviceIds[0] as string, 'Elsewhere', 'MAJOR'); // no site: the site-scoped rule does not match
    await raise(f, w.orgId, w.deviceIds[0] as string, 'Too low', 'WARNING'); // below the rule's minimum
    await raise(f, w.orgId, w.deviceIds[0] as string, 'On site', 'MAJOR');
    const m = await smtp.waitFor((x) => x.to.includes(keen.email) && x.mail.subject === '[major] On site on lamp 1');
    expect(m).toBeDefined();
    await sleep(800);
    const log = await deliveryLog(f, w.orgId);
    expect(log.deliveries.map((d) => d.address)).toEqual([keen.email]);
    expect(smtp.messages.some((x) => x.to.includes(calm.email))).toBe(false);
  });
});

describe('escalation', () => {
  it('notifies each level while the alarm is not acknowledged and stops on acknowledge', async () => {
    const w = await tenant(f);
    const path = `/esc/${randomUUID()}`;
    const ch = await webhookChannel(f, w.orgId, `${hooks.url}${path}`);
    const levels = [
      { delaySeconds: 1, channelIds: [ch] },
      { delaySeconds: 2, channelIds: [ch] },
    ];
    await sql`insert into escalation_policies (org_id, name, min_severity, levels, created_by)
      values (${w.orgId}, 'night shift', 'major', ${JSON.stringify(levels)}::jsonb, 'test')`.execute(f.t.db);
    notifier = startNotifier(f);
    const alarmId = await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp dark', 'MAJOR');

    const [level1] = await hooks.waitFor(1, (h) => h.path === path);
    expect(JSON.parse(level1?.body ?? '{}')).toMatchObject({ event: 'alarm.escalated', variables: { level: 1, alarmId } });
    await f.ok(f.as(w.orgId, 'operator'), ACK, { id: alarmId });
    await sleep(3000); // past the second level's due time
    expect(hooks.received.filter((h) => h.path === path)).toHaveLength(1);
    const { rows } = await sql<{ status: string; stopped_reason: string | null }>`
      select status, stopped_reason from notification_escalations where alarm_id = ${alarmId}`.execute(f.t.db);
    expect(rows).toEqual([{ status: 'stopped', stopped_reason: 'acknowledged' }]);
  });

  it('does not escalate an alarm below the policy’s minimum severity', async () => {
    const w = await tenant(f);
    const path = `/esc/${randomUUID()}`;
    const ch = await webhookChannel(f, w.orgId, `${hooks.url}${path}`);
    await sql`insert into escalation_policies (org_id, name, min_severity, levels, created_by)
      values (${w.orgId}, 'critical only', 'critical', ${JSON.stringify([{ delaySeconds: 1, channelIds: [ch] }])}::jsonb, 'test')`.execute(
      f.t.db,
    );
    notifier = startNotifier(f);
    const alarmId = await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp dark', 'MINOR');
    await sleep(2000);
    expect(hooks.received.filter((h) => h.path === path)).toEqual([]);
    const { rows } = await sql`select 1 from notification_escalations where alarm_id = ${alarmId}`.execute(f.t.db);
    expect(rows).toEqual([]);
  });
});

describe('digest', () => {
  it('sends one message saying 50 for 50 alarms of one site within the window', async () => {
    const w = await tenant(f, 50);
    const path = `/digest/${randomUUID()}`;
    await recipientRule(f, w.orgId, { channelIds: [await webhookChannel(f, w.orgId, `${hooks.url}${path}`)] });
    notifier = startNotifier(f, { digestWindowMs: 8000 });
    for (const d of w.deviceIds) await raise(f, w.orgId, d, 'Feeder fault');

    const [msg] = await hooks.waitFor(1, (h) => h.path === path, 20_000);
    await sleep(1000);
    expect(hooks.received.filter((h) => h.path === path)).toHaveLength(1);
    const body = JSON.parse(msg?.body ?? '{}');
    expect(body.count).toBe(50);
    expect(body.subject).toBe('[major] 50 alarms at Main street: Feeder fault');
    expect(body.text).toContain('50 raised alarms at Main street (Feeder fault)');
    expect(body.text).toContain('… and 40 more');
    const { rows } = await sql<{ n: number; grouped: number }>`
      select count(*)::int as n, count(*) filter (where grouped)::int as grouped from notifications where org_id = ${w.orgId}`.execute(
      f.t.db,
    );
    expect(rows[0]).toEqual({ n: 51, grouped: 50 });
  });

  it('sends a lone alarm of a window as itself', async () => {
    const w = await tenant(f);
    const path = `/digest/${randomUUID()}`;
    await recipientRule(f, w.orgId, { channelIds: [await webhookChannel(f, w.orgId, `${hooks.url}${path}`)] });
    notifier = startNotifier(f);
    await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp dark');
    const [msg] = await hooks.waitFor(1, (h) => h.path === path);
    expect(JSON.parse(msg?.body ?? '{}')).toMatchObject({ count: 1, subject: '[major] Lamp dark on lamp 1' });
  });
});

describe('quiet hours', () => {
  it('defer a member’s non-critical mail to their end, and let a critical one through', async () => {
    const w = await tenant(f);
    const u = await f.user(w.orgId, 'operator');
    const now = new Date();
    const minute = now.getUTCHours() * 60 + now.getUTCMinutes();
    const start = (minute + 1440 - 60) % 1440;
    const end = (minute + 60) % 1440;
    await sql`insert into notification_preferences (org_id, user_id, time_zone, quiet_start, quiet_end)
      values (${w.orgId}, ${u.id}, 'UTC', ${start}, ${end})`.execute(f.t.db);
    await recipientRule(f, w.orgId, { roles: ['operator'] });
    notifier = startNotifier(f, { mail: mailer() });

    await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp dark', 'MAJOR');
    const deferred = await until(async () => (await deliveryLog(f, w.orgId)).deliveries[0], 'the deferred delivery');
    expect(deferred.status).toBe('deferred');
    const want = quietUntil(Date.now(), { timeZone: 'UTC', start, end }) as number;
    expect(Math.abs((deferred.not_before?.getTime() ?? 0) - want)).toBeLessThan(60_000);
    const job = await notifier.deliveries.getJob(`d-${deferred.id}`);
    expect(await job?.getState()).toBe('delayed');

    await raise(f, w.orgId, w.deviceIds[0] as string, 'Mains lost', 'CRITICAL');
    const m = await smtp.waitFor((x) => x.to.includes(u.email));
    expect(m.mail.subject).toBe('[critical] Mains lost on lamp 1');
    expect(smtp.messages.filter((x) => x.to.includes(u.email))).toHaveLength(1);
  });
});

describe('bad requests', () => {
  it('fail a corrupt notify job without retrying it, and keep handling good ones', async () => {
    const w = await tenant(f);
    const path = `/bad/${randomUUID()}`;
    await recipientRule(f, w.orgId, { events: ['rule.notify'], channelIds: [await webhookChannel(f, w.orgId, `${hooks.url}${path}`)] });
    notifier = startNotifier(f);
    const bad = await notifier.queue.add('notify', { orgId: 'not-a-uuid' }, { attempts: 5 });
    const good = await notifier.queue.add('notify', {
      orgId: w.orgId,
      source: { kind: 'rule', id: randomUUID() },
      event: 'rule.notify',
      siteId: w.siteId,
      severity: 'minor',
      templateKey: 'rule.notify',
      variables: { ruleName: 'dark lamps', message: 'lamp 1 is dark' },
      recipients: { rules: true, roles: [], userIds: [], channelIds: [] },
      dedupKey: `t:${randomUUID()}`,
      groupKey: null,
      at: Date.now(),
    });
    const [msg] = await hooks.waitFor(1, (h) => h.path === path);
    expect(JSON.parse(msg?.body ?? '{}').subject).toBe('[minor] dark lamps');
    const failed = await until(async () => ((await bad.getState()) === 'failed' ? bad : null), 'the bad job to fail');
    const job = await notifier.queue.getJob(failed.id as string);
    expect(job?.attemptsMade).toBe(1);
    expect(job?.failedReason).toMatch(/orgId/);
    expect(await good.getState()).toBe('completed');
    expect(NOTIFY_QUEUE).toBe('notify');
  });
});

describe('provider channels', () => {
  it('post a chat message and one SMS per phone number with their JSON body templates', async () => {
    const w = await tenant(f);
    const chatPath = `/chat/${randomUUID()}`;
    const smsPath = `/sms/${randomUUID()}`;
    const chat = await webhookChannel(f, w.orgId, `${hooks.url}${chatPath}`, null, 'chat');
    const sms = await webhookChannel(f, w.orgId, `${hooks.url}${smsPath}`, null, 'sms');
    await sql`update notification_channels set body_template = '{"text":"{{subject}}: {{message}}"}' where id = ${chat}`.execute(f.t.db);
    await sql`update notification_channels set body_template = '{"to":"{{to}}","body":"{{subject}}"}', addresses = '{+31600000001,+31600000002}'
      where id = ${sms}`.execute(f.t.db);
    await recipientRule(f, w.orgId, { channelIds: [chat, sms] });
    notifier = startNotifier(f);
    await raise(f, w.orgId, w.deviceIds[0] as string, 'Lamp "dark"');
    const [c] = await hooks.waitFor(1, (h) => h.path === chatPath);
    expect(JSON.parse(c?.body ?? '')).toEqual({ text: '[major] Lamp "dark" on lamp 1: power 0 W while on' });
    const texts = await hooks.waitFor(2, (h) => h.path === smsPath);
    expect(texts.map((h) => JSON.parse(h.body)).sort((x, y) => x.to.localeCompare(y.to))).toEqual([
      { to: '+31600000001', body: '[major] Lamp "dark" on lamp 1' },
      { to: '+31600000002', body: '[major] Lamp "dark" on lamp 1' },
    ]);
  });
});

describe('tenant isolation in the notifier', () => {
  it('sends nothing to another organization’s channel or member named in a request, and names a rule’s device', async () => {
    const mine = await tenant(f);
    const theirs = await tenant(f);
    const theirPath = `/theirs/${randomUUID()}`;
    const theirChannel = await webhookChannel(f, theirs.orgId, `${hooks.url}${theirPath}`);
    const theirUser = await f.user(theirs.orgId, 'admin');
    const myPath = `/mine/${randomUUID()}`;
    const myChannel = await webhookChannel(f, mine.orgId, `${hooks.url}${myPath}`);
    const ruleId = randomUUID();
    await sql`insert into rules (id, org_id, name, metric, operator, threshold, severity, alarm_type, created_by)
      values (${ruleId}, ${mine.orgId}, 'dark lamps', 'power', 'lt', 5, 'minor', 'Dark', 'test')`.execute(f.t.db);
    notifier = startNotifier(f, { mail: mailer() });
    await notifier.queue.add('notify', {
      orgId: mine.orgId,
      source: { kind: 'rule', id: ruleId },
      event: 'rule.notify',
      siteId: mine.siteId,
      severity: 'minor',
      templateKey: 'rule.notify',
      variables: { deviceId: mine.deviceIds[0] as string, message: 'power 0 W', type: 'Dark' },
      recipients: { rules: false, roles: [], userIds: [theirUser.id], channelIds: [theirChannel, myChannel] },
      dedupKey: `t:${randomUUID()}`,
      groupKey: null,
      at: Date.now(),
    });
    const [msg] = await hooks.waitFor(1, (h) => h.path === myPath);
    expect(JSON.parse(msg?.body ?? '{}')).toMatchObject({
      subject: '[minor] dark lamps',
      text: expect.stringContaining('dark lamps on lamp 1: power 0 W'),
    });
    await sleep(500);
    expect(hooks.received.filter((h) => h.path === theirPath)).toEqual([]);
    expect(smtp.messages.some((m) => m.to.includes(theirUser.email))).toBe(false);
    expect((await deliveryLog(f, mine.orgId)).deliveries.map((d) => d.address)).toEqual([`${hooks.url}${myPath}`]);
    expect((await deliveryLog(f, theirs.orgId)).deliveries).toEqual([]);
  });
});

describe('alarm feed', () => {
  it('does not skip an alarm event whose transaction commits after a later one', async () => {
    const w = await tenant(f, 2);
    const path = `/feed/${randomUUID()}`;
    await recipientRule(f, w.orgId, { channelIds: [await webhookChannel(f, w.orgId, `${hooks.url}${path}`)] });
    notifier = startNotifier(f, { tickMs: 3_600_000, feedGapMs: 60_000 });
    const slow = new pg.Client({ connectionString: f.t.directUrl });
    await slow.connect();
    try {
      await slow.query('begin');
      const a = await slow.query<{ id: string }>(
        `insert into alarms (org_id, device_id, type, severity, raised_by) values ($1, $2, 'Slow', 'major', 'system:test') returning id`,
        [w.orgId, w.deviceIds[0]],
      );
      const early = a.rows[0]?.id as string;
      await slow.query(`insert into alarm_events (org_id, alarm_id, kind, actor) values ($1, $2, 'raised', 'system:test')`, [
        w.orgId,
        early,
      ]);
      const late = await raise(f, w.orgId, w.deviceIds[1] as string, 'Fast');
      await notifier.tick();
      const seen = async () =>
        (
          await sql<{ source_id: string }>`select source_id from notifications where org_id = ${w.orgId} and grouped`.execute(f.t.db)
        ).rows.map((r) => r.source_id);
      await sleep(500); // time for any queued request to be handled
      expect(await seen()).toEqual([]); // the feed waits at the hole the open transaction holds
      await slow.query('commit');
      await notifier.tick();
      await until(async () => (await seen()).length === 2, 'both alarms to be read');
      expect((await seen()).sort()).toEqual([early, late].sort());
    } finally {
      await slow.end();
    }
  });
});
