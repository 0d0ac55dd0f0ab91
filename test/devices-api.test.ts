import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenVerifier } from '../lib/auth.js';
import type { Identity } from '../lib/identity.js';
import { ANONYMOUS } from '../lib/identity.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';

const CREATE_SITE = `mutation($input: CreateSiteInput!) { createSite(input: $input) { id name path { name } parent { id } } }`;
const CREATE_PROFILE = `mutation($input: CreateDeviceProfileInput!) { createDeviceProfile(input: $input) { id name isGateway metrics { name unit type min max counter } } }`;
const CREATE_DEVICE = `mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id serial name location { lat lng } site { id name } profile { id name } attributes isGateway parent { id } } }`;
const DEVICES = `query($first: Int, $after: String, $filter: DeviceFilter) {
  devices(first: $first, after: $after, filter: $filter) { edges { cursor node { id serial } } pageInfo { hasNextPage endCursor } }
}`;

describe('devices subgraph', () => {
  let f: DevicesFixture;
  let orgId: string;
  let admin: Identity;
  let city: string;
  let district: string;
  let street: string;
  let otherSite: string;
  let light: string;
  let gateway: string;

  const serials = async (filter: Record<string, unknown>) => {
    const d = await f.ok(admin, DEVICES, { first: 200, filter });
    return d.devices.edges.map((e: { node: { serial: string } }) => e.node.serial).sort();
  };

  beforeAll(async () => {
    f = await devicesFixture();
    orgId = await f.org();
    admin = f.as(orgId, 'admin');
    city = (await f.ok(admin, CREATE_SITE, { input: { name: 'City' } })).createSite.id;
    district = (await f.ok(admin, CREATE_SITE, { input: { name: 'North', parentId: city } })).createSite.id;
    street = (await f.ok(admin, CREATE_SITE, { input: { name: 'Main St', parentId: district } })).createSite.id;
    otherSite = (await f.ok(admin, CREATE_SITE, { input: { name: 'Elsewhere' } })).createSite.id;
    light = (
      await f.ok(admin, CREATE_PROFILE, {
        input: {
          name: 'Light',
          metrics: [
            { name: 'power', unit: 'W', type: 'NUMBER', min: 0, max: 500 },
            { name: 'energy', unit: 'kWh', type: 'NUMBER', counter: true },
            { name: 'lampState', type: 'BOOLEAN' },
          ],
        },
      })
    ).createDeviceProfile.id;
    gateway = (await f.ok(admin, CREATE_PROFILE, { input: { name: 'Concentrator', isGateway: true, autoCreateChildren: true } }))
      .createDeviceProfile.id;
    // Amsterdam centre, a device 500 m east, one in Rotterdam, one without location.
    const devices = [
      { serial: 'A-1', name: 'Dam square', siteId: street, profileId: light, location: { lat: 52.3731, lng: 4.8926 } },
      { serial: 'A-2', name: 'East of Dam', siteId: district, profileId: light, location: { lat: 52.3731, lng: 4.9 } },
      { serial: 'R-1', name: 'Rotterdam lamp', siteId: otherSite, profileId: light, location: { lat: 51.9225, lng: 4.4792 } },
      { serial: 'GW-1', name: 'Gateway north', siteId: city, profileId: gateway },
    ];
    for (const input of devices) await f.ok(admin, CREATE_DEVICE, { input });
  });
  afterAll(() => f.close());

  it('creates a site tree whose path runs from the root to the site', async () => {
    const d = await f.ok(admin, `query($id: ID!) { site(id: $id) { name path { name } parent { name } children { name } deviceCount } }`, {
      id: district,
    });
    expect(d.site).toEqual({
      name: 'North',
      path: [{ name: 'City' }, { name: 'North' }],
      parent: { name: 'City' },
      children: [{ name: 'Main St' }],
      deviceCount: 2,
    });
  });

  it('stores profile metrics as ingest reads them and returns them typed', async () => {
    const d = await f.ok(admin, `query($id: ID!) { deviceProfile(id: $id) { metrics { name unit type min max counter } } }`, { id: light });
    expect(d.deviceProfile.metrics).toEqual([
      { name: 'power', unit: 'W', type: 'NUMBER', min: 0, max: 500, counter: false },
      { name: 'energy', unit: 'kWh', type: 'NUMBER', min: null, max: null, counter: true },
      { name: 'lampState', unit: null, type: 'BOOLEAN', min: null, max: null, counter: false },
    ]);
    const raw = await f.t.db.selectFrom('device_profiles').select('metrics').where('id', '=', light).executeTakeFirstOrThrow();
    expect(raw.metrics).toEqual([
      { name: 'power', type: 'number', unit: 'W', min: 0, max: 500 },
      { name: 'energy', type: 'number', unit: 'kWh', counter: true },
      { name: 'lampState', type: 'boolean' },
    ]);
  });

  it('returns a created device with its site, profile, location and attributes', async () => {
    const d = await f.ok(admin, CREATE_DEVICE, {
      input: {
        serial: 'X-1',
        name: 'With attrs',
        siteId: street,
        profileId: gateway,
        location: { lat: 10, lng: 20 },
        attributes: { pole: 7 },
      },
    });
    expect(d.createDevice).toMatchObject({
      serial: 'X-1',
      location: { lat: 10, lng: 20 },
      site: { id: street, name: 'Main St' },
      profile: { id: gateway, name: 'Concentrator' },
      attributes: { pole: 7 },
      isGateway: true,
      parent: null,
    });
    const child = await f.ok(admin, CREATE_DEVICE, { input: { serial: 'X-1.1', name: 'Child', parentId: d.createDevice.id } });
    const p = await f.ok(admin, `query($id: ID!) { device(id: $id) { children { serial parent { serial } } } }`, { id: d.createDevice.id });
    expect(p.device.children).toEqual([{ serial: 'X-1.1', parent: { serial: 'X-1' } }]);
    await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id: child.createDevice.id });
    await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id: d.createDevice.id });
  });

  it('filters devices by site subtree, profile, search, bounding box and distance', async () => {
    expect(await serials({ siteId: city })).toEqual(['A-1', 'A-2', 'GW-1']);
    expect(await serials({ siteId: district })).toEqual(['A-1', 'A-2']);
    expect(await serials({ siteId: street })).toEqual(['A-1']);
    expect(await serials({ profileId: gateway })).toEqual(['GW-1']);
    expect(await serials({ search: 'rotter' })).toEqual(['R-1']);
    expect(await serials({ search: 'a-' })).toEqual(['A-1', 'A-2']);
    expect(await serials({ search: '%' })).toEqual([]);
    expect(await serials({ bbox: { minLat: 52.3, minLng: 4.85, maxLat: 52.4, maxLng: 4.895 } })).toEqual(['A-1']);
    expect(await serials({ bbox: { minLat: 51, minLng: 4, maxLat: 53, maxLng: 5 } })).toEqual(['A-1', 'A-2', 'R-1']);
    expect(await serials({ near: { lat: 52.3731, lng: 4.8926, radiusMeters: 100 } })).toEqual(['A-1']);
    expect(await serials({ near: { lat: 52.3731, lng: 4.8926, radiusMeters: 1000 } })).toEqual(['A-1', 'A-2']);
    expect(await serials({ near: { lat: 52.3731, lng: 4.8926, radiusMeters: 100_000 } })).toEqual(['A-1', 'A-2', 'R-1']);
    expect(await serials({ siteId: district, profileId: light, search: 'east' })).toEqual(['A-2']);
    // across the antimeridian (minLng > maxLng), then the ordinary box again: two shapes of one query
    expect(await serials({ bbox: { minLat: 51, minLng: 4.895, maxLat: 53, maxLng: 4.48 } })).toEqual(['A-2', 'R-1']);
    expect(await serials({ bbox: { minLat: 52.3, minLng: 4.85, maxLat: 52.4, maxLng: 4.895 } })).toEqual(['A-1']);
  });

  it('answers other fields of a device whole when a page of the same operation read only some columns', async () => {
    const d = await f.ok(admin, `{ devices(first: 200) { edges { node { id serial } } } }`);
    const id = d.devices.edges.find((e: { node: { serial: string } }) => e.node.serial === 'A-1').node.id;
    const both = await f.ok(
      admin,
      `query($id: ID!) {
      devices(first: 200) { edges { node { id } } }
      device(id: $id) { serial name attributes location { lat lng } site { name } profile { name } createdAt }
    }`,
      { id },
    );
    expect(both.devices.edges).toHaveLength(4);
    expect(both.device).toMatchObject({ serial: 'A-1', name: 'Dam square', attributes: {}, location: { lat: 52.3731, lng: 4.8926 } });
    expect(both.device.site.name).toBe('Main St');
    expect(both.device.profile.name).toBe('Light');
    expect(Number.isNaN(Date.parse(both.device.createdAt))).toBe(false);
  });

  it('hides decommissioned devices unless asked to include them', async () => {
    expect(await serials({ search: 'X-1' })).toEqual([]);
    expect(await serials({ search: 'X-1', includeDecommissioned: true })).toEqual(['X-1', 'X-1.1']);
  });

  it('counts matching devices only when totalCount is selected', async () => {
    f.t.queries.length = 0;
    await f.ok(admin, `{ devices(first: 1) { edges { node { id } } } }`);
    expect(f.t.queries.some((q) => /count\(/i.test(q))).toBe(false);
    const d = await f.ok(admin, `{ devices(first: 1, filter: { siteId: "${city}" }) { totalCount pageInfo { hasNextPage } } }`);
    expect(d.devices).toEqual({ totalCount: 3, pageInfo: { hasNextPage: true } });
  });

  it('updates, moves and decommissions a device, writing an audit row for each', async () => {
    const id = (
      await f.ok(admin, CREATE_DEVICE, { input: { serial: 'U-1', name: 'To update', siteId: street, location: { lat: 1, lng: 2 } } })
    ).createDevice.id;
    const u = await f.ok(
      admin,
      `mutation($id: ID!, $input: UpdateDeviceInput!) { updateDevice(id: $id, input: $input) { name location { lat } site { id } attributes } }`,
      {
        id,
        input: { name: 'Renamed', location: null, attributes: { a: 1 } },
      },
    );
    expect(u.updateDevice).toEqual({ name: 'Renamed', location: null, site: { id: street }, attributes: { a: 1 } });
    const m = await f.ok(admin, `mutation($id: ID!, $s: ID!) { moveDevice(id: $id, siteId: $s) { site { id } } }`, { id, s: otherSite });
    expect(m.moveDevice.site.id).toBe(otherSite);
    const dc = await f.ok(admin, `mutation($id: ID!) { decommissionDevice(id: $id) { decommissionedAt } }`, { id });
    expect(typeof dc.decommissionDevice.decommissionedAt).toBe('string');
    const audit = await f.t.db
      .selectFrom('audit_logs')
      .select(['action', 'actor', 'before', 'after'])
      .where('entity_id', '=', id)
      .orderBy('at')
      .execute();
    expect(audit.map((a) => a.action)).toEqual(['device.create', 'device.update', 'device.move', 'device.decommission']);
    expect(audit[1]?.actor).toBe(`user:${admin.subject}`);
    expect(audit[1]?.before).toMatchObject({ name: 'To update' });
    expect(audit[1]?.after).toMatchObject({ name: 'Renamed' });
  });

  it("updates a profile's given fields, keeps the others, stores metrics as ingest reads them and audits the change", async () => {
    const UPDATE = `mutation($id: ID!, $input: UpdateDeviceProfileInput!) {
      updateDeviceProfile(id: $id, input: $input) { name description silenceTimeoutSeconds isGateway metrics { name type max } } }`;
    const id = (await f.ok(admin, CREATE_PROFILE, { input: { name: 'Meter', metrics: [{ name: 'power', type: 'NUMBER' }] } }))
      .createDeviceProfile.id;
    const u = await f.ok(admin, UPDATE, {
      id,
      input: {
        description: 'kWh meter',
        metrics: [{ name: 'power', type: 'NUMBER', max: 500 }],
        silenceTimeoutSeconds: 60,
        isGateway: null,
      },
    });
    expect(u.updateDeviceProfile).toEqual({
      name: 'Meter',
      description: 'kWh meter',
      silenceTimeoutSeconds: 60,
      isGateway: false,
      metrics: [{ name: 'power', type: 'NUMBER', max: 500 }],
    });
    const raw = await f.t.db.selectFrom('device_profiles').select('metrics').where('id', '=', id).executeTakeFirstOrThrow();
    expect(raw.metrics).toEqual([{ name: 'power', type: 'number', max: 500 }]);
    const audit = await f.t.db
      .selectFrom('audit_logs')
      .select(['action', 'before', 'after'])
      .where('entity_id', '=', id)
      .orderBy('at')
      .execute();
    expect(audit.map((a) => a.action)).toEqual(['device_profile.create', 'device_profile.update']);
    expect(audit[1]?.before).toMatchObject({ description: '', silence_timeout_s: 900 });
    expect(audit[1]?.after).toMatchObject({ description: 'kWh meter', silence_timeout_s: 60 });

    const errOf = async (variables: Record<string, unknown>) => (await f.run(admin, UPDATE, variables)).errors?.[0];
    expect((await errOf({ id, input: { name: 'Light' } }))?.extensions?.code).toBe('CONFLICT');
    expect((await errOf({ id, input: { name: null } }))?.extensions?.code).toBe('BAD_USER_INPUT');
    expect((await errOf({ id, input: { metrics: [{ name: 'p', type: 'STRING', counter: true }] } }))?.extensions?.code).toBe(
      'BAD_USER_INPUT',
    );
    expect((await errOf({ id: '00000000-0000-4000-8000-000000000000', input: { name: 'x' } }))?.extensions?.code).toBe('NOT_FOUND');
  });

  it('rotates device credentials, issuing a new username and secret each time', async () => {
    const id = (await f.ok(admin, CREATE_DEVICE, { input: { serial: 'C-1', name: 'Creds' } })).createDevice.id;
    const q = `mutation($id: ID!) { rotateDeviceCredentials(id: $id, graceSeconds: 0) { deviceId clientId username secret createdAt } }`;
    const a = (await f.ok(admin, q, { id })).rotateDeviceCredentials;
    const b = (await f.ok(admin, q, { id })).rotateDeviceCredentials;
    expect(a.clientId).toBe(id);
    expect(a.username).toMatch(new RegExp(`^${id}\\.[0-9a-f]{8}$`));
    expect(b.username).not.toBe(a.username);
    expect(b.secret).not.toBe(a.secret);
    const rows = await f.t.db.selectFrom('device_credentials').selectAll().where('device_id', '=', id).orderBy('created_at').execute();
    expect(rows.map((r) => [r.username, r.revoked_at === null])).toEqual([
      [a.username, false],
      [b.username, true],
    ]);
  });

  it('creates, lists and revokes API keys for admins, showing the key once', async () => {
    const c = await f.ok(
      admin,
      `mutation { createApiKey(input: { name: "ci", scopes: ["devices:read"] }) { key apiKey { id prefix scopes } } }`,
    );
    expect(c.createApiKey.key).toMatch(new RegExp(`^rulr_${c.createApiKey.apiKey.prefix}_`));
    const l = await f.ok(admin, `{ apiKeys { id name revokedAt } }`);
    expect(l.apiKeys).toEqual([{ id: c.createApiKey.apiKey.id, name: 'ci', revokedAt: null }]);
    const r = await f.ok(admin, `mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`, { id: c.createApiKey.apiKey.id });
    expect(r.revokeApiKey.revokedAt).not.toBeNull();
    const bad = await f.run(admin, `mutation { createApiKey(input: { name: "x", scopes: ["devices:destroy"] }) { key } }`);
    expect(codes(bad)).toEqual(['BAD_USER_INPUT']);
    expect(bad.errors?.[0]?.message).toContain('unknown scope "devices:destroy"');
  });

  it('answers me with the identity and its organization', async () => {
    const u = await f.user(orgId, 'operator');
    const me = await f.ok({ ...f.as(orgId, 'operator'), subject: u.id }, `{ me { kind subject role email organization { id } } }`);
    expect(me.me).toEqual({ kind: 'USER', subject: u.id, role: 'OPERATOR', email: u.email, organization: { id: orgId } });
  });

  describe('bad input', () => {
    const errOf = async (query: string, variables?: Record<string, unknown>) => {
      const r = await f.run(admin, query, variables);
      return { code: r.errors?.[0]?.extensions?.code, message: r.errors?.[0]?.message ?? '' };
    };

    it('rejects coordinates out of range', async () => {
      expect(await errOf(CREATE_DEVICE, { input: { serial: 'B-1', name: 'x', location: { lat: 91, lng: 0 } } })).toEqual({
        code: 'BAD_USER_INPUT',
        message: 'input.location.lat: latitude must be between -90 and 90',
      });
      expect((await errOf(DEVICES, { filter: { near: { lat: 0, lng: 181, radiusMeters: 5 } } })).code).toBe('BAD_USER_INPUT');
      expect((await errOf(DEVICES, { filter: { near: { lat: 0, lng: 0, radiusMeters: 0 } } })).message).toContain('greater than 0');
      expect((await errOf(DEVICES, { filter: { near: { lat: 0, lng: 0, radiusMeters: 2_000_000 } } })).message).toContain('1000 km');
    });

    it('rejects a duplicate serial with CONFLICT naming the serial', async () => {
      expect(await errOf(CREATE_DEVICE, { input: { serial: 'A-1', name: 'again' } })).toEqual({
        code: 'CONFLICT',
        message: 'a device with serial "A-1" already exists',
      });
    });

    it('rejects a serial with characters outside the allowed set', async () => {
      expect((await errOf(CREATE_DEVICE, { input: { serial: 'a b', name: 'x' } })).message).toMatch(/^input.serial: /);
    });

    it('rejects empty and over-long names', async () => {
      expect((await errOf(CREATE_SITE, { input: { name: '  ' } })).message).toBe('input.name: must not be empty');
      expect((await errOf(CREATE_SITE, { input: { name: 'x'.repeat(201) } })).message).toBe('input.name: must be at most 200 characters');
    });

    it('tells a malformed id (BAD_USER_INPUT) from an unknown one (NOT_FOUND)', async () => {
      expect((await errOf(`{ device(id: "nope") { id } }`)).code).toBe('BAD_USER_INPUT');
      expect(await f.ok(admin, `{ device(id: "00000000-0000-4000-8000-000000000000") { id } }`)).toEqual({ device: null });
      const m = `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`;
      expect((await errOf(m, { id: 'nope' })).code).toBe('BAD_USER_INPUT');
      expect((await errOf(m, { id: '00000000-0000-4000-8000-000000000000' })).code).toBe('NOT_FOUND');
      expect(
        (await errOf(CREATE_DEVICE, { input: { serial: 'N-1', name: 'x', siteId: '00000000-0000-4000-8000-000000000000' } })).code,
      ).toBe('NOT_FOUND');
      expect(
        (await errOf(CREATE_DEVICE, { input: { serial: 'N-1', name: 'x', profileId: '00000000-0000-4000-8000-000000000000' } })).code,
      ).toBe('NOT_FOUND');
    });

    it('limits first to between 1 and 200', async () => {
      expect(await errOf(DEVICES, { first: 0 })).toEqual({ code: 'BAD_USER_INPUT', message: 'first: first must be between 1 and 200' });
      expect((await errOf(DEVICES, { first: 500 })).code).toBe('BAD_USER_INPUT');
      expect((await errOf(DEVICES, { first: 200 })).code).toBeUndefined();
    });

    it('rejects a cursor it did not issue', async () => {
      expect(await errOf(DEVICES, { after: 'garbage!' })).toEqual({
        code: 'BAD_USER_INPUT',
        message: 'after: not a cursor returned by this API',
      });
    });
  });

  describe('batching', () => {
    it('loads a page of 50 devices with site and profile in one transaction of a few statements', async () => {
      const inputs = Array.from({ length: 50 }, (_, i) => ({
        serial: `P-${String(i).padStart(3, '0')}`,
        name: `p${i}`,
        siteId: [city, district, street][i % 3],
        profileId: i % 2 ? light : gateway,
      }));
      for (const input of inputs) await f.ok(admin, CREATE_DEVICE, { input });
      f.t.queries.length = 0;
      const d = await f.ok(
        admin,
        `{ devices(first: 50, filter: { search: "P-" }) { edges { node { serial site { name } profile { name } isGateway } } } }`,
      );
      expect(d.devices.edges).toHaveLength(50);
      expect(d.devices.edges[1].node).toEqual({ serial: 'P-001', site: { name: 'North' }, profile: { name: 'Light' }, isGateway: false });
      const selects = f.t.queries.filter((q) => /^\s*select/i.test(q) && !q.includes('set_config'));
      expect(selects).toHaveLength(3);
      // one read-only transaction, sent as one round trip (tenantRead)
      expect(f.t.queries.filter((q) => q.startsWith('begin'))).toEqual(['begin read only']);
      expect(f.t.queries.length).toBeLessThanOrEqual(6);
    });

    it('resolves 50 entity representations in one round trip, one statement per type', async () => {
      const ids = (await f.ok(admin, `{ devices(first: 50, filter: { search: "P-" }) { edges { node { id } } } }`)).devices.edges.map(
        (e: { node: { id: string } }) => e.node.id,
      );
      f.t.queries.length = 0;
      const r = await f.ok(admin, `query($r: [_Any!]!) { _entities(representations: $r) { ... on Device { serial site { name } } } }`, {
        r: ids.map((id: string) => ({ __typename: 'Device', id })),
      });
      expect(r._entities).toHaveLength(50);
      expect(r._entities.every((e: unknown) => e !== null)).toBe(true);
      // devices, and in the same transaction (one round trip) their sites and profiles, which prime the loaders
      const selects = f.t.queries.filter((q) => /^\s*select/i.test(q) && !q.includes('set_config'));
      expect(selects).toHaveLength(3);
      expect(f.t.queries.filter((q) => q.startsWith('begin'))).toEqual(['begin read only']);
    });
  });

  describe('login', () => {
    it('returns a token whose claims verify for the right password', async () => {
      const u = await f.user(orgId, 'operator');
      const d = await f.ok(
        ANONYMOUS,
        `mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token expiresAt role organization { id } } }`,
        {
          e: u.email.toUpperCase(),
          p: u.password,
        },
      );
      expect(d.login.role).toBe('OPERATOR');
      expect(d.login.organization.id).toBe(orgId);
      const cfg = f.ctx.config;
      const claims = await new TokenVerifier({ secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: cfg.JWT_TTL_SECONDS }).verify(
        d.login.token,
      );
      expect(claims).toMatchObject({ kind: 'user', subject: u.id, orgId, role: 'operator' });
      expect(new Date(d.login.expiresAt).getTime()).toBe(claims.exp * 1000);
    });

    it('answers a wrong password and an unknown email with the same UNAUTHENTICATED message', async () => {
      const u = await f.user(orgId, 'viewer');
      const q = `mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }`;
      const wrong = await f.run(ANONYMOUS, q, { e: u.email, p: 'wrong' });
      const unknown = await f.run(ANONYMOUS, q, { e: 'nobody@example.com', p: 'wrong' });
      expect(codes(wrong)).toEqual(['UNAUTHENTICATED']);
      expect(codes(unknown)).toEqual(['UNAUTHENTICATED']);
      expect(wrong.errors?.[0]?.message).toBe(unknown.errors?.[0]?.message);
    });

    it('picks the organization named by slug when the user belongs to several', async () => {
      const u = await f.user(orgId, 'viewer');
      const slug = `second-${Date.now()}`;
      const second = await f.org(slug);
      await f.t.db.insertInto('memberships').values({ org_id: second, user_id: u.id, role: 'admin' }).execute();
      const q = `mutation($e: String!, $p: String!, $o: String) { login(email: $e, password: $p, organization: $o) { role organization { id slug } } }`;
      expect((await f.ok(ANONYMOUS, q, { e: u.email, p: u.password, o: slug })).login).toEqual({
        role: 'ADMIN',
        organization: { id: second, slug },
      });
      expect((await f.ok(ANONYMOUS, q, { e: u.email, p: u.password })).login.organization.id).toBe(orgId);
      expect(codes(await f.run(ANONYMOUS, q, { e: u.email, p: u.password, o: 'not-mine' }))).toEqual(['UNAUTHENTICATED']);
    });
  });
});
