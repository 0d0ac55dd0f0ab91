import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSmtpServer, type TestSmtpServer } from '../test/support/smtp.js';
import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { createMailSender, LogMailSender, MailError, SmtpMailSender } from './mail.js';

const logger = createLogger('silent');

describe('SmtpMailSender', () => {
  let smtp: TestSmtpServer;
  let sender: SmtpMailSender;

  beforeAll(async () => {
    smtp = await startSmtpServer();
    sender = new SmtpMailSender({ url: smtp.url, from: 'RULR <rulr@example.test>', timeoutMs: 5000, logger });
  });
  afterAll(async () => {
    await sender.close();
    await smtp.close();
  });

  it('delivers a message with its text, HTML, headers and every recipient to a real SMTP server', async () => {
    const r = await sender.send({
      to: ['ops@example.test', 'night-shift@example.test'],
      subject: 'Lamp failure at Canal Road',
      text: 'Lamp SL-000042 reports a fault.',
      html: '<p>Lamp <b>SL-000042</b> reports a fault.</p>',
      headers: { 'X-RULR-Alarm': 'a-1' },
    });
    expect(r.accepted.sort()).toEqual(['night-shift@example.test', 'ops@example.test']);
    const m = await smtp.waitFor((x) => x.mail.subject === 'Lamp failure at Canal Road');
    expect(m.from).toBe('rulr@example.test');
    expect(m.to.sort()).toEqual(['night-shift@example.test', 'ops@example.test']);
    expect(m.text.trim()).toBe('Lamp SL-000042 reports a fault.');
    expect(m.mail.html).toContain('<b>SL-000042</b>');
    expect(m.mail.headers.get('x-rulr-alarm')).toBe('a-1');
    expect(m.mail.messageId).toBe(r.messageId);
  });

  it('rejects with a MailError naming neither server nor recipient when the server refuses the message', async () => {
    smtp.refuseNext(1, 554);
    const e = await sender.send({ to: 'someone@example.test', subject: 's', text: 't' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MailError);
    expect((e as MailError).code).toBe('INTERNAL_SERVER_ERROR');
    expect((e as MailError).message).not.toMatch(/127\.0\.0\.1|someone@/);
    // and keeps working afterwards
    await sender.send({ to: 'someone@example.test', subject: 'after a refusal', text: 't' });
    await smtp.waitFor((x) => x.mail.subject === 'after a refusal');
  });

  it('authenticates with the user and password of its URL', async () => {
    const secured = await startSmtpServer({ auth: { user: 'rulr', pass: 's3cret/+' } });
    const good = new SmtpMailSender({ url: secured.url, from: 'rulr@example.test', logger });
    const bad = new SmtpMailSender({ url: secured.url.replace('s3cret', 'wrong'), from: 'rulr@example.test', logger });
    try {
      await good.send({ to: 'a@example.test', subject: 'authenticated', text: 't' });
      await secured.waitFor((x) => x.mail.subject === 'authenticated');
      await expect(bad.send({ to: 'a@example.test', subject: 'not authenticated', text: 't' })).rejects.toBeInstanceOf(MailError);
      expect(secured.messages.map((m) => m.mail.subject)).toEqual(['authenticated']);
    } finally {
      await good.close();
      await bad.close();
      await secured.close();
    }
  });

  it('rejects with a MailError within its timeout when no server listens', async () => {
    const closed = await startSmtpServer();
    const url = closed.url;
    await closed.close();
    const s = new SmtpMailSender({ url, from: 'rulr@example.test', timeoutMs: 2000, logger });
    await expect(s.send({ to: 'a@example.test', subject: 's', text: 't' })).rejects.toBeInstanceOf(MailError);
    await s.close();
  });
});

describe('createMailSender', () => {
  it('sends over SMTP when SMTP_URL is set', () => {
    const cfg = loadConfig({ SMTP_URL: 'smtp://127.0.0.1:2525' });
    expect(createMailSender(cfg, logger)).toBeInstanceOf(SmtpMailSender);
  });

  it('logs messages in development when no server is configured', async () => {
    const s = createMailSender(loadConfig({}), logger);
    expect(s).toBeInstanceOf(LogMailSender);
    expect((await s.send({ to: 'a@example.test', subject: 's', text: 't' })).accepted).toEqual(['a@example.test']);
  });

  it('fails every send in production when no server is configured, saying what to set', async () => {
    const s = createMailSender(loadConfig({ NODE_ENV: 'production', RULR_SECRET: 'x'.repeat(40) }), logger);
    await expect(s.send({ to: 'a@example.test', subject: 's', text: 't' })).rejects.toThrow(/SMTP_URL/);
  });

  it('refuses an SMTP_URL that is not smtp:// or smtps://', () => {
    expect(() => loadConfig({ SMTP_URL: 'http://mail.example.test' })).toThrow(/SMTP_URL/);
  });
});
