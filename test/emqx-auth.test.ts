import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IngestHandle } from '../ingest/index.js';
import { legacySha256 } from '../lib/device-credentials.js';
import type { Identity } from '../lib/identity.js';
import { registry } from '../lib/metrics.js';
import type { DevicesFixture } from './devices-fixtures.js';
import { selfSignedCertificate } from './support/certs.js';
import { type IngestStack, ingestStack } from './support/ingest-stack.js';

// EMQX 5's HTTP authentication and authorization against the real ingest role, in the exact form
// EMQX sends (deploy/emqx/emqx.conf renders every placeholder as a string; POST with a JSON body)
// and reads (a 200 with {"result": ...}; see ingest/broker-auth/emqx.ts for the sources).

const TOKEN = 'emqx-test-token-0123456789';
const INGEST_PASSWORD = 'ingest-password-0123456789';
const PROVISION_PASSWORD = 'provision-pw';

let stack: IngestStack;
let f: DevicesFixture;
let ingest: IngestHandle;
let admin: Identity;
let n = 0;

const CREATE = `mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }`;
const ROTATE = `mutation($id: ID!, $g: Int) { rotateDeviceCredentials(id: $id, graceSeconds: $g) { credentialId clientId username secret } }`;

async function call(path: '/mqtt/auth' | '/mqtt/acl', body: unknown, o: { token?: string | null; raw?: string; method?: string } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (o.token !== null) headers.authorization = `Bearer ${o.token ?? TOKEN}`;
  const r = await fetch(`http://127.0.0.1:${ingest.port}${path}`, {
    method: o.method ?? 'POST',
    headers,
    ...(o.method === 'GET' ? {} : { body: o.raw ?? JSON.stringify(body) }),
  });
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  return (await r.json()) as {
    result: string;
    is_superuser?: boolean;
    acl?: { permission: string; action: string; topic: string }[];
    expire_at?: number;
  };
}

const authn = (username: string, password: string, clientid: string, extra: Record<string, string> = {}) =>
  call('/mqtt/auth', { username, password, clientid, peerhost: '10.0.0.7', cert_pem: '', ...extra });
const authz = (username: string, clientid: string, action: string, topic: string) =>
  call('/mqtt/acl', { username, clientid, peerhost: '10.0.0.7', action, topic, qos: '1', retain: 'false' });

async function device(profile?: { isGateway: boolean }) {
  let profileId: string | undefined;
  if (profile) {
    profileId = (await f.ok(admin, `mutation { createDeviceProfile(input: { name: "GW ${++n}", isGateway: true }) { id } }`))
      .createDeviceProfile.id;
  }
  const id = (await f.ok(admin, CREATE, { input: { serial: `EMQX-${++n}`, name: `Device ${n}`, profileId } })).createDevice.id as string;
  const creds = (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials as { credentialId: string; username: string; secret: string };
  return { id, ...creds };
}

/** The request bodies of the shipped deploy/emqx/emqx.conf, rendered as EMQX renders them: every placeholder a string. */
function shippedBodies(values: Record<string, string>): Record<string, string>[] {
  const conf = readFileSync(new URL('../deploy/emqx/emqx.conf', import.meta.url), 'utf8');
  return [...conf.matchAll(/body \{\n([\s\S]*?)\n\s*\}\n/g)].map((m) =>
    Object.fromEntries(
      [...(m[1] as string).matchAll(/(\w+) = "\$\{(\w+)\}"/g)].map(([, key, placeholder]) => [
        key as string,
        values[placeholder as string] ?? '',
      ]),
    ),
  );
}

const verifications = async (outcome: string) =>
  (await registry.getSingleMetric('rulr_device_auth_verifications_total')?.get())?.values.find((v) => v.labels.outcome === outcome)
    ?.value ?? 0;

beforeAll(async () => {
  stack = await ingestStack({
    EMQX_AUTH_TOKEN: TOKEN,
    MQTT_INGEST_PASSWORD: INGEST_PASSWORD,
    MQTT_PROVISION_PASSWORD: PROVISION_PASSWORD,
    DEVICE_AUTH_MAX_FAILURES: '3',
  });
  ({ f, ingest } = stack);
  admin = f.as(await f.org(), 'admin');
});

afterAll(() => stack?.close());

describe('EMQX HTTP authentication on the ingest role', () => {
  it("allows a device's own username, secret and client id, with its whole ACL and never as superuser", async () => {
    const d = await device();
    const a = await authn(d.username, d.secret, d.id);
    expect(a.result).toBe('allow');
    expect(a.is_superuser).toBe(false);
    expect(a.acl).toContainEqual({ permission: 'allow', action: 'publish', topic: `devices/${d.id}/telemetry` });
    expect(a.acl).toContainEqual({ permission: 'allow', action: 'subscribe', topic: `eq devices/${d.id}/commands` });
    expect(a.acl?.at(-2)).toEqual({ permission: 'deny', action: 'all', topic: '#' });
    expect(a.acl?.some((r) => r.permission === 'allow' && r.topic.includes('gateways/'))).toBe(false);
    expect(a.expire_at).toBeUndefined();
  });

  it('gives a concentrator its gateways/ topics', async () => {
    const g = await device({ isGateway: true });
    const a = await authn(g.username, g.secret, g.id);
    expect(a.acl).toContainEqual({ permission: 'allow', action: 'subscribe', topic: `eq gateways/${g.id}/commands` });
    expect(a.acl).toContainEqual({ permission: 'allow', action: 'publish', topic: `gateways/${g.id}/telemetry` });
  });

  it("denies a wrong secret, another device's client id, an empty secret and an unknown username", async () => {
    const d = await device();
    const other = await device();
    expect((await authn(d.username, `${d.secret}x`, d.id)).result).toBe('deny');
    expect((await authn(d.username, d.secret, other.id)).result).toBe('deny');
    expect((await authn(d.username, '', d.id)).result).toBe('deny');
    expect((await authn(`${d.id}.00000000`, d.secret, d.id)).result).toBe('deny');
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
  });

  it('refuses a username after repeated failures, even with the right secret', async () => {
    const d = await device();
    for (let i = 0; i < 3; i++) expect((await authn(d.username, `wrong-${i}`, d.id, { peerhost: `10.1.0.${i}` })).result).toBe('deny');
    expect((await authn(d.username, d.secret, d.id, { peerhost: '10.1.1.1' })).result).toBe('deny');
  });

  it('keeps letting in a device whose secret it verified before while someone guesses at its username', async () => {
    const d = await device();
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
    for (let i = 0; i < 5; i++) expect((await authn(d.username, `guess-${i}`, d.id, { peerhost: `10.2.0.${i}` })).result).toBe('deny');
    expect((await authn(d.username, d.secret, d.id, { peerhost: '10.2.1.1' })).result).toBe('allow');
  });

  it('answers a repeated connection from the verification cache, without argon2', async () => {
    const d = await device();
    const hashed = await verifications('verified');
    const cached = await verifications('cached');
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
    expect(await verifications('verified')).toBe(hashed + 1);
    expect(await verifications('cached')).toBe(cached + 2);
  });

  it('keeps a rotated secret valid during its grace period, with expire_at at its end, and refuses it after', async () => {
    const d = await device();
    const next = (await f.ok(admin, ROTATE, { id: d.id, g: 2 })).rotateDeviceCredentials;
    const old = await authn(d.username, d.secret, d.id);
    expect(old.result).toBe('allow');
    expect(old.expire_at).toBeGreaterThan(Date.now() / 1000);
    expect(old.expire_at).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 2);
    expect((await authn(next.username, next.secret, d.id)).result).toBe('allow');
    await new Promise((r) => setTimeout(r, 2100));
    expect((await authn(d.username, d.secret, d.id)).result).toBe('deny');
    expect((await authn(next.username, next.secret, d.id)).expire_at).toBeUndefined();
  });

  it('refuses a revoked credential and a decommissioned device at once, although lookups are cached', async () => {
    const d = await device();
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
    await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: d.credentialId });
    await expect.poll(async () => (await authn(d.username, d.secret, d.id)).result, { timeout: 1000 }).toBe('deny');
    const e = await device();
    expect((await authn(e.username, e.secret, e.id)).result).toBe('allow');
    await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id: e.id });
    await expect.poll(async () => (await authn(e.username, e.secret, e.id)).result, { timeout: 1000 }).toBe('deny');
  });

  it("authenticates a device by its client certificate's SHA-256 fingerprint (EMQX's cert_pem placeholder)", async () => {
    const d = await device();
    const cert = selfSignedCertificate(d.id);
    const pem = cert.der.toString('base64');
    expect((await authn('', '', d.id, { cert_pem: pem })).result).toBe('deny');
    const reg = await f.ok(admin, `mutation($d: ID!, $c: String) { registerDeviceCertificate(deviceId: $d, certificate: $c) { id } }`, {
      d: d.id,
      c: cert.pem,
    });
    await expect.poll(async () => (await authn('', '', d.id, { cert_pem: pem })).result, { timeout: 1000 }).toBe('allow');
    expect((await authn('', '', (await device()).id, { cert_pem: pem })).result).toBe('deny');
    expect((await authn('', '', d.id, { cert_pem: 'not base64!' })).result).toBe('deny');
    await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: reg.registerDeviceCertificate.id });
    await expect.poll(async () => (await authn('', '', d.id, { cert_pem: pem })).result, { timeout: 1000 }).toBe('deny');
  });

  it('rehashes a credential stored as unsalted SHA-256 by an older release with argon2id on its first successful use', async () => {
    const id = (await f.ok(admin, CREATE, { input: { serial: `LEGACY-${++n}`, name: 'Legacy' } })).createDevice.id as string;
    const orgId = admin.orgId;
    const secret = 'legacy-secret-from-an-older-release';
    await f.t.db
      .insertInto('device_credentials')
      .values({ org_id: orgId, device_id: id, username: id, secret_hash: legacySha256(secret), hash_scheme: 'sha256' })
      .execute();
    expect((await authn(id, 'wrong', id)).result).toBe('deny');
    expect((await authn(id, secret, id)).result).toBe('allow');
    const row = async () => f.t.db.selectFrom('device_credentials').selectAll().where('device_id', '=', id).executeTakeFirstOrThrow();
    await expect.poll(async () => (await row()).hash_scheme).toBe('argon2id');
    expect((await row()).secret_hash).toMatch(/^\$argon2id\$/);
  });

  it("gives service accounts their configured passwords and rights, and never a device's client id", async () => {
    const a = await authn('rulr-ingest', INGEST_PASSWORD, 'rulr-ingest-host-1');
    expect(a.result).toBe('allow');
    expect(a.is_superuser).toBe(false);
    expect(a.acl).toContainEqual({ permission: 'allow', action: 'subscribe', topic: 'eq devices/+/telemetry' });
    expect((await authn('rulr-ingest', 'wrong-password-0123', 'rulr-ingest-host-1')).result).toBe('deny');
    expect((await authn('rulr-ingest', INGEST_PASSWORD, '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10')).result).toBe('deny');
    // MQTT_WORKERS_PASSWORD is not set: the account is off
    expect((await authn('rulr-workers', '', 'rulr-workers-1')).result).toBe('deny');
    expect((await authn('rulr-provision', PROVISION_PASSWORD, 'prov-0123456789abcdef')).result).toBe('allow');
    expect((await authn('rulr-provision', PROVISION_PASSWORD, 'short')).result).toBe('deny');
  });

  it("ignores a username that is none of the platform's and denies a malformed request", async () => {
    expect((await authn('dashboard-user', 'x', 'dash-1')).result).toBe('ignore');
    expect((await call('/mqtt/auth', null, { raw: 'not json' })).result).toBe('deny');
    expect((await call('/mqtt/auth', null, { raw: '[1,2]' })).result).toBe('deny');
    expect((await call('/mqtt/auth', { username: 'a', password: 'b' })).result).toBe('deny');
    expect((await call('/mqtt/auth', { username: 1, password: 'b', clientid: 'c' })).result).toBe('deny');
    expect((await call('/mqtt/auth', { username: 'x'.repeat(5000), password: 'b', clientid: 'c' })).result).toBe('deny');
  });

  it('denies every request without the configured bearer token', async () => {
    const d = await device();
    expect((await authn(d.username, d.secret, d.id)).result).toBe('allow');
    expect((await call('/mqtt/auth', { username: d.username, password: d.secret, clientid: d.id }, { token: null })).result).toBe('deny');
    expect((await call('/mqtt/auth', { username: d.username, password: d.secret, clientid: d.id }, { token: 'wrong' })).result).toBe(
      'deny',
    );
  });

  it('understands the requests the shipped EMQX configuration makes, rendered as EMQX renders them', async () => {
    const d = await device();
    const [authnBody, authzBody] = shippedBodies({
      username: d.username,
      password: d.secret,
      clientid: d.id,
      peerhost: '10.0.0.9',
      cert_pem: '',
      topic: `devices/${d.id}/telemetry`,
      action: 'publish',
      qos: '1',
      retain: 'false',
    });
    expect(Object.keys(authnBody ?? {})).toEqual(['username', 'password', 'clientid', 'peerhost', 'cert_pem']);
    expect((await call('/mqtt/auth', authnBody)).result).toBe('allow');
    expect(Object.keys(authzBody ?? {})).toEqual(['username', 'clientid', 'peerhost', 'topic', 'action', 'qos', 'retain']);
    expect((await call('/mqtt/acl', authzBody)).result).toBe('allow');
  });

  it('reads the GET form (query string) too', async () => {
    const d = await device();
    const q = new URLSearchParams({ username: d.username, password: d.secret, clientid: d.id, peerhost: '10.0.0.7' });
    const r = await fetch(`http://127.0.0.1:${ingest.port}/mqtt/auth?${q}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(((await r.json()) as { result: string }).result).toBe('allow');
  });
});

describe('EMQX HTTP authorization on the ingest role', () => {
  it("allows a device its own topics and denies another's, wildcards and command spoofing", async () => {
    const d = await device();
    const other = await device();
    expect((await authz(d.username, d.id, 'publish', `devices/${d.id}/telemetry`)).result).toBe('allow');
    expect((await authz(d.username, d.id, 'publish', `devices/${d.id}/commands/reply`)).result).toBe('allow');
    expect((await authz(d.username, d.id, 'subscribe', `devices/${d.id}/commands`)).result).toBe('allow');
    expect((await authz(d.username, d.id, 'publish', `devices/${other.id}/telemetry`)).result).toBe('deny');
    expect((await authz(d.username, d.id, 'subscribe', `devices/${other.id}/commands`)).result).toBe('deny');
    expect((await authz(d.username, d.id, 'subscribe', 'devices/+/commands')).result).toBe('deny');
    expect((await authz(d.username, d.id, 'subscribe', '#')).result).toBe('deny');
    expect((await authz(d.username, d.id, 'publish', `devices/${d.id}/commands`)).result).toBe('deny');
    expect((await authz(d.username, d.id, 'publish', `gateways/${d.id}/telemetry`)).result).toBe('deny');
  });

  it("denies a revoked credential, ignores clients that are not the platform's, and denies a malformed request", async () => {
    const d = await device();
    await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: d.credentialId });
    await expect
      .poll(async () => (await authz(d.username, d.id, 'publish', `devices/${d.id}/telemetry`)).result, { timeout: 1000 })
      .toBe('deny');
    expect((await authz('dashboard-user', 'dash-1', 'subscribe', '$SYS/#')).result).toBe('ignore');
    expect((await call('/mqtt/acl', { username: d.username, clientid: d.id, action: 'all', topic: 't' })).result).toBe('deny');
    expect((await call('/mqtt/acl', { username: d.username, clientid: d.id, action: 'publish' })).result).toBe('deny');
    expect((await call('/mqtt/acl', null, { raw: '{' })).result).toBe('deny');
  });

  it('lets ingest subscribe as EMQX presents a shared subscription (its topic filter), and nothing it does not consume', async () => {
    expect((await authz('rulr-ingest', 'rulr-ingest-1', 'subscribe', 'devices/+/telemetry')).result).toBe('allow');
    expect((await authz('rulr-ingest', 'rulr-ingest-1', 'subscribe', 'provision/+/request')).result).toBe('allow');
    expect((await authz('rulr-ingest', 'rulr-ingest-1', 'subscribe', '#')).result).toBe('deny');
    expect((await authz('rulr-ingest', 'rulr-ingest-1', 'publish', 'devices/0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10/commands')).result).toBe(
      'deny',
    );
    expect((await authz('rulr-workers', 'rulr-workers-1', 'publish', 'devices/0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10/commands')).result).toBe(
      'deny',
    );
  });
});
