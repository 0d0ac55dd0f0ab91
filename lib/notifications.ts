import { createHmac, timingSafeEqual } from 'node:crypto';
import Mustache from 'mustache';
import { type NotificationSeverity, severityRank } from './contracts/notifications.js';
import { addDays, localDateOf, wallClock, zonedInstant } from './time-zones.js';

/**
 * What the notifier and the notifications API share: templates (Mustache, logic-less), the
 * webhook signature, quiet hours and the severity threshold. See docs/notifications.md.
 */

// ---------------------------------------------------------------------------------------------
// Templates

/** How a rendered value is escaped: HTML for mail bodies, JSON string content for provider bodies, none for text. */
export type RenderMode = 'text' | 'html' | 'json';

const escapes: Record<RenderMode, (s: string) => string> = {
  text: (s) => String(s),
  html: (s) => Mustache.escape(String(s)),
  // the inside of a JSON string: `"text": "{{text}}"` stays valid JSON whatever the value is
  json: (s) => JSON.stringify(String(s)).slice(1, -1),
};

/** Why `template` cannot be used (unbalanced sections, partials, bad tags), or null when it can. */
export function templateProblem(template: string): string | null {
  let tokens: unknown[];
  try {
    tokens = Mustache.parse(template) as unknown[];
  } catch (e) {
    return `is not a valid template: ${(e as Error).message.split('\n')[0]}`;
  }
  const walk = (ts: unknown[]): string | null => {
    for (const t of ts as [string, string, number, number, unknown[]?][]) {
      if (t[0] === '>') return 'may not use partials';
      if (t[0] === '=') return 'may not change delimiters';
      if (Array.isArray(t[4])) {
        const inner = walk(t[4]);
        if (inner) return inner;
      }
    }
    return null;
  };
  return walk(tokens);
}

/** Renders `template` with `view`, escaping every `{{value}}` for `mode` (`{{{value}}}` is never escaped). */
export function render(template: string, view: Record<string, unknown>, mode: RenderMode): string {
  return Mustache.render(template, view, {}, { escape: escapes[mode] });
}

export interface TemplateText {
  subject: string;
  body: string;
  /** the HTML alternative of mail; built from `body` when absent */
  html?: string | null;
}

/**
 * Built-in templates by key. `alarm.digest` is the one message of a grouping window (`count`,
 * `items` — the first few — and `more`).
 */
export const DEFAULT_TEMPLATES: Record<string, TemplateText> = {
  'alarm.raised': {
    subject: '[{{severity}}] {{alarmType}} on {{deviceName}}',
    body: '{{alarmType}} raised on {{deviceName}}{{#siteName}} at {{siteName}}{{/siteName}} ({{severity}}).\n{{message}}\n{{at}}',
  },
  'alarm.escalated': {
    subject: '[{{severity}}] not acknowledged: {{alarmType}} on {{deviceName}}',
    body: '{{alarmType}} on {{deviceName}}{{#siteName}} at {{siteName}}{{/siteName}} has not been acknowledged (escalation level {{level}}).\n{{message}}\n{{at}}',
  },
  'alarm.cleared': {
    subject: '[cleared] {{alarmType}} on {{deviceName}}',
    body: '{{alarmType}} on {{deviceName}}{{#siteName}} at {{siteName}}{{/siteName}} cleared.\n{{at}}',
  },
  'alarm.digest': {
    subject: '[{{severity}}] {{count}} alarms{{#siteName}} at {{siteName}}{{/siteName}}: {{alarmType}}',
    body: '{{count}} {{eventWord}} alarms{{#siteName}} at {{siteName}}{{/siteName}} ({{alarmType}}) within {{windowSeconds}} s:\n{{#items}}- {{deviceName}}: {{message}}\n{{/items}}{{#more}}… and {{more}} more\n{{/more}}',
  },
  'channel.test': {
    subject: 'RULR test notification: {{channelName}}',
    body: 'This is a test of the notification channel {{channelName}}, asked for by {{actor}} at {{at}}.',
  },
  'rule.notify': {
    subject: '[{{severity}}] {{ruleName}}',
    body: '{{ruleName}}{{#deviceName}} on {{deviceName}}{{/deviceName}}: {{message}}\n{{at}}',
  },
};

/** A generic template for a key nobody defined (a rule's own key without a template). */
export const FALLBACK_TEMPLATE: TemplateText = { subject: '[{{severity}}] {{event}}', body: '{{event}}: {{message}}' };

export interface RenderedMessage {
  subject: string;
  text: string;
  html: string;
}

/** Subject and plain text (unescaped), and the HTML alternative (escaped) of one message. */
export function renderMessage(t: TemplateText, view: Record<string, unknown>): RenderedMessage {
  const subject = render(t.subject, view, 'text')
    .replaceAll(/[\r\n]+/g, ' ')
    .slice(0, 500);
  const text = render(t.body, view, 'text');
  const html = t.html
    ? render(t.html, view, 'html')
    : `<pre style="font-family:inherit;white-space:pre-wrap">${render(t.body, view, 'html')}</pre>`;
  return { subject, text, html };
}

/** Example variables a template is checked with when it is saved (every built-in variable set). */
export const SAMPLE_VARIABLES: Record<string, unknown> = {
  event: 'alarm.raised',
  severity: 'major',
  alarmType: 'lamp dark',
  alarmId: '00000000-0000-0000-0000-000000000000',
  message: 'power 0 W while on',
  deviceName: 'lamp 1',
  deviceId: '00000000-0000-0000-0000-000000000000',
  siteName: 'Main street',
  siteId: '00000000-0000-0000-0000-000000000000',
  ruleName: 'dark lamps',
  value: 0,
  level: 1,
  at: '2026-01-01T00:00:00.000Z',
  count: 2,
  items: [{ deviceName: 'lamp 1', message: 'dark' }],
  more: 0,
  eventWord: 'raised',
  windowSeconds: 30,
  subject: '[major] lamp dark',
  text: 'lamp dark raised on lamp 1',
  to: '+15550100',
  channelName: 'night shift',
  actor: 'user:00000000-0000-0000-0000-000000000000',
};

/** Why a provider body template does not render to JSON with the sample variables, or null. */
export function providerBodyProblem(template: string): string | null {
  const p = templateProblem(template);
  if (p) return p;
  try {
    JSON.parse(render(template, SAMPLE_VARIABLES, 'json'));
    return null;
  } catch {
    return 'must render to JSON (put values inside strings: "{{text}}")';
  }
}

// ---------------------------------------------------------------------------------------------
// Webhook signature

/** Header with the signature, `v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`. */
export const SIGNATURE_HEADER = 'x-rulr-signature';
/** Header with the signing time, Unix seconds; receivers refuse old ones (replay). */
export const TIMESTAMP_HEADER = 'x-rulr-timestamp';
/** Header with the delivery id (the same on every retry: receivers can drop duplicates). */
export const DELIVERY_HEADER = 'x-rulr-delivery';

/** `v1=<hex>`: HMAC-SHA256 with the channel's secret over `<timestamp>.<raw body>`. */
export function signWebhook(secret: string, timestampS: number, rawBody: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestampS}.${rawBody}`).digest('hex')}`;
}

/**
 * What a receiver does (and the tests do): the signature matches the body and timestamp, and the
 * timestamp is within `toleranceS` of now.
 */
export function verifyWebhook(
  secret: string,
  headers: { signature: string | undefined; timestamp: string | undefined },
  rawBody: string,
  nowS = Math.floor(Date.now() / 1000),
  toleranceS = 300,
): boolean {
  const ts = Number(headers.timestamp);
  if (!headers.signature || !Number.isSafeInteger(ts) || Math.abs(nowS - ts) > toleranceS) return false;
  const want = Buffer.from(signWebhook(secret, ts, rawBody));
  const got = Buffer.from(headers.signature);
  return want.length === got.length && timingSafeEqual(want, got);
}

// ---------------------------------------------------------------------------------------------
// Preferences

export interface QuietHours {
  timeZone: string;
  /** minutes after local midnight; start > end spans midnight (22:00–07:00) */
  start: number;
  end: number;
}

/**
 * When quiet hours that include `now` end (ms), or null when `now` is outside them. Start and end
 * are wall-clock times in the user's zone (daylight-saving changes follow lib/time-zones.ts).
 */
export function quietUntil(now: number, q: QuietHours): number | null {
  if (q.start === q.end) return null;
  const w = wallClock(now, q.timeZone);
  const minute = w.hour * 60 + w.minute;
  const today = localDateOf(now, q.timeZone);
  if (q.start < q.end) {
    return minute >= q.start && minute < q.end ? zonedInstant(today, q.end, q.timeZone) : null;
  }
  // spans midnight
  if (minute >= q.start) return zonedInstant(addDays(today, 1), q.end, q.timeZone);
  if (minute < q.end) return zonedInstant(today, q.end, q.timeZone);
  return null;
}

/** Whether `severity` reaches `minimum`. */
export const meetsSeverity = (severity: NotificationSeverity, minimum: NotificationSeverity) =>
  severityRank(severity) >= severityRank(minimum);

/** `HH:MM` ↔ minutes after midnight (quiet hours in the API). */
export function parseClock(s: string): number | null {
  const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(s);
  return m ? Number(m[1]) * 60 + Number(m[2]) : null;
}
export const formatClock = (min: number) => `${String(Math.floor(min / 60)).padStart(2, '0')}:${String(min % 60).padStart(2, '0')}`;
