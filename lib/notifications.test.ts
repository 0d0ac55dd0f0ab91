import { describe, expect, it } from 'vitest';
import {
  DEFAULT_TEMPLATES,
  formatClock,
  meetsSeverity,
  parseClock,
  providerBodyProblem,
  quietUntil,
  render,
  renderMessage,
  SAMPLE_VARIABLES,
  signWebhook,
  templateProblem,
  verifyWebhook,
} from './notifications.js';

describe('notification templates', () => {
  it('escapes values for HTML mail and JSON bodies, not for plain text', () => {
    const v = { name: '<b>"x"</b>' };
    expect(render('{{name}}', v, 'text')).toBe('<b>"x"</b>');
    expect(render('{{name}}', v, 'html')).toBe('&lt;b&gt;&quot;x&quot;&lt;&#x2F;b&gt;');
    expect(JSON.parse(render('{"t":"{{name}}"}', v, 'json'))).toEqual({ t: '<b>"x"</b>' });
  });

  it('renders every built-in template with the sample variables, HTML escaped', () => {
    for (const [key, t] of Object.entries(DEFAULT_TEMPLATES)) {
      expect(templateProblem(t.subject), key).toBeNull();
      expect(templateProblem(t.body), key).toBeNull();
      const m = renderMessage(t, { ...SAMPLE_VARIABLES, message: '<script>' });
      expect(m.subject.length, key).toBeGreaterThan(0);
      expect(m.html).not.toContain('<script>');
    }
    const digest = renderMessage(DEFAULT_TEMPLATES['alarm.digest'] as never, {
      ...SAMPLE_VARIABLES,
      count: 500,
      items: [{ deviceName: 'a', message: 'dark' }],
      more: 499,
    });
    expect(digest.subject).toContain('500 alarms');
    expect(digest.text).toContain('and 499 more');
  });

  it('refuses unbalanced sections, partials and delimiter changes', () => {
    expect(templateProblem('{{#a}}x')).toMatch(/not a valid template/);
    expect(templateProblem('{{> other}}')).toMatch(/partials/);
    expect(templateProblem('{{=<% %>=}}')).toMatch(/delimiters/);
    expect(templateProblem('hello {{name}}')).toBeNull();
  });

  it('checks that a provider body renders to JSON', () => {
    expect(providerBodyProblem('{"text":"{{subject}}: {{text}}"}')).toBeNull();
    expect(providerBodyProblem('{"n": {{count}} }')).toBeNull();
    expect(providerBodyProblem('text={{text}}')).toMatch(/JSON/);
  });
});

describe('webhook signature', () => {
  it('verifies its own signature and refuses a changed body, another secret and an old timestamp', () => {
    const body = '{"a":1}';
    const ts = 1_700_000_000;
    const sig = signWebhook('s3cret-s3cret-s3cret', ts, body);
    expect(sig).toMatch(/^v1=[0-9a-f]{64}$/);
    const h = { signature: sig, timestamp: String(ts) };
    expect(verifyWebhook('s3cret-s3cret-s3cret', h, body, ts + 10)).toBe(true);
    expect(verifyWebhook('s3cret-s3cret-s3cret', h, '{"a":2}', ts + 10)).toBe(false);
    expect(verifyWebhook('other-other-other-other', h, body, ts + 10)).toBe(false);
    expect(verifyWebhook('s3cret-s3cret-s3cret', h, body, ts + 3600)).toBe(false);
    expect(verifyWebhook('s3cret-s3cret-s3cret', { signature: undefined, timestamp: String(ts) }, body, ts)).toBe(false);
  });
});

describe('quiet hours', () => {
  const q = { timeZone: 'Europe/Amsterdam', start: 22 * 60, end: 7 * 60 };
  it('ends at the next local end time when inside a window that spans midnight', () => {
    // 23:30 CET on 2026-01-10 = 22:30Z → ends 07:00 CET on 2026-01-11 = 06:00Z
    expect(quietUntil(Date.parse('2026-01-10T22:30:00Z'), q)).toBe(Date.parse('2026-01-11T06:00:00Z'));
    // 05:00 CET → ends the same day 07:00 CET
    expect(quietUntil(Date.parse('2026-01-11T04:00:00Z'), q)).toBe(Date.parse('2026-01-11T06:00:00Z'));
    // 12:00 CET: not quiet
    expect(quietUntil(Date.parse('2026-01-11T11:00:00Z'), q)).toBeNull();
  });
  it('follows daylight-saving time and same-day windows', () => {
    // summer: 23:30 CEST = 21:30Z → 07:00 CEST = 05:00Z
    expect(quietUntil(Date.parse('2026-07-10T21:30:00Z'), q)).toBe(Date.parse('2026-07-11T05:00:00Z'));
    const lunch = { timeZone: 'UTC', start: 12 * 60, end: 13 * 60 };
    expect(quietUntil(Date.parse('2026-07-10T12:30:00Z'), lunch)).toBe(Date.parse('2026-07-10T13:00:00Z'));
    expect(quietUntil(Date.parse('2026-07-10T13:00:00Z'), lunch)).toBeNull();
  });
  it('parses and formats clock times', () => {
    expect(parseClock('07:05')).toBe(425);
    expect(parseClock('24:00')).toBeNull();
    expect(formatClock(425)).toBe('07:05');
  });
  it('compares severities', () => {
    expect(meetsSeverity('critical', 'major')).toBe(true);
    expect(meetsSeverity('minor', 'major')).toBe(false);
    expect(meetsSeverity('minor', 'minor')).toBe(true);
  });
});
