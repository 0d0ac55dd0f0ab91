import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { IngestHandle } from '../ingest/index.js';
import type { Broker } from '../ingest/testing/broker.js';
import { encodeProvisionRequest, provisionRequestTopic, provisionResponseTopic } from '../lib/contracts/provisioning.js';
import type { Identity } from '../lib/identity.js';
import type { RoleContext } from '../lib/role.js';
import type { DevicesFixture } from './devices-fixtures.js';
import { type IngestStack, ingestStack } from './support/ingest-stack.js';

// Provisioning by a profile's key and secret against the real ingest role (HTTP and MQTT), with
// profiles set up through the devices subgraph.

let stack: IngestStack;
let f: DevicesFixture;
let broker: Broker;
let ctx: RoleContext;
let ingest: IngestHandle;
let admin: Identity;
let n = 0;

const SET = `mutation($p: ID!, $m: ProvisionMode!) { setProfileProvisioning(profileId: $p, mode: $m) { key secret } }`;

async function profile(mode: 'PRE_REGISTERED' | 'CREATE_NEW') {
  const id = (await f.ok(admin, `mutation { createDeviceProfile(input: { name: "Prov ${++n}" }) { id } }`)).createDeviceProfile
    .id as string;
  const s = (await f.ok(admin, SET, { p: id, m: mode })).setProfileProvisioning as { key: string; secret: string };
  return { id, key: s.key, secret: s.secret };
}
const register = async (serial: string, profileId: string) =>
  (await f.ok(admin, `mutation($i: CreateDeviceInput!) { createDevice(input: $i) { id } }`, { i: { serial, name: serial, profileId } }))
    .createDevice.id as string;

async function claim(body: unknown, raw?: string) {
  const r = await fetch(`http://127.0.0.1:${ingest.port}/provision`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: raw ?? JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json()) as Record<string, string> };
}
const serial = () => `PROV-${randomBytes(4).toString('hex')}`;
const credentialsOf = (deviceId: string) => f.t.db.selectFrom('device_credentials').selectAll().where('device_id', '=', deviceId).execute();
const authn = async (username: string, password: string, clientid: string) =>
  (
    (await (
      await fetch(`http://127.0.0.1:${ingest.port}/mqtt/auth`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password, clientid, peerhost: '', cert_pem: '' }),
      })
    ).json()) as { result: string }
  ).result;

beforeAll(async () => {
  stack = await ingestStack({ PROVISION_RATE_LIMIT: '8' });
  ({ f, broker, ctx, ingest } = stack);
  admin = f.as(await f.org(), 'admin');
});

afterAll(() => stack?.close());

describe('provisioning by profile key and secret', () => {
  // every test starts a fresh rate-limit window (they all claim from 127.0.0.1)
  beforeEach(async () => {
    const keys = await ctx.redis.keys(`${ctx.config.REDIS_PREFIX}provision:*`);
    if (keys.length) await ctx.redis.del(...keys);
  });

  it('lets a pre-registered device claim its credentials once over HTTP, credentials the broker accepts', async () => {
    const p = await profile('PRE_REGISTERED');
    const s = serial();
    const id = await register(s, p.id);
    const a = await claim({ serial: s, provisionKey: p.key, provisionSecret: p.secret });
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({
      status: 'SUCCESS',
      deviceId: id,
      clientId: id,
      username: expect.stringMatching(new RegExp(`^${id}\\.`)),
    });
    expect(await authn(a.body.username as string, a.body.secret as string, id)).toBe('allow');
    const again = await claim({ serial: s, provisionKey: p.key, provisionSecret: p.secret });
    expect(again).toEqual({ status: 403, body: { status: 'FAILURE', error: 'already provisioned' } });
    expect(await credentialsOf(id)).toHaveLength(1);
    const device = await f.t.db.selectFrom('devices').select('provisioned_at').where('id', '=', id).executeTakeFirstOrThrow();
    expect(device.provisioned_at).not.toBeNull();
    const audit = await f.t.db.selectFrom('audit_logs').select(['action', 'actor', 'after']).where('org_id', '=', admin.orgId).execute();
    const mine = audit.filter((x) => x.actor === `provision:${p.id}`);
    expect(mine.map((x) => x.action).sort()).toEqual(['device.provision_refused', 'device.provisioned']);
    expect(JSON.stringify(audit)).not.toContain(a.body.secret);
  });

  it('refuses an unknown serial to a PRE_REGISTERED profile and creates the device for a CREATE_NEW one', async () => {
    const pre = await profile('PRE_REGISTERED');
    expect((await claim({ serial: serial(), provisionKey: pre.key, provisionSecret: pre.secret })).body).toEqual({
      status: 'FAILURE',
      error: 'refused',
    });
    const open = await profile('CREATE_NEW');
    const s = serial();
    const a = await claim({ serial: s, provisionKey: open.key, provisionSecret: open.secret, name: 'Lamp on Main St' });
    expect(a.status).toBe(200);
    const row = await f.t.db
      .selectFrom('devices')
      .selectAll()
      .where('id', '=', a.body.deviceId as string)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ org_id: admin.orgId, serial: s, name: 'Lamp on Main St', profile_id: open.id });
    // a registered device of a CREATE_NEW profile claims as well
    const t = serial();
    await register(t, open.id);
    expect((await claim({ serial: t, provisionKey: open.key, provisionSecret: open.secret })).status).toBe(200);
  });

  it('refuses a wrong secret, an unknown key, a disabled profile, and serials of another profile or decommissioned', async () => {
    const p = await profile('CREATE_NEW');
    const other = await profile('CREATE_NEW');
    const s = serial();
    await register(s, other.id);
    const gone = serial();
    const goneId = await register(gone, p.id);
    await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id: goneId });
    const refused = { status: 403, body: { status: 'FAILURE', error: 'refused' } };
    expect(await claim({ serial: serial(), provisionKey: p.key, provisionSecret: `${p.secret}x` })).toEqual(refused);
    expect(await claim({ serial: serial(), provisionKey: 'pk-nobody-has-this-key', provisionSecret: p.secret })).toEqual(refused);
    expect(await claim({ serial: s, provisionKey: p.key, provisionSecret: p.secret })).toEqual(refused);
    expect(await claim({ serial: gone, provisionKey: p.key, provisionSecret: p.secret })).toEqual(refused);
    await f.ok(admin, SET, { p: p.id, m: 'DISABLED' });
    expect(await claim({ serial: serial(), provisionKey: p.key, provisionSecret: p.secret })).toEqual(refused);
    const reasons = (
      await f.t.db
        .selectFrom('audit_logs')
        .select('after')
        .where('action', '=', 'device.provision_refused')
        .where('entity_id', '=', p.id)
        .execute()
    ).map((r) => (r.after as { reason: string }).reason);
    expect(reasons.sort()).toEqual(['decommissioned', 'other_profile', 'wrong_secret']);
  });

  it('gives exactly one set of credentials to concurrent claims of one serial, registered or new', async () => {
    const p = await profile('CREATE_NEW');
    const registered = serial();
    const id = await register(registered, p.id);
    const fresh = serial();
    for (const s of [registered, fresh]) {
      const answers = await Promise.all(
        Array.from({ length: 4 }, () => claim({ serial: s, provisionKey: p.key, provisionSecret: p.secret })),
      );
      expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
      expect(answers.filter((a) => a.body.error === 'already provisioned')).toHaveLength(3);
    }
    expect(await credentialsOf(id)).toHaveLength(1);
    const created = await f.t.db.selectFrom('devices').select('id').where('serial', '=', fresh).execute();
    expect(created).toHaveLength(1);
    expect(await credentialsOf(created[0]?.id as string)).toHaveLength(1);
  });

  it('limits claims per source and per key before looking at the secret', async () => {
    const p = await profile('CREATE_NEW');
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await claim({ serial: serial(), provisionKey: p.key, provisionSecret: 'wrong' })).status);
    expect(statuses.slice(0, 8).every((s) => s === 403)).toBe(true);
    expect(statuses.slice(8)).toEqual([429, 429]);
    expect((await claim({ serial: serial(), provisionKey: p.key, provisionSecret: p.secret })).body).toEqual({
      status: 'FAILURE',
      error: 'rate limited',
    });
  });

  it('answers a malformed request with its reason', async () => {
    expect(await claim(null, 'not json')).toEqual({ status: 400, body: { status: 'FAILURE', error: 'not JSON' } });
    expect((await claim({ serial: 'x', provisionKey: 'k' })).body.error).toMatch(/^provisionSecret/);
  });

  it('claims over MQTT, answering on the client id of the request only', async () => {
    const p = await profile('CREATE_NEW');
    const clientId = `prov-${randomBytes(8).toString('hex')}`;
    const c = await mqtt.connectAsync(broker.url, { clientId, protocolVersion: 5, reconnectPeriod: 0 });
    try {
      const answers: Record<string, string>[] = [];
      c.on('message', (_t, m) => answers.push(JSON.parse(m.toString())));
      await c.subscribeAsync(provisionResponseTopic(clientId), { qos: 1 });
      const s = serial();
      await c.publishAsync(
        provisionRequestTopic(clientId),
        encodeProvisionRequest({ serial: s, provisionKey: p.key, provisionSecret: p.secret }),
        {
          qos: 1,
        },
      );
      await expect.poll(() => answers.length, { timeout: 10_000 }).toBe(1);
      expect(answers[0]).toMatchObject({ status: 'SUCCESS', clientId: answers[0]?.deviceId });
      expect(await authn(answers[0]?.username as string, answers[0]?.secret as string, answers[0]?.deviceId as string)).toBe('allow');
      await c.publishAsync(provisionRequestTopic(clientId), '{"serial": 1}', { qos: 1 });
      await expect.poll(() => answers.length, { timeout: 10_000 }).toBe(2);
      expect(answers[1]).toEqual({ status: 'FAILURE', error: 'serial must be a string of 1 to 128 characters' });
    } finally {
      await c.endAsync();
    }
  });
});
