import { randomUUID } from 'node:crypto';
import { type Client, createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type GatewayHandle, startGateway } from '../gateway/index.js';
import { until } from '../ingest/testing/fixtures.js';
import { issueToken } from '../lib/auth.js';
import type { Role } from '../lib/identity.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { TestFleet } from './support/command-fleet.js';
import {
  type CommandStack,
  commandStack,
  inProcessWorkers,
  type JobView,
  SEND_SITE,
  type SiteTenant,
  siteTenant,
} from './support/command-stack.js';

// sendSiteCommand → workers → devices → ingest → workers → Redis → gateway → graphql-ws, every piece real.
let s: CommandStack;
let workers: Awaited<ReturnType<typeof inProcessWorkers>>;
let gw: GatewayHandle;
const clients: Client[] = [];
let fleet: TestFleet | undefined;

beforeAll(async () => {
  s = await commandStack();
  workers = await inProcessWorkers(s);
  gw = await startGateway(s.f.ctx, { port: 0, local: { commands: s.f.mod, devices: createDevicesSubgraph(s.f.ctx) } });
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.dispose();
  await gw?.close();
  await fleet?.close().catch(() => undefined);
  await workers?.close();
  await s?.close();
});

async function client(t: SiteTenant, role: Role): Promise<Client> {
  const cfg = s.f.ctx.config;
  const token = await issueToken(
    { userId: randomUUID(), orgId: t.orgId, role },
    { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 600 },
  );
  const c = createClient({
    url: `ws://127.0.0.1:${gw.port}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
  });
  clients.push(c);
  return c;
}

function collect(c: Client, query: string, variables: Record<string, unknown>) {
  const events: { data?: unknown; errors?: unknown }[] = [];
  const errors: unknown[] = [];
  c.subscribe({ query, variables }, { next: (v) => events.push(v), error: (e) => errors.push(e), complete: () => undefined });
  return { events, errors };
}

const SUBSCRIBE = `subscription($j: ID!) { commandJobUpdated(jobId: $j) {
  status job { id status progress { total succeeded } site { id name } } } }`;

describe('commandJobUpdated through the gateway', () => {
  it("should stream a job's progress with fields of other subgraphs to its organization, and refuse another's subscriber", async () => {
    const a = await siteTenant(s.f, 5);
    const b = await siteTenant(s.f, 1);
    fleet = await new TestFleet(a.deviceIds, s.broker.url).connect();
    await fleet.announce();
    // paused at once, so the subscriptions are in place before anything happens
    const job = (await s.f.ok(a.operator, SEND_SITE, { i: { siteId: a.siteId, name: 'reboot', timeoutSeconds: 10 } }))
      .sendSiteCommand as JobView;
    await s.f.ok(a.operator, 'mutation($id: ID!) { pauseCommandJob(id: $id) { id } }', { id: job.id });
    const before = gw.realtime?.hub.subscriberCount ?? 0;
    const mine = collect(await client(a, 'viewer'), SUBSCRIBE, { j: job.id });
    const theirs = collect(await client(b, 'admin'), SUBSCRIBE, { j: job.id });
    // another organization cannot even subscribe to the job: its id is checked as the subscriber
    await until(() => JSON.stringify(theirs.errors).includes('FORBIDDEN'), 10_000, "the other organization's refusal");
    await until(() => gw.realtime?.hub.subscriberCount === before + 1, 10_000, 'one subscriber');
    await gw.realtime?.hub.settled();
    await s.f.ok(a.operator, 'mutation($id: ID!) { resumeCommandJob(id: $id) { id } }', { id: job.id });
    type Ev = {
      commandJobUpdated: { status: string; job: { status: string; progress: { total: number; succeeded: number }; site: unknown } };
    };
    const last = () => (mine.events.at(-1)?.data as Ev | undefined)?.commandJobUpdated;
    await until(() => last()?.status === 'COMPLETED', 30_000, 'COMPLETED event');
    expect(last()?.job).toEqual({
      id: job.id,
      status: 'COMPLETED',
      progress: { total: 5, succeeded: 5 },
      site: { id: a.siteId, name: 'City' },
    });
    const statuses = mine.events.map((e) => (e.data as Ev).commandJobUpdated.status);
    expect(statuses.indexOf('RUNNING')).toBeGreaterThanOrEqual(0);
    expect(statuses.indexOf('RUNNING')).toBeLessThan(statuses.indexOf('COMPLETED'));
    expect(mine.errors).toEqual([]);
    await new Promise((r) => setTimeout(r, 500));
    expect(theirs.events).toEqual([]);
    expect(JSON.stringify(theirs.errors)).toContain(`job ${job.id} is not visible to you`);
  }, 60_000);
});
