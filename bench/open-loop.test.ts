import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { responseLength, runOpenLoopRaw } from './open-loop.js';

describe('responseLength', () => {
  const res = (s: string) => responseLength(Buffer.from(s, 'latin1'));

  it('should frame a Content-Length response and wait for all of its body', () => {
    const full = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello';
    expect(res(full)).toEqual({ length: full.length, status: 200 });
    expect(res(full.slice(0, -1)).length).toBe(-1);
    expect(res(`${full}HTTP/1.1 200`).length).toBe(full.length);
  });

  it('should frame a chunked response up to its last chunk', () => {
    const full = 'HTTP/1.1 429 Too Many\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n';
    expect(res(full)).toEqual({ length: full.length, status: 429 });
    for (const cut of [10, full.length - 1, full.length - 5]) expect(res(full.slice(0, cut)).length).toBe(-1);
  });
});

describe('runOpenLoopRaw', () => {
  let server: Server;
  let url: string;
  let bodies = 0;
  let connections = 0;
  let closeEach = false;
  beforeAll(async () => {
    let n = 0;
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        if (body === '{"q":1}' && req.headers['x-test'] === 'yes') bodies++;
        n++;
        if (closeEach) res.setHeader('connection', 'close');
        // every 7th answer refused, and both framings
        if (n % 7 === 0) res.writeHead(503).end('no');
        else if (n % 2) res.end(JSON.stringify({ data: { n } }));
        else {
          res.write('{"data":');
          res.end('{}}');
        }
      });
    });
    server.on('connection', () => {
      connections++;
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('should send every scheduled request over the fixed pool and count non-200 answers as errors', async () => {
    const samples: number[] = [];
    const r = await runOpenLoopRaw({
      url,
      headers: { 'x-test': 'yes' },
      body: '{"q":1}',
      rate: 400,
      durationS: 0.5,
      connections: 4,
      onSample: (_at, l) => samples.push(l),
    });
    expect(r.completed).toBe(200);
    expect(samples).toHaveLength(200);
    // 4 warm-up requests + 200 measured, each body and header seen by the server
    expect(bodies).toBe(204);
    // answers 7, 14, … of 204 were 503; those among the measured 200 (answers 5–204)
    const refused = Array.from({ length: 200 }, (_, i) => i + 5).filter((n) => n % 7 === 0).length;
    expect(r.errors).toBe(refused);
    expect(r.p50).toBeGreaterThan(0);
    expect(r.p99).toBeGreaterThanOrEqual(r.p50);
  });

  it('should reconnect a connection the server closed between requests, losing no request', async () => {
    const before = bodies;
    const connectionsBefore = connections;
    closeEach = true; // as a keep-alive timeout does to a connection idle between two of its requests
    try {
      const r = await runOpenLoopRaw({ url, headers: { 'x-test': 'yes' }, body: '{"q":1}', rate: 20, durationS: 1, connections: 3 });
      expect(r.completed).toBe(20);
      expect(bodies - before).toBe(23);
      // the server did close idle connections, and they were opened again
      expect(connections - connectionsBefore).toBeGreaterThan(6);
    } finally {
      closeEach = false;
    }
  });

  it('should pipeline requests on its connections when asked (EMQX), matching the answers in order', async () => {
    let seen = 0;
    let opened = 0;
    const slow = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        seen++;
        // alternately late and at once: a later request's answer waits behind the earlier one's
        setTimeout(() => res.end('ok'), seen % 2 ? 5 : 0);
      });
    });
    slow.on('connection', () => {
      opened++;
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    try {
      const r = await runOpenLoopRaw({
        url: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/x`,
        headers: {},
        body: '{}',
        rate: 400,
        durationS: 0.5,
        connections: 2,
        pipelining: 10,
      });
      expect(r.completed).toBe(200);
      expect(r.errors).toBe(0);
      expect(seen).toBe(202);
      expect(opened).toBe(2);
    } finally {
      await new Promise<void>((r) => slow.close(() => r()));
    }
  });
});
