import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_EMAIL, seedDemo } from '../cli/seed.js';
import { createApiKeyCli, printToken } from '../cli/token.js';
import { apiKeyMatches, TokenVerifier } from '../lib/auth.js';
import { loadConfig } from '../lib/config.js';
import { ANONYMOUS } from '../lib/identity.js';
import { type DevicesFixture, devicesFixture } from './devices-fixtures.js';

describe('demo seed and CLI credentials', () => {
  let f: DevicesFixture;
  const cfg = loadConfig({ NODE_ENV: 'test' });

  beforeAll(async () => {
    f = await devicesFixture();
  });
  afterAll(() => f.close());

  const counts = async () => {
    const n = async (t: 'devices' | 'sites' | 'device_profiles' | 'organizations' | 'users' | 'memberships' | 'rules') =>
      Number(
        (
          await f.t.db
            .selectFrom(t)
            .select((eb) => eb.fn.countAll<number>().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );
    return {
      devices: await n('devices'),
      rules: await n('rules'),
      sites: await n('sites'),
      profiles: await n('device_profiles'),
      orgs: await n('organizations'),
      users: await n('users'),
      memberships: await n('memberships'),
    };
  };

  it('creates the demo organization with 1,000 street lights and its rules, and running it again duplicates nothing', async () => {
    const first = await seedDemo(cfg, { devices: 1000, db: f.t.db, password: 'demo-password-1', quiet: true });
    const after1 = await counts();
    expect(after1).toMatchObject({ orgs: 1, profiles: 2, users: 1, memberships: 1, rules: 3 });
    expect(after1.sites).toBeGreaterThanOrEqual(20);
    const lights = await f.t.db.selectFrom('devices').select('serial').where('serial', 'like', 'SL-%').orderBy('serial').execute();
    expect(lights).toHaveLength(1000);
    expect(lights[0]?.serial).toBe('SL-000001');
    expect(lights.at(-1)?.serial).toBe('SL-001000');
    const second = await seedDemo(cfg, { devices: 1000, db: f.t.db, password: 'demo-password-2', quiet: true });
    expect(await counts()).toEqual(after1);
    expect(second.orgId).toBe(first.orgId);
  });

  it('spreads devices over the streets, around one city, with concentrators that have children', async () => {
    const admin = f.as((await seedDemo(cfg, { devices: 1000, db: f.t.db, password: 'demo-password-3', quiet: true })).orgId, 'viewer');
    const d = await f.ok(
      admin,
      `{ gws: devices(first: 10, filter: { search: "GW-" }) { edges { node { isGateway children { serial } profile { autoCreateChildren } } } }
         near: devices(first: 1, filter: { near: { lat: 52.3702, lng: 4.8952, radiusMeters: 5000 } }) { totalCount }
         deviceProfiles { name metrics { name unit type counter } } sites { name deviceCount parent { id } } }`,
    );
    expect(d.gws.edges.length).toBeGreaterThanOrEqual(2);
    for (const e of d.gws.edges) {
      expect(e.node.isGateway).toBe(true);
      expect(e.node.profile.autoCreateChildren).toBe(true);
      expect(e.node.children.length).toBeGreaterThan(0);
    }
    expect(d.near.totalCount).toBeGreaterThanOrEqual(1000);
    const light = d.deviceProfiles.find((p: { name: string }) => p.name === 'Street-light controller');
    expect(light.metrics.map((m: { name: string; unit: string | null }) => `${m.name}:${m.unit ?? ''}`)).toEqual([
      'voltage:V',
      'current:A',
      'power:W',
      'energy:kWh',
      'dimLevel:%',
      'lampState:',
      'lampFault:',
    ]);
    expect(light.metrics.find((m: { name: string }) => m.name === 'energy').counter).toBe(true);
    const root = d.sites.find((s: { parent: unknown }) => s.parent === null);
    expect(root.deviceCount).toBe(1004);
  });

  it('lets the demo admin log in with the printed password', async () => {
    const s = await seedDemo(cfg, { devices: 10, db: f.t.db, password: 'demo-password-4', quiet: true });
    const r = await f.ok(
      ANONYMOUS,
      `mutation($e: String!, $p: String!) { login(email: $e, password: $p, organization: "demo") { role } }`,
      {
        e: DEMO_EMAIL,
        p: s.password,
      },
    );
    expect(r.login.role).toBe('ADMIN');
  });

  it('prints a token for an organization, optionally for a member user', async () => {
    const verifier = new TokenVerifier({ secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 60 });
    const token = await printToken(cfg, { org: 'demo', role: 'viewer', ttl: '120', db: f.t.db, quiet: true });
    const claims = await verifier.verify(token);
    expect(claims).toMatchObject({ role: 'viewer', subject: 'service:cli' });
    expect(claims.exp - Date.now() / 1000).toBeGreaterThan(100);
    const user = await f.t.db.selectFrom('users').select('id').executeTakeFirstOrThrow();
    expect(
      await verifier.verify(await printToken(cfg, { org: 'demo', role: 'admin', user: DEMO_EMAIL, db: f.t.db, quiet: true })),
    ).toMatchObject({
      subject: user.id,
      role: 'admin',
    });
    await expect(printToken(cfg, { org: 'nope', role: 'admin', db: f.t.db, quiet: true })).rejects.toThrow(
      'no organization with slug "nope"',
    );
    await expect(printToken(cfg, { org: 'demo', role: 'root', db: f.t.db, quiet: true })).rejects.toThrow('--role must be one of');
    await expect(printToken(cfg, { org: 'demo', role: 'viewer', user: 'x@y.z', db: f.t.db, quiet: true })).rejects.toThrow('not a member');
  });

  it('creates an API key with validated scopes, storing only its hash', async () => {
    const k = await createApiKeyCli(cfg, {
      org: 'demo',
      name: 'integration',
      scopes: 'devices:read, alarms:read',
      db: f.t.db,
      quiet: true,
    });
    const row = await f.t.db.selectFrom('api_keys').selectAll().where('id', '=', k.id).executeTakeFirstOrThrow();
    expect(row.scopes).toEqual(['devices:read', 'alarms:read']);
    expect(apiKeyMatches(k.key, row.key_hash)).toBe(true);
    expect(row.key_hash).not.toContain(k.key);
    await expect(createApiKeyCli(cfg, { org: 'demo', name: 'x', scopes: 'devices:nuke', db: f.t.db, quiet: true })).rejects.toThrow(
      'unknown scope(s) devices:nuke',
    );
  });
});
