import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import { subgraphFixture } from './devices-fixtures.js';
import { type AlarmsFixture, raise, recipientRule, sleep, tenant, until, webhookChannel } from './notifications-fixtures.js';
import { REDIS_URL } from './support/env.js';
import { startWebhookServer, type TestWebhookServer } from './support/webhook.js';

// Two notifier processes (workers/testing/run-notifier.ts) on one queue and one database: every
// notification goes out once, and a process SIGKILLed while it holds a delivery leaves it to the other.

let f: AlarmsFixture;
let hooks: TestWebhookServer;
const children: ChildProcess[] = [];

beforeAll(async () => {
  f = await subgraphFixture(createAlarmsSubgraph);
  hooks = await startWebhookServer();
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await hooks?.close();
  await f?.close();
});

function notifierProcess(env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/testing/run-notifier.ts'], {
    env: {
      ...process.env,
      DATABASE_URL: f.t.url,
      REDIS_URL,
      REDIS_PREFIX: f.ctx.config.REDIS_PREFIX,
      NOTIFY_WEBHOOK_ALLOW: '127.0.0.1/32',
      RULR_SECRET: f.ctx.config.RULR_SECRET,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => lines.push(`stderr ${d}`));
  const waitFor = (re: RegExp) =>
    until(async () => lines.find((l) => re.test(l)), `a line matching ${re} (${lines.slice(-3).join(' | ')})`, 30_000);
  return { child, lines, waitFor };
}

describe('two notifier processes', () => {
  it('send each notification once, also when one is SIGKILLed holding a delivery', async () => {
    const w = await tenant(f, 20);
    const path = `/once/${randomUUID()}`;
    await recipientRule(f, w.orgId, { channelIds: [await webhookChannel(f, w.orgId, `${hooks.url}${path}`, 'secret')] });
    const a = notifierProcess({ HOLD_MS: '1500' });
    const b = notifierProcess({ HOLD_MS: '1500' });
    await a.waitFor(/^ready$/);
    await b.waitFor(/^ready$/);
    // different alarm types: 20 windows of one alarm each, so 20 notifications
    for (const d of w.deviceIds) await raise(f, w.orgId, d, `Fault ${d}`);

    const victim = await until(async () => [a, b].find((p) => p.lines.some((l) => l.startsWith('sending '))), 'a process to start sending');
    victim.child.kill('SIGKILL');
    // what it held and had not finished when it died
    const done = new Set(victim.lines.filter((l) => l.startsWith('attempted ')).map((l) => l.split(' ')[1]));
    const held = victim.lines
      .filter((l) => l.startsWith('sending '))
      .map((l) => l.slice('sending '.length))
      .filter((id) => !done.has(id));
    const survivor = victim === a ? b : a;

    const sent = await until(
      async () => {
        const { rows } = await sql<{ id: string; status: string }>`
          select id, status from notification_deliveries where org_id = ${w.orgId}`.execute(f.t.db);
        return rows.length === 20 && rows.every((r) => r.status === 'sent') ? rows : null;
      },
      'all 20 deliveries to be sent',
      60_000,
    );
    await sleep(1000);
    const mine = hooks.received.filter((h) => h.path === path && h.status === 200);
    const byDelivery = new Map<string, number>();
    for (const h of mine) {
      const id = String(h.headers['x-rulr-delivery']);
      byDelivery.set(id, (byDelivery.get(id) ?? 0) + 1);
    }
    expect([...byDelivery.keys()].sort()).toEqual(sent.map((r) => r.id).sort());
    expect([...byDelivery.values()].every((n) => n === 1)).toBe(true);
    // what the killed process held was sent by the survivor
    expect(held.length).toBeGreaterThan(0);
    for (const id of held) expect(survivor.lines).toContain(`sending ${id}`);
    const { rows: notes } = await sql<{ n: number }>`
      select count(*)::int as n from notifications where org_id = ${w.orgId} and not grouped`.execute(f.t.db);
    expect(notes[0]?.n).toBe(20);
  });
});
