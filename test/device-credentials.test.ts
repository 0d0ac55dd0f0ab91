import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handoffKey, openHandoff } from '../lib/contracts/broker-handoff.js';
import { deviceChangesChannel, parseDeviceChange } from '../lib/contracts/device-changes.js';
import { legacySha256, verifyDeviceSecret } from '../lib/device-credentials.js';
import type { Identity } from '../lib/identity.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { codes, type DevicesFixture, devicesFixture, subgraphFixture } from './devices-fixtures.js';
import { selfSignedCertificate } from './support/certs.js';

const CREATE_DEVICE = `mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }`;
const ROTATE = `mutation($id: ID!, $g: Int) { rotateDeviceCredentials(id: $id, graceSeconds: $g) { deviceId credentialId clientId username secret } }`;
const CREDENTIALS = `query($id: ID!) { device(id: $id) { credentials { id kind username fingerprint expiresAt revokedAt valid } } }`;
const CERT = `mutation($d: ID!, $f: String, $c: String) { registerDeviceCertificate(deviceId: $d, fingerprint: $f, certificate: $c) { id kind fingerprint valid } }`;
const PROVISIONING = `mutation($p: ID!, $m: ProvisionMode!, $n: Boolean) { setProfileProvisioning(profileId: $p, mode: $m, newSecret: $n) { mode key secret } }`;

describe('device credentials in the devices subgraph', () => {
  let f: DevicesFixture;
  let orgId: string;
  let admin: Identity;
  let n = 0;
  const newDevice = async (who = admin) =>
    (await f.ok(who, CREATE_DEVICE, { input: { serial: `CRED-${++n}`, name: `Device ${n}` } })).createDevice.id as string;
  const rows = (deviceId: string) =>
    f.t.db.selectFrom('device_credentials').selectAll().where('device_id', '=', deviceId).orderBy('created_at').execute();

  beforeAll(async () => {
    f = await devicesFixture();
    orgId = await f.org();
    admin = f.as(orgId, 'admin');
  });
  afterAll(() => f.close());

  it('stores a new secret as a salted argon2id hash, never the secret or its unsalted SHA-256', async () => {
    const id = await newDevice();
    const a = (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials;
    const [row] = await rows(id);
    expect(row?.hash_scheme).toBe('argon2id');
    expect(row?.secret_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(row?.secret_hash).not.toContain(a.secret);
    expect(row?.secret_hash).not.toBe(legacySha256(a.secret));
    expect(await verifyDeviceSecret('argon2id', row?.secret_hash as string, a.secret)).toBe(true);
    expect(await verifyDeviceSecret('argon2id', row?.secret_hash as string, `${a.secret}x`)).toBe(false);
    expect(row?.broker_handoff).toBeNull();
  });

  it('keeps the previous secret valid for the grace period and never lengthens a grace already running', async () => {
    const id = await newDevice();
    const first = (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials;
    const before = Date.now();
    const second = (await f.ok(admin, ROTATE, { id, g: 60 })).rotateDeviceCredentials;
    const list = (await f.ok(admin, CREDENTIALS, { id })).device.credentials;
    expect(list.map((c: { username: string }) => c.username)).toEqual([second.username, first.username]);
    expect(list.map((c: { valid: boolean }) => c.valid)).toEqual([true, true]);
    const expires = new Date(list[1].expiresAt).getTime();
    expect(expires).toBeGreaterThanOrEqual(before + 59_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 61_000);
    await f.ok(admin, ROTATE, { id, g: 3600 });
    const again = (await f.ok(admin, CREDENTIALS, { id })).device.credentials;
    expect(new Date(again[2].expiresAt).getTime()).toBe(expires);
    expect(new Date(again[1].expiresAt).getTime()).toBeGreaterThan(Date.now() + 3_500_000);
  });

  it('revokes the earlier secrets at once with a grace of 0, and one credential with revokeDeviceCredential', async () => {
    const id = await newDevice();
    const a = (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials;
    const b = (await f.ok(admin, ROTATE, { id, g: 0 })).rotateDeviceCredentials;
    let list = (await f.ok(admin, CREDENTIALS, { id })).device.credentials;
    expect(list.map((c: { valid: boolean; revokedAt: string | null }) => [c.valid, c.revokedAt !== null])).toEqual([
      [true, false],
      [false, true],
    ]);
    const r = await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id valid revokedAt } }`, { id: b.credentialId });
    expect(r.revokeDeviceCredential).toMatchObject({ id: b.credentialId, valid: false });
    list = (await f.ok(admin, CREDENTIALS, { id })).device.credentials;
    expect(list.every((c: { valid: boolean }) => !c.valid)).toBe(true);
    const audit = await f.t.db
      .selectFrom('audit_logs')
      .select(['action', 'after'])
      .where('entity_id', '=', id)
      .where('action', 'like', 'device.%')
      .orderBy('at')
      .execute();
    expect(audit.map((x) => x.action)).toEqual([
      'device.create',
      'device.rotate_credentials',
      'device.rotate_credentials',
      'device.revoke_credential',
    ]);
    expect(JSON.stringify(audit)).not.toContain(a.secret);
    expect(JSON.stringify(audit)).not.toContain(b.secret);
    const unknown = await f.run(admin, `mutation { revokeDeviceCredential(id: "00000000-0000-4000-8000-000000000000") { id } }`);
    expect(codes(unknown)).toEqual(['NOT_FOUND']);
  });

  it('registers a client certificate by fingerprint or PEM and refuses a duplicate or a malformed one', async () => {
    const id = await newDevice();
    const cert = selfSignedCertificate('device');
    const colons = cert.fingerprint.toUpperCase().match(/../g)?.join(':');
    const r = await f.ok(admin, CERT, { d: id, f: colons });
    expect(r.registerDeviceCertificate).toMatchObject({ kind: 'CERTIFICATE', fingerprint: cert.fingerprint, valid: true });
    expect(codes(await f.run(admin, CERT, { d: await newDevice(), c: cert.pem }))).toEqual(['CONFLICT']);
    const other = selfSignedCertificate('other');
    expect((await f.ok(admin, CERT, { d: id, c: other.pem })).registerDeviceCertificate.fingerprint).toBe(other.fingerprint);
    for (const v of [
      { f: 'abc' },
      { c: '-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----' },
      {},
      { f: cert.fingerprint, c: cert.pem },
    ]) {
      expect(codes(await f.run(admin, CERT, { d: id, ...v })), JSON.stringify(v)).toEqual(['BAD_USER_INPUT']);
    }
  });

  it('refuses credentials for a decommissioned device, whose decommissioning revoked every credential', async () => {
    const id = await newDevice();
    await f.ok(admin, ROTATE, { id });
    await f.ok(admin, CERT, { d: id, f: selfSignedCertificate('gone').fingerprint });
    await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id });
    expect((await rows(id)).every((r) => r.revoked_at !== null)).toBe(true);
    expect(codes(await f.run(admin, ROTATE, { id }))).toEqual(['CONFLICT']);
    expect(codes(await f.run(admin, CERT, { d: id, f: selfSignedCertificate('x').fingerprint }))).toEqual(['CONFLICT']);
  });

  it('publishes a device-change notice after every credential change', async () => {
    const id = await newDevice();
    const sub = f.ctx.redis.duplicate();
    const notices: unknown[] = [];
    sub.on('message', (_c, m: string) => notices.push(parseDeviceChange(m)));
    await sub.subscribe(deviceChangesChannel(f.ctx.config.REDIS_PREFIX));
    try {
      const a = (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials;
      await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: a.credentialId });
      await f.ok(admin, CERT, { d: id, f: selfSignedCertificate('n').fingerprint });
      await expect.poll(() => notices.length).toBe(3);
      expect(notices).toEqual(Array.from({ length: 3 }, () => ({ orgId, kind: 'credentials-rotated', deviceIds: [id] })));
    } finally {
      await sub.quit();
    }
  });

  it('lets operators manage credentials, viewers and read-only keys nothing, and only admins set provisioning', async () => {
    const id = await newDevice();
    const profileId = (await f.ok(admin, `mutation { createDeviceProfile(input: { name: "Roles" }) { id } }`)).createDeviceProfile.id;
    const operator = f.as(orgId, 'operator');
    const viewer = f.as(orgId, 'viewer');
    const reader = f.as(orgId, 'admin', 'apikey', ['devices:read']);
    expect((await f.ok(operator, ROTATE, { id })).rotateDeviceCredentials.deviceId).toBe(id);
    for (const who of [viewer, reader]) {
      expect(codes(await f.run(who, ROTATE, { id }))).toEqual(['FORBIDDEN']);
      expect(codes(await f.run(who, CERT, { d: id, f: 'a'.repeat(64) }))).toEqual(['FORBIDDEN']);
      const list = await f.run(who, CREDENTIALS, { id });
      expect(codes(list)).toEqual(['FORBIDDEN']);
      expect(list.data).toEqual({ device: { credentials: null } });
    }
    expect(codes(await f.run(operator, PROVISIONING, { p: profileId, m: 'CREATE_NEW' }))).toEqual(['FORBIDDEN']);
  });

  it("sets a profile's provisioning, returning the secret only when one is made and storing only its hash", async () => {
    const profileId = (await f.ok(admin, `mutation { createDeviceProfile(input: { name: "Provisioned" }) { id } }`)).createDeviceProfile.id;
    const first = (await f.ok(admin, PROVISIONING, { p: profileId, m: 'PRE_REGISTERED' })).setProfileProvisioning;
    expect(first).toMatchObject({
      mode: 'PRE_REGISTERED',
      key: expect.stringMatching(/^pk-[A-Za-z0-9_-]{22}$/),
      secret: expect.any(String),
    });
    const again = (await f.ok(admin, PROVISIONING, { p: profileId, m: 'CREATE_NEW' })).setProfileProvisioning;
    expect(again).toEqual({ mode: 'CREATE_NEW', key: first.key, secret: null });
    const rotated = (await f.ok(admin, PROVISIONING, { p: profileId, m: 'CREATE_NEW', n: true })).setProfileProvisioning;
    expect(rotated.secret).not.toBe(first.secret);
    const row = await f.t.db.selectFrom('device_profiles').selectAll().where('id', '=', profileId).executeTakeFirstOrThrow();
    expect(await verifyDeviceSecret('argon2id', row.provision_secret_hash as string, rotated.secret)).toBe(true);
    await f.ok(admin, PROVISIONING, { p: profileId, m: 'DISABLED' });
    const read = await f.ok(admin, `query($p: ID!) { deviceProfile(id: $p) { provisioning { mode key } } }`, { p: profileId });
    expect(read.deviceProfile.provisioning).toEqual({ mode: 'DISABLED', key: first.key });
  });

  it("answers NOT_FOUND to every credential mutation on another organization's ids and changes nothing", async () => {
    const otherOrg = await f.org();
    const other = f.as(otherOrg, 'admin');
    const theirDevice = await newDevice(other);
    const theirs = (await f.ok(other, ROTATE, { id: theirDevice })).rotateDeviceCredentials;
    const theirProfile = (await f.ok(other, `mutation { createDeviceProfile(input: { name: "Theirs" }) { id } }`)).createDeviceProfile.id;
    const before = await rows(theirDevice);
    const attempts: [string, Record<string, unknown>][] = [
      [ROTATE, { id: theirDevice }],
      [ROTATE, { id: theirDevice, g: 0 }],
      [`mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: theirs.credentialId }],
      [CERT, { d: theirDevice, f: 'b'.repeat(64) }],
      [PROVISIONING, { p: theirProfile, m: 'CREATE_NEW' }],
    ];
    for (const [query, variables] of attempts) expect(codes(await f.run(admin, query, variables)), query).toEqual(['NOT_FOUND']);
    expect(await rows(theirDevice)).toEqual(before);
    expect((await f.ok(admin, CREDENTIALS, { id: theirDevice })).device).toBeNull();
    const profile = await f.t.db
      .selectFrom('device_profiles')
      .select('provision_mode')
      .where('id', '=', theirProfile)
      .executeTakeFirstOrThrow();
    expect(profile.provision_mode).toBe('disabled');
  });
});

describe('device credentials with Mosquitto dynamic security on', () => {
  let f: DevicesFixture;
  beforeAll(async () => {
    f = await subgraphFixture((ctx) => {
      Object.assign(ctx.config, { DYNSEC_ENABLED: true, DYNSEC_ADMIN_PASSWORD: 'x' });
      return createDevicesSubgraph(ctx);
    });
  });
  afterAll(() => f.close());

  it('seals each new secret for the broker sync, bound to its username, and drops the seal on revocation', async () => {
    const admin = f.as(await f.org(), 'admin');
    const id = (await f.ok(admin, CREATE_DEVICE, { input: { serial: 'SEAL-1', name: 'Sealed' } })).createDevice.id;
    const a = (await f.ok(admin, ROTATE, { id })).rotateDeviceCredentials;
    const row = await f.t.db.selectFrom('device_credentials').selectAll().where('id', '=', a.credentialId).executeTakeFirstOrThrow();
    const key = handoffKey(f.ctx.config.RULR_SECRET);
    expect(openHandoff(key, a.username, row.broker_handoff as Buffer)).toBe(a.secret);
    expect(() => openHandoff(key, `${id}.00000000`, row.broker_handoff as Buffer)).toThrow(/does not open/);
    await f.ok(admin, `mutation($id: ID!) { revokeDeviceCredential(id: $id) { id } }`, { id: a.credentialId });
    const after = await f.t.db
      .selectFrom('device_credentials')
      .select('broker_handoff')
      .where('id', '=', a.credentialId)
      .executeTakeFirstOrThrow();
    expect(after.broker_handoff).toBeNull();
  });
});
