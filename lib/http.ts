import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { counter, registry } from './metrics.js';

export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean> | boolean;
export type ReadyCheck = () => Promise<void>;

export interface ServiceServerOptions {
  /** role name, used in logs and metrics */
  name: string;
  port: number;
  host?: string;
  /** Dependencies checked by `/readyz`; each throws when down. */
  checks?: Record<string, ReadyCheck>;
  /** Application routes; return true when the request was handled. */
  handle?: Handler;
}

const httpRequests = counter('rulr_http_requests_total', 'HTTP requests by role and status class', ['role', 'status']);

/**
 * The HTTP server every role runs: `/healthz` (the process is alive), `/readyz` (its dependencies
 * answer), `/metrics` (Prometheus), then the role's own routes.
 */
export class ServiceServer {
  readonly server: Server;
  private draining = false;

  constructor(private readonly o: ServiceServerOptions) {
    // the counter of each status class resolved once, and one listener shared by every response: no label
    // object, closure or label lookup per request (the broker-auth endpoints answer thousands a second)
    const byClass = ['1xx', '2xx', '3xx', '4xx', '5xx'].map((status) => httpRequests.labels(o.name, status));
    function counted(this: ServerResponse): void {
      byClass[Math.min(4, Math.max(0, Math.floor(this.statusCode / 100) - 1))]?.inc();
    }
    this.server = createServer((req, res) => {
      res.once('finish', counted);
      this.route(req, res).catch((e) => {
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.destroy(e as Error);
      });
    });
    this.server.keepAliveTimeout = 65_000;
    this.server.headersTimeout = 66_000;
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req.url);
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { status: 'ok', role: this.o.name });
    if (req.method === 'GET' && path === '/readyz') {
      if (this.draining) return sendJson(res, 503, { status: 'draining' });
      const results: Record<string, string> = {};
      let ok = true;
      await Promise.all(
        Object.entries(this.o.checks ?? {}).map(async ([k, check]) => {
          try {
            await withTimeout(check(), 2000);
            results[k] = 'ok';
          } catch (e) {
            ok = false;
            results[k] = (e as Error).message || 'down';
          }
        }),
      );
      return sendJson(res, ok ? 200 : 503, { status: ok ? 'ok' : 'unavailable', checks: results });
    }
    if (req.method === 'GET' && path === '/metrics') {
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(await registry.metrics());
      return;
    }
    if (this.o.handle && (await this.o.handle(req, res))) return;
    sendJson(res, 404, { error: 'not found' });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.o.port, this.o.host ?? '0.0.0.0', () => resolve());
    });
    return (this.server.address() as AddressInfo).port;
  }

  /** Stops accepting, lets in-flight requests finish (up to `graceMs`), then closes idle sockets. */
  async close(graceMs = 10_000): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const t = setTimeout(() => this.server.closeAllConnections(), graceMs);
    await closed;
    clearTimeout(t);
  }
}

/** The path of a request target (before any `?`), without splitting it into an array. */
export function pathOf(url: string | undefined): string {
  if (url === undefined) return '/';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(s), ...headers });
  res.end(s);
}

export class BodyTooLargeError extends Error {}

/** Reads a request body up to `limit` bytes; larger bodies reject with BodyTooLargeError. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      req.resume();
      reject(new BodyTooLargeError(`request body exceeds ${limit} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLargeError(`request body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
