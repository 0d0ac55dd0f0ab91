import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANONYMOUS, encodeIdentity, IDENTITY_HEADER, type Identity, signIdentity } from '../lib/identity.js';
import type { RoleHandle } from '../lib/role.js';
import { startSubgraphServer } from '../lib/subgraph.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';

const CREATE = `mutation($s: String!) { createDevice(input: { serial: $s, name: "x" }) { id } }`;
const MUTATIONS = [
  `mutation { createSite(input: { name: "s" }) { id } }`,
  `mutation { createDeviceProfile(input: { name: "p" }) { id } }`,
  `mutation($id: ID!) { updateDeviceProfile(id: $id, input: { name: "q" }) { id } }`,
  `mutation { createDevice(input: { serial: "M-1", name: "x" }) { id } }`,
  `mutation($id: ID!) { updateDevice(id: $id, input: { name: "y" }) { id } }`,
  `mutation($id: ID!, $s: ID!) { moveDevice(id: $id, siteId: $s) { id } }`,
  `mutation($id: ID!) { decommissionDevice(id: $id) { id } }`,
  `mutation($id: ID!) { rotateDeviceCredentials(id: $id) { secret } }`,
];

describe('devices subgraph access control', () => {
  let f: DevicesFixture;
  let orgId: string;
  let deviceId: string;
  let siteId: string;
  const vars = () => ({ id: deviceId, s: siteId });
  const used = (m: string) => Object.fromEntries(Object.entries(vars()).filter(([k]) => m.includes(`$${k}`)));

  beforeAll(async () => {
    f = await devicesFixture();
    orgId = await f.org();
    const admin = f.as(orgId, 'admin');
    siteId = (await f.ok(admin, `mutation { createSite(input: { name: "root" }) { id } }`)).createSite.id;
    deviceId = (await f.ok(admin, CREATE, { s: 'D-1' })).createDevice.id;
  });
  afterAll(() => f.close());

  it('forbids a viewer every mutation but lets it read', async () => {
    const viewer = f.as(orgId, 'viewer');
    for (const m of MUTATIONS) expect(codes(await f.run(viewer, m, used(m))), m).toEqual(['FORBIDDEN']);
    expect((await f.ok(viewer, `{ devices { edges { node { id } } } }`)).devices.edges).toHaveLength(1);
  });

  it('lets an operator write devices but not manage API keys', async () => {
    const operator = f.as(orgId, 'operator');
    await f.ok(operator, CREATE, { s: 'OP-1' });
    expect(codes(await f.run(operator, `mutation { createApiKey(input: { name: "k", scopes: ["*"] }) { key } }`))).toEqual(['FORBIDDEN']);
    expect(codes(await f.run(operator, `{ apiKeys { id } }`))).toEqual(['FORBIDDEN']);
  });

  it('forbids an API key without devices:write to mutate, and one without devices:read to read', async () => {
    const readOnly = f.as(orgId, 'admin', 'apikey', ['devices:read']);
    for (const m of MUTATIONS) expect(codes(await f.run(readOnly, m, used(m))), m).toEqual(['FORBIDDEN']);
    expect((await f.run(readOnly, `{ devices { totalCount } }`)).errors).toBeUndefined();
    const alarmsOnly = f.as(orgId, 'admin', 'apikey', ['alarms:read']);
    expect(codes(await f.run(alarmsOnly, `{ devices { totalCount } }`))).toEqual(['FORBIDDEN']);
    const writer = f.as(orgId, 'admin', 'apikey', ['devices:write']);
    await f.ok(writer, CREATE, { s: 'KEY-1' });
    expect(codes(await f.run(writer, `mutation { createApiKey(input: { name: "k", scopes: ["*"] }) { key } }`))).toEqual(['FORBIDDEN']);
  });

  it('lets an anonymous identity call login and nothing else', async () => {
    for (const q of [
      `{ devices { totalCount } }`,
      `{ sites { id } }`,
      `{ me { subject } }`,
      `query($id: ID!) { device(id: $id) { id } }`,
      `query($r: [_Any!]!) { _entities(representations: $r) { ... on Device { id } } }`,
      ...MUTATIONS,
    ]) {
      const v = q.includes('$r') ? { r: [{ __typename: 'Device', id: deviceId }] } : used(q);
      expect(codes(await f.run(ANONYMOUS, q, v)), q).toEqual(['UNAUTHENTICATED']);
    }
    const login = await f.run(ANONYMOUS, `mutation { login(email: "nobody@example.com", password: "x") { token } }`);
    expect(codes(login)).toEqual(['UNAUTHENTICATED']);
    expect(login.errors?.[0]?.message).toBe('invalid email or password');
  });

  describe('over HTTP', () => {
    let server: RoleHandle;
    let url: string;
    /** `header`: a header, or how to sign one for this body. */
    const post = async (body: string, header?: string | ((body: string) => string)) => {
      const h = typeof header === 'function' ? header(body) : header;
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(h ? { [IDENTITY_HEADER]: h } : {}) },
        body,
      });
      return {
        status: res.status,
        body: (await res.json()) as { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] },
      };
    };
    const signed =
      (id: Identity, now?: number) =>
      (body: string): string =>
        signIdentity(id, f.ctx.config.RULR_SECRET, { body }, now === undefined ? {} : { now });
    const query = JSON.stringify({ query: '{ devices(first: 1) { edges { node { serial } } } }' });

    beforeAll(async () => {
      server = await startSubgraphServer(f.ctx, f.mod, 0);
      url = `http://127.0.0.1:${server.port}/graphql`;
    });
    afterAll(() => server.close());

    it('answers a request with a valid signed identity', async () => {
      const r = await post(query, signed(f.as(orgId, 'viewer')));
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({ devices: { edges: [{ node: { serial: 'D-1' } }] } });
    });

    it('refuses an unsigned, forged or expired identity header with 401 UNAUTHENTICATED', async () => {
      const id = f.as(orgId, 'admin');
      const forged = (body: string) => signIdentity(id, 'another-secret-that-is-at-least-32-characters', { body });
      const [v, , at, nonce, mac] = signed(id)(query).split('.');
      const otherOrg = encodeIdentity({ ...id, orgId: '00000000-0000-4000-8000-000000000001' });
      const tampered = `${v}.${otherOrg}.${at}.${nonce}.${mac}`;
      const expired = signed(id, Date.now() - 10 * 60_000);
      const otherBody = signed(id)(JSON.stringify({ query: '{ sites { id } }' }));
      for (const header of [undefined, forged, tampered, expired, otherBody, `${v}.${otherOrg}.`]) {
        const r = await post(query, header);
        expect(r.status, String(header)).toBe(401);
        expect(r.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
        expect(r.body.data).toBeUndefined();
      }
    });

    it('answers wrong variable types and a malformed JSON body with clear coded errors', async () => {
      const h = signed(f.as(orgId, 'viewer'));
      const wrongType = await post(
        JSON.stringify({ query: 'query($first: Int) { devices(first: $first) { totalCount } }', variables: { first: 'x' } }),
        h,
      );
      expect(wrongType.body.errors?.[0]?.message).toContain('$first');
      expect(wrongType.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
      const malformed = await post('{"query": "{ devices { totalCount } }"', h);
      expect(malformed.status).toBe(400);
      expect(malformed.body.errors?.[0]).toMatchObject({ message: 'body is not valid JSON', extensions: { code: 'BAD_USER_INPUT' } });
      const badFirst = await post(JSON.stringify({ query: '{ devices(first: 500) { totalCount } }' }), h);
      expect(badFirst.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    });

    it('lets an anonymous identity log in over HTTP', async () => {
      const u = await f.user(orgId, 'viewer');
      const r = await post(
        JSON.stringify({
          query: 'mutation($e: String!, $p: String!) { login(email: $e, password: $p) { role } }',
          variables: { e: u.email, p: u.password },
        }),
        signed(ANONYMOUS),
      );
      expect(r.body).toEqual({ data: { login: { role: 'VIEWER' } } });
    });
  });
});
