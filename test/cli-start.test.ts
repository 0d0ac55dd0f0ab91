import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type Broker, freePort, startNoDropBroker } from '../ingest/testing/broker.js';
import { ingestEnv } from '../ingest/testing/fixtures.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// `rulr start all` as an operator runs it: a real process, stopped with SIGTERM. A clean drain
// exits 0 after logging "stopped"; the 30 s hard stop exits 1.
const MAIN = fileURLToPath(new URL('../cli/main.ts', import.meta.url));

let t: TestDatabase;
let broker: Broker;

beforeAll(async () => {
  t = await createTestDatabase();
  broker = await startNoDropBroker();
});
afterAll(async () => {
  await broker?.stop();
  await t?.drop();
});

/**
 * `rulr start all` on free ports. A port `freePort` found can be taken by another test file's process
 * before the roles bind it (the projects run in parallel): that start, and only that one, is tried
 * again on new ports, up to 3 times.
 */
async function startAll(attempt = 1): Promise<{ child: ChildProcess; gatewayPort: number; output: () => string }> {
  try {
    return await startAllOnce();
  } catch (e) {
    if (attempt < 3 && /exited early:[\s\S]*EADDRINUSE/.test((e as Error).message)) return startAll(attempt + 1);
    throw e;
  }
}

async function startAllOnce(): Promise<{ child: ChildProcess; gatewayPort: number; output: () => string }> {
  const ports: Record<string, string> = {};
  for (const name of ['GATEWAY', 'DEVICES', 'ALARMS', 'RULES', 'METRICS', 'INGEST', 'WORKERS', 'REALTIME']) {
    ports[`${name}_PORT`] = String(await freePort());
  }
  const env = { ...process.env, ...ingestEnv({ dbUrl: t.url, mqttUrl: broker.url }), ...ports, REDIS_URL, LOG_LEVEL: 'info' };
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'start', 'all'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  const gatewayPort = Number(ports.GATEWAY_PORT);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rulr start all exited early:\n${out}`);
    const ok = await fetch(`http://127.0.0.1:${gatewayPort}/readyz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`rulr start all not ready:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, gatewayPort, output: () => out };
}

function stop(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  return exited;
}

describe('rulr start all', () => {
  it('drains and exits 0 on SIGTERM right after it is ready', async () => {
    const { child, output } = await startAll();
    expect(await stop(child)).toBe(0);
    expect(output()).toContain('"msg":"stopped"');
    expect(output()).not.toContain('did not stop in time');
  }, 60_000);

  it('drains and exits 0 on SIGTERM with a live graphql-ws client and a keep-alive HTTP client connected', async () => {
    const { child, gatewayPort, output } = await startAll();
    const ws = new WebSocket(`ws://127.0.0.1:${gatewayPort}/graphql`, 'graphql-transport-ws');
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
    await new Promise((r) => ws.on('open', r));
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: gatewayPort, path: '/healthz', agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
    });
    expect(await stop(child)).toBe(0);
    // the socket was closed by the server (1001 going away), not left to time out
    expect(await closed).toBe(1001);
    expect(output()).toContain('"msg":"stopped"');
    agent.destroy();
  }, 60_000);
});
