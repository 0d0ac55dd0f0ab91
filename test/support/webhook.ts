import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the test webhook receiver got: headers, the raw body, and the status it answered. */
export interface ReceivedHook {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  status: number;
}

export interface TestWebhookServer {
  /** `http://127.0.0.1:<port>` */
  url: string;
  received: ReceivedHook[];
  /** The next requests answer these statuses, in order (then 200). */
  answer(...statuses: number[]): void;
  /** Waits until `count` requests matching `match` arrived; rejects after `timeoutMs`. */
  waitFor(count: number, match?: (h: ReceivedHook) => boolean, timeoutMs?: number): Promise<ReceivedHook[]>;
  close(): Promise<void>;
}

/** A real HTTP server on an ephemeral port of 127.0.0.1 that records every POST (a webhook receiver). */
export async function startWebhookServer(): Promise<TestWebhookServer> {
  const received: ReceivedHook[] = [];
  let script: number[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const status = script.shift() ?? 200;
      received.push({ path: req.url ?? '/', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), status });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'try again');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    answer(...statuses) {
      script = statuses;
    },
    async waitFor(count, match = () => true, timeoutMs = 15_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const hits = received.filter(match);
        if (hits.length >= count) return hits;
        if (Date.now() > end) throw new Error(`expected ${count} webhook requests, got ${hits.length} (of ${received.length})`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
