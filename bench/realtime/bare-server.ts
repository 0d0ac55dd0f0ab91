// Baseline of `npm run bench:realtime`: a bare `ws` server speaking just enough graphql-transport-ws
// (ack, subscribe by `siteId`) that broadcasts self-generated telemetry frames of the gateway's shape
// to each site's subscribers: one JSON.stringify per event, one send per subscriber. No Redis, no
// GraphQL, no auth: what the hardware and `ws` can do.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type WebSocket, WebSocketServer } from 'ws';

export type BareCommand =
  | { cmd: 'count' }
  | { cmd: 'broadcast'; rate: number; durationS: number; devices: { name: string; siteId: string }[] }
  | { cmd: 'exit' };
export type BareMessage =
  | { type: 'listening'; port: number }
  | { type: 'count'; connections: number; subscriptions: number }
  | { type: 'done'; events: number; frames: number };

const send = (m: BareMessage) => process.send?.(m);
const bySite = new Map<string, Set<WebSocket>>();
let subscriptions = 0;
const http = createServer();
const wss = new WebSocketServer({
  server: http,
  path: '/graphql',
  perMessageDeflate: false,
  handleProtocols: () => 'graphql-transport-ws',
});

wss.on('connection', (ws) => {
  let site: Set<WebSocket> | undefined;
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString()) as { type: string; payload?: { variables?: { siteId?: string } } };
    if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}');
    else if (m.type === 'ping') ws.send('{"type":"pong"}');
    else if (m.type === 'subscribe' && !site) {
      const id = String(m.payload?.variables?.siteId);
      site = bySite.get(id) ?? new Set();
      bySite.set(id, site);
      site.add(ws);
      subscriptions++;
    }
  });
  ws.on('close', () => {
    if (site?.delete(ws)) subscriptions--;
  });
  ws.on('error', () => ws.terminate());
});

function broadcast(c: Extract<BareCommand, { cmd: 'broadcast' }>): void {
  const perTick = c.rate / 100;
  const t0 = performance.now();
  const wall0 = Date.now();
  const ticks = c.durationS * 100;
  let tick = 0;
  let events = 0;
  let frames = 0;
  let carry = 0;
  const run = () => {
    carry += perTick;
    const n = Math.floor(carry);
    carry -= n;
    // Stamped with the scheduled time, so a server that falls behind shows it as latency.
    const ts = new Date(wall0 + tick * 10).toISOString();
    for (let i = 0; i < n; i++) {
      const d = c.devices[events % c.devices.length] as { name: string; siteId: string };
      events++;
      const frame = JSON.stringify({
        id: '1',
        type: 'next',
        payload: {
          data: {
            telemetryUpdated: {
              device: { name: d.name },
              readings: [
                { metric: 'power', value: (events % 2500) / 10, ts },
                { metric: 'dim', value: events % 100, ts },
              ],
            },
          },
        },
      });
      for (const ws of bySite.get(d.siteId) ?? []) {
        ws.send(frame);
        frames++;
      }
    }
    tick++;
    if (tick >= ticks) {
      send({ type: 'done', events, frames });
      return;
    }
    setTimeout(run, Math.max(0, t0 + tick * 10 - performance.now()));
  };
  run();
}

process.on('message', (c: BareCommand) => {
  if (c.cmd === 'count') send({ type: 'count', connections: wss.clients.size, subscriptions });
  else if (c.cmd === 'broadcast') broadcast(c);
  else shutdown();
});

function shutdown(): never {
  for (const ws of wss.clients) ws.terminate();
  process.exit(0);
}
process.on('disconnect', shutdown);
setTimeout(shutdown, Number(process.env.BENCH_CHILD_MAX_MS ?? 900_000)).unref();

http.listen(0, '127.0.0.1', () => send({ type: 'listening', port: (http.address() as AddressInfo).port }));
