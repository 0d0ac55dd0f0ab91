// One client process of `npm run bench:realtime`: opens many graphql-transport-ws connections with a
// minimal client on raw `ws` (connection_init → ack → subscribe → next…), records receive time −
// reading `ts` per `next` message, and answers the parent over IPC. It exits when the parent goes away.
import WebSocket from 'ws';
import { Histogram } from './histogram.js';

export type ClientCommand =
  | { cmd: 'connect'; url: string; token: string; siteIds: string[]; query: string; concurrency: number }
  | { cmd: 'reset'; since: number }
  | { cmd: 'report' }
  | { cmd: 'exit' };

export type ClientMessage =
  | { type: 'connected'; ok: number; failed: number; ms: number; firstErrors: string[] }
  | { type: 'progress'; count: number }
  | {
      type: 'report';
      count: number;
      pairs: [number, number][];
      firstAt: number;
      lastAt: number;
      open: number;
      closed: number;
      errors: number;
      firstErrors: string[];
    };

const send = (m: ClientMessage) => process.send?.(m);
const sockets = new Set<WebSocket>();
const hist = new Histogram();
const firstErrors: string[] = [];
let count = 0;
let firstAt = 0;
let lastAt = 0;
let closed = 0;
let errors = 0;
let measuring = false;
/** frames stamped before this (warm-up backlog) are not counted */
let since = 0;

const noteError = (s: string) => {
  errors++;
  if (firstErrors.length < 5) firstErrors.push(s.slice(0, 300));
};

interface NextFrame {
  type: string;
  payload?: { data?: Record<string, { readings?: { ts: string | number }[] } | null>; errors?: unknown[]; message?: string };
}

const TS = /"ts":(?:"([^"]+)"|(\d+))/;

/** Fast path: a `next` frame's first reading `ts` by regex (a full JSON.parse per frame costs the client more CPU than the server spends sending it). */
function onNext(raw: string): void {
  const now = Date.now();
  if (!raw.includes('"type":"next"')) {
    let frame: NextFrame;
    try {
      frame = JSON.parse(raw) as NextFrame;
    } catch {
      noteError(`bad frame: ${raw.slice(0, 100)}`);
      return;
    }
    if (frame.type === 'error') noteError(`error frame: ${JSON.stringify(frame.payload)}`);
    else if (frame.type === 'complete') noteError('subscription completed by the server');
    return;
  }
  if (!measuring) return;
  const m = TS.exec(raw);
  if (!m) {
    noteError(`next without readings: ${raw.slice(0, 200)}`);
    return;
  }
  const at = m[1] !== undefined ? Date.parse(m[1]) : Number(m[2]);
  if (at < since) return;
  count++;
  if (!firstAt) firstAt = now;
  lastAt = now;
  hist.record(now - at);
}

function open(url: string, token: string, siteId: string, query: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false, handshakeTimeout: 60_000 });
    let acked = false;
    const timer = setTimeout(() => {
      if (!acked) {
        ws.terminate();
        reject(new Error('no connection_ack within 60 s'));
      }
    }, 60_000);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
    ws.on('message', (data) => {
      const raw = data.toString();
      if (acked) {
        if (raw.startsWith('{"type":"ping"')) ws.send('{"type":"pong"}');
        else onNext(raw);
        return;
      }
      const m = JSON.parse(raw) as { type: string };
      if (m.type === 'connection_ack') {
        acked = true;
        clearTimeout(timer);
        sockets.add(ws);
        ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables: { siteId } } }));
        resolve();
      } else if (m.type === 'ping') ws.send('{"type":"pong"}');
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      if (sockets.delete(ws)) {
        closed++;
        noteError(`closed ${code} ${reason.toString()}`);
      }
      if (!acked) reject(new Error(`closed before ack: ${code} ${reason.toString()}`));
    });
    ws.on('error', (e) => {
      if (acked) noteError(`socket error: ${e.message}`);
      else reject(e);
    });
  });
}

async function connectAll(c: Extract<ClientCommand, { cmd: 'connect' }>): Promise<void> {
  const t0 = performance.now();
  let next = 0;
  let ok = 0;
  let failed = 0;
  const errs: string[] = [];
  const worker = async () => {
    while (next < c.siteIds.length) {
      const siteId = c.siteIds[next++] as string;
      try {
        await open(c.url, c.token, siteId, c.query);
        ok++;
      } catch (e) {
        failed++;
        if (errs.length < 5) errs.push((e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(c.concurrency, c.siteIds.length) }, worker));
  send({ type: 'connected', ok, failed, ms: performance.now() - t0, firstErrors: errs });
}

let progress: NodeJS.Timeout | undefined;

process.on('message', (c: ClientCommand) => {
  switch (c.cmd) {
    case 'connect':
      void connectAll(c);
      return;
    case 'reset':
      since = c.since;
      hist.reset();
      count = 0;
      firstAt = 0;
      lastAt = 0;
      measuring = true;
      if (!progress) progress = setInterval(() => send({ type: 'progress', count }), 1000);
      return;
    case 'report':
      send({ type: 'report', count, pairs: hist.toPairs(), firstAt, lastAt, open: sockets.size, closed, errors, firstErrors });
      return;
    case 'exit':
      shutdown();
  }
});

function shutdown(): never {
  for (const ws of sockets) ws.terminate();
  process.exit(0);
}

process.on('disconnect', shutdown);
setTimeout(shutdown, Number(process.env.BENCH_CHILD_MAX_MS ?? 900_000)).unref();
