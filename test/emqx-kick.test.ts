import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { contextFor, ingestEnv } from '../ingest/testing/fixtures.js';
import type { Identity } from '../lib/identity.js';
import type { RoleContext } from '../lib/role.js';
import { type BrokerSyncHandle, startBrokerSync } from '../workers/broker-sync/index.js';
import { type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { MQTT_URL, REDIS_URL } from './support/env.js';

// The workers' EMQX kick-out against an HTTP server answering as EMQX 5's REST API documents
// `DELETE /api/v5/clients/{clientid}` (204 disconnected, 404 not connected; basic authentication
// with an API key and secret). EMQX itself is not installable here.

let f: DevicesFixture;
let emqx: Server;
let ctx: RoleContext;
let sync: BrokerSyncHandle;
let admin: Identity;
const kicked: { path: string; auth: string | undefined }[] = [];
let n = 0;

const CREATE = `mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }`;
const ROTATE = `mutation($id: ID!, $g: Int) { rotateDeviceCredentials(id: $id, graceSeconds: $g) { credentialId } }`;
const device = async () => {
  const id = (await f.ok(admin, CREATE, { input: { serial: `KICK-${++n}`, name: `K ${n}` } })).createDevice.id as string;
  return { id, credentialId: (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials.credentialId as string };
};
const kicksOf = (id: string) => kicked.filter((k) => k.path === `/api/v5/clients/${id}`);

beforeAll(async () => {
  f = await devicesFixture();
  emqx = createServer((req, res) => {
    kicked.push({ path: req.url ?? '', auth: req.headers.authorization });
    res.writeHead(req.method === 'DELETE' ? (kicked.length % 2 ? 204 : 404) : 405).end();
  });
  await new Promise<void>((r) => emqx.listen(0, '127.0.0.1', r));
  const port = (emqx.address() as AddressInfo).port;
  ({ ctx } = contextFor(
    ingestEnv({
      dbUrl: f.t.url,
      mqttUrl: MQTT_URL,
      prefix: f.ctx.config.REDIS_PREFIX,
      extra: {
        REDIS_URL,
        EMQX_API_URL: `http://127.0.0.1:${port}/api/v5`,
        EMQX_API_KEY: 'rulr-workers',
        EMQX_API_SECRET: 'api-secret',
        DYNSEC_RECONCILE_S: '1',
      },
    }),
  ));
  sync = (await startBrokerSync(ctx)) as BrokerSyncHandle;
  await sync.ready;
  admin = f.as(await f.org(), 'admin');
});

afterAll(async () => {
  await sync?.close();
  await ctx?.close();
  await new Promise((r) => emqx?.close(r));
  await f?.close();
});

describe('EMQX kick-out from the workers role', () => {
  it('disconnects a device whose credential is revoked, with the API key', async () => {
    const d = await device();
    await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: d.credentialId });
    await expect.poll(() => kicksOf(d.id).length, { timeout: 5000 }).toBeGreaterThan(0);
    expect(kicksOf(d.id)[0]?.auth).toBe(`Basic ${Buffer.from('rulr-workers:api-secret').toString('base64')}`);
  });

  it('disconnects a decommissioned device, and one whose old secret a rotation revoked at once', async () => {
    const d = await device();
    await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id: d.id });
    await expect.poll(() => kicksOf(d.id).length, { timeout: 5000 }).toBeGreaterThan(0);
    const e = await device();
    await f.ok(admin, ROTATE, { id: e.id, g: 0 });
    await expect.poll(() => kicksOf(e.id).length, { timeout: 5000 }).toBeGreaterThan(0);
  });

  it('leaves alone a device rotated with a grace period (EMQX ends that session by expire_at)', async () => {
    const d = await device();
    await f.ok(admin, ROTATE, { id: d.id, g: 600 });
    await new Promise((r) => setTimeout(r, 1500));
    expect(kicksOf(d.id)).toEqual([]);
  });

  it('kicks a device revoked without a notice at the next sweep', async () => {
    const d = await device();
    await f.t.db.updateTable('device_credentials').set({ revoked_at: sql`now()` }).where('id', '=', d.credentialId).execute();
    await expect.poll(() => kicksOf(d.id).length, { timeout: 5000 }).toBeGreaterThan(0);
  });
});
