import type { AddressInfo } from 'node:net';
import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

/** A message the test SMTP server received: the envelope as the client gave it, and the parsed mail. */
export interface ReceivedMail {
  from: string;
  to: string[];
  mail: ParsedMail;
  /** The plain-text body (empty when the message had none). */
  text: string;
}

export interface TestSmtpServer {
  /** `smtp://[user:pass@]127.0.0.1:<port>`: give it to `SMTP_URL` / `SmtpMailSender`. */
  url: string;
  port: number;
  /** Every message received so far, in order. */
  messages: ReceivedMail[];
  /** The first message (received or still to come) that `match` accepts; rejects after `timeoutMs`. */
  waitFor(match: (m: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
  /** The next `count` messages from now take this SMTP reply instead of being accepted (e.g. 550). */
  refuseNext(count: number, code?: number): void;
  close(): Promise<void>;
}

/**
 * A real SMTP server (the `smtp-server` package) on an ephemeral port of 127.0.0.1, for tests that
 * send mail through {@link import('../../lib/mail.js').SmtpMailSender}: it parses what it receives
 * (`mailparser`) so the test reads the delivered message. Plain SMTP, no STARTTLS; with `auth`,
 * only that user and password may send.
 */
export async function startSmtpServer(o: { auth?: { user: string; pass: string } } = {}): Promise<TestSmtpServer> {
  const messages: ReceivedMail[] = [];
  const waiters: { match: (m: ReceivedMail) => boolean; resolve: (m: ReceivedMail) => void }[] = [];
  let refusals: { count: number; code: number } = { count: 0, code: 550 };
  const server = new SMTPServer({
    disabledCommands: o.auth ? ['STARTTLS'] : ['STARTTLS', 'AUTH'],
    authOptional: !o.auth,
    allowInsecureAuth: true,
    logger: false,
    onAuth(auth, _session, cb) {
      if (o.auth && auth.username === o.auth.user && auth.password === o.auth.pass) cb(null, { user: auth.username });
      else cb(new Error('invalid credentials'));
    },
    onData(stream, session, cb) {
      if (refusals.count > 0) {
        refusals.count--;
        stream.resume();
        stream.on('end', () => cb(Object.assign(new Error('refused by the test'), { responseCode: refusals.code })));
        return;
      }
      simpleParser(stream)
        .then((mail) => {
          const m: ReceivedMail = {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            mail,
            text: mail.text ?? '',
          };
          messages.push(m);
          for (const w of waiters.splice(0)) {
            if (w.match(m)) w.resolve(m);
            else waiters.push(w);
          }
          cb();
        })
        .catch((e: Error) => cb(e));
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  const creds = o.auth ? `${encodeURIComponent(o.auth.user)}:${encodeURIComponent(o.auth.pass)}@` : '';
  return {
    url: `smtp://${creds}127.0.0.1:${port}`,
    port,
    messages,
    waitFor(match, timeoutMs = 10_000) {
      const found = messages.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = {
          match,
          resolve: (m: ReceivedMail) => {
            clearTimeout(timer);
            resolve(m);
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no matching mail within ${timeoutMs} ms (received ${messages.length})`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    refuseNext(count, code = 550) {
      refusals = { count, code };
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
