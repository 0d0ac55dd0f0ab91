import { createTransport } from 'nodemailer';
import type { Config } from './config.js';
import { ErrorCode, RulrError } from './errors.js';
import type { Logger } from './logger.js';
import { counter } from './metrics.js';

/** One message, to one or several recipients (an invitation, a password reset, an alarm notification). */
export interface MailMessage {
  to: string | readonly string[];
  subject: string;
  /** The plain-text body; every message has one. */
  text: string;
  /** An HTML alternative of the same content. */
  html?: string | undefined;
  /** Extra headers (`List-Unsubscribe`, `X-RULR-Alarm`, …). */
  headers?: Record<string, string> | undefined;
}

/** What a sent message became at the server. */
export interface SentMail {
  messageId: string;
  /** Recipients the server accepted. */
  accepted: string[];
}

/**
 * Where RULR's mail goes. Senders are pluggable so that tests point the real SMTP sender at a
 * server of their own and development runs without one (`LogMailSender`).
 */
export interface MailSender {
  /** Sends one message; rejects with a {@link MailError} when it could not be handed over. */
  send(message: MailMessage): Promise<SentMail>;
  close(): Promise<void>;
}

/**
 * A message that could not be handed to the mail server (unreachable, refused, timed out). Its
 * message names neither the server nor the recipient; the cause is logged by the sender.
 */
export class MailError extends RulrError {
  constructor(why: string) {
    super(ErrorCode.Internal, `the e-mail could not be sent: ${why}`);
  }
}

const sent = counter('rulr_mail_sent_total', 'E-mail messages handed to the mail server, by result', ['result']);

export interface SmtpOptions {
  /** `smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://…` (TLS from the start). */
  url: string;
  /** The `From` header, e.g. `RULR <no-reply@example.com>`. */
  from: string;
  /** Connection, greeting and socket timeouts. @default 10000 */
  timeoutMs?: number;
  logger: Logger;
}

/** Sends over SMTP with nodemailer (pooled connections, so a burst of notifications reuses them). */
export class SmtpMailSender implements MailSender {
  private readonly transport;
  constructor(private readonly o: SmtpOptions) {
    const timeout = o.timeoutMs ?? 10_000;
    this.transport = createTransport({
      url: o.url,
      pool: true,
      maxConnections: 2,
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
    } as Parameters<typeof createTransport>[0]);
  }

  async send(m: MailMessage): Promise<SentMail> {
    try {
      const info = await this.transport.sendMail({
        from: this.o.from,
        to: typeof m.to === 'string' ? m.to : [...m.to],
        subject: m.subject,
        text: m.text,
        ...(m.html !== undefined ? { html: m.html } : {}),
        ...(m.headers ? { headers: m.headers } : {}),
      });
      sent.inc({ result: 'sent' });
      return { messageId: String(info.messageId), accepted: (info.accepted ?? []).map(String) };
    } catch (e) {
      sent.inc({ result: 'failed' });
      const code = (e as { code?: string; responseCode?: number }).code;
      this.o.logger.warn({ err: e, subject: m.subject }, 'mail not sent');
      throw new MailError(
        code === 'EENVELOPE' ? 'the mail server refused a recipient' : 'the mail server could not be reached or refused it',
      );
    }
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}

/**
 * Development only (no `SMTP_URL`): writes each message to the log instead of sending it, so the
 * quick start can follow an invitation or a reset link. Refused in production, where links in logs
 * would be credentials in logs.
 */
export class LogMailSender implements MailSender {
  private n = 0;
  constructor(private readonly logger: Logger) {}
  async send(m: MailMessage): Promise<SentMail> {
    const to = typeof m.to === 'string' ? [m.to] : [...m.to];
    this.logger.info({ to, subject: m.subject, text: m.text }, 'mail (not sent: SMTP_URL is unset)');
    sent.inc({ result: 'logged' });
    return { messageId: `<logged-${++this.n}@rulr>`, accepted: to };
  }
  async close(): Promise<void> {}
}

/** Production without `SMTP_URL`: every send fails, saying what to configure. */
class UnconfiguredMailSender implements MailSender {
  async send(): Promise<SentMail> {
    sent.inc({ result: 'failed' });
    throw new MailError('no mail server is configured (SMTP_URL)');
  }
  async close(): Promise<void> {}
}

/**
 * The sender the configuration asks for: SMTP when `SMTP_URL` is set; otherwise the log in
 * development and test, and a sender that always fails in production.
 */
export function createMailSender(cfg: Pick<Config, 'SMTP_URL' | 'SMTP_TIMEOUT_MS' | 'MAIL_FROM' | 'NODE_ENV'>, logger: Logger): MailSender {
  if (cfg.SMTP_URL) return new SmtpMailSender({ url: cfg.SMTP_URL, from: cfg.MAIL_FROM, timeoutMs: cfg.SMTP_TIMEOUT_MS, logger });
  if (cfg.NODE_ENV === 'production') return new UnconfiguredMailSender();
  return new LogMailSender(logger);
}
