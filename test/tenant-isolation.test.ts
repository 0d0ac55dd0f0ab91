import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantRead, withTenant } from '../lib/db.js';
import type { Identity } from '../lib/identity.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { privilegedForApp, reachedAsTenant } from './support/reach.js';

interface Tenant {
  orgId: string;
  admin: Identity;
  siteId: string;
  profileId: string;
  deviceId: string;
  apiKeyId: string;
}

describe('tenant isolation', () => {
  let f: DevicesFixture;
  let a: Tenant;
  let b: Tenant;

  const tenant = async (serial: string): Promise<Tenant> => {
    const orgId = await f.org();
    const admin = f.as(orgId, 'admin');
    const siteId = (await f.ok(admin, `mutation { createSite(input: { name: "Site ${serial}" }) { id } }`)).createSite.id;
    const profileId = (await f.ok(admin, `mutation { createDeviceProfile(input: { name: "Profile ${serial}" }) { id } }`))
      .createDeviceProfile.id;
    const deviceId = (
      await f.ok(admin, `mutation($i: CreateDeviceInput!) { createDevice(input: $i) { id } }`, {
        i: { serial, name: `Device ${serial}`, siteId, profileId, location: { lat: 52, lng: 5 } },
      })
    ).createDevice.id;
    const apiKeyId = (await f.ok(admin, `mutation { createApiKey(input: { name: "k", scopes: ["*"] }) { apiKey { id } } }`)).createApiKey
      .apiKey.id;
    return { orgId, admin, siteId, profileId, deviceId, apiKeyId };
  };

  beforeAll(async () => {
    f = await devicesFixture();
    a = await tenant('SHARED-1');
    b = await tenant('SHARED-1');
  });
  afterAll(() => f.close());

  it('lets both tenants use the same serial', async () => {
    expect(a.deviceId).not.toBe(b.deviceId);
  });

  it("shows a user of org A none of org B's devices, sites or profiles in lists", async () => {
    const d = await f.ok(
      a.admin,
      `{ devices(first: 200, filter: { includeDecommissioned: true }) { totalCount edges { node { id } } } sites { id } deviceProfiles { id } apiKeys { id } }`,
    );
    expect(d.devices.edges.map((e: { node: { id: string } }) => e.node.id)).toEqual([a.deviceId]);
    expect(d.devices.totalCount).toBe(1);
    expect(d.sites).toEqual([{ id: a.siteId }]);
    expect(d.deviceProfiles).toEqual([{ id: a.profileId }]);
    expect(d.apiKeys).toEqual([{ id: a.apiKeyId }]);
  });

  it("returns null for org B's device, site and profile looked up by id", async () => {
    const d = await f.ok(
      a.admin,
      `query($d: ID!, $s: ID!, $p: ID!) { device(id: $d) { id } site(id: $s) { id } deviceProfile(id: $p) { id } }`,
      {
        d: b.deviceId,
        s: b.siteId,
        p: b.profileId,
      },
    );
    expect(d).toEqual({ device: null, site: null, deviceProfile: null });
  });

  it("returns null in place of org B's devices and sites in batch lookups", async () => {
    const d = await f.ok(a.admin, `query($d: [ID!]!, $s: [ID!]!) { devicesByIds(ids: $d) { id } sitesByIds(ids: $s) { id } }`, {
      d: [a.deviceId, b.deviceId],
      s: [b.siteId, a.siteId],
    });
    expect(d).toEqual({ devicesByIds: [{ id: a.deviceId }, null], sitesByIds: [null, { id: a.siteId }] });
  });

  it("finds nothing when filtering by org B's site, profile or parent", async () => {
    for (const filter of [{ siteId: b.siteId }, { profileId: b.profileId }, { parentId: b.deviceId }, { search: 'SHARED' }]) {
      const d = await f.ok(a.admin, `query($f: DeviceFilter) { devices(filter: $f) { edges { node { id } } } }`, { f: filter });
      const ids = d.devices.edges.map((e: { node: { id: string } }) => e.node.id);
      expect(ids).not.toContain(b.deviceId);
    }
  });

  it("answers NOT_FOUND to every mutation on org B's ids and changes nothing", async () => {
    const attempts: [string, Record<string, unknown>][] = [
      [`mutation($id: ID!) { updateDevice(id: $id, input: { name: "pwned" }) { id } }`, { id: b.deviceId }],
      [`mutation($id: ID!, $s: ID!) { moveDevice(id: $id, siteId: $s) { id } }`, { id: b.deviceId, s: a.siteId }],
      [`mutation($id: ID!, $s: ID!) { moveDevice(id: $id, siteId: $s) { id } }`, { id: a.deviceId, s: b.siteId }],
      [`mutation($id: ID!) { decommissionDevice(id: $id) { id } }`, { id: b.deviceId }],
      [`mutation($id: ID!) { rotateDeviceCredentials(id: $id) { secret } }`, { id: b.deviceId }],
      [`mutation($id: ID!) { updateDeviceProfile(id: $id, input: { name: "pwned" }) { id } }`, { id: b.profileId }],
      [`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: b.apiKeyId }],
      [`mutation($s: ID!) { createSite(input: { name: "child", parentId: $s }) { id } }`, { s: b.siteId }],
      [`mutation($s: ID!) { createDevice(input: { serial: "X-9", name: "x", siteId: $s }) { id } }`, { s: b.siteId }],
      [`mutation($p: ID!) { createDevice(input: { serial: "X-9", name: "x", profileId: $p }) { id } }`, { p: b.profileId }],
      [`mutation($p: ID!) { createDevice(input: { serial: "X-9", name: "x", parentId: $p }) { id } }`, { p: b.deviceId }],
      [`mutation($id: ID!, $p: ID!) { updateDevice(id: $id, input: { profileId: $p }) { id } }`, { id: a.deviceId, p: b.profileId }],
    ];
    for (const [query, variables] of attempts) {
      const r = await f.run(a.admin, query, variables);
      expect(codes(r), query).toEqual(['NOT_FOUND']);
    }
    const row = await f.t.db.selectFrom('devices').selectAll().where('id', '=', b.deviceId).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ name: 'Device SHARED-1', site_id: b.siteId, decommissioned_at: null });
    const profile = await f.t.db.selectFrom('device_profiles').select('name').where('id', '=', b.profileId).executeTakeFirstOrThrow();
    expect(profile.name).toBe('Profile SHARED-1');
    const key = await f.t.db.selectFrom('api_keys').select('revoked_at').where('id', '=', b.apiKeyId).executeTakeFirstOrThrow();
    expect(key.revoked_at).toBeNull();
    expect(await f.t.db.selectFrom('device_credentials').selectAll().where('device_id', '=', b.deviceId).execute()).toEqual([]);
  });

  it("resolves org B's entity representations to null", async () => {
    const r = await f.ok(
      a.admin,
      `query($r: [_Any!]!) { _entities(representations: $r) { ... on Device { id } ... on Site { id } ... on DeviceProfile { id } } }`,
      {
        r: [
          { __typename: 'Device', id: b.deviceId },
          { __typename: 'Site', id: b.siteId },
          { __typename: 'DeviceProfile', id: b.profileId },
          { __typename: 'Device', id: a.deviceId },
        ],
      },
    );
    expect(r._entities).toEqual([null, null, null, { id: a.deviceId }]);
  });

  it('shows only the tenant its own organization in me', async () => {
    const d = await f.ok(a.admin, `{ me { organization { id } } }`);
    expect(d.me.organization.id).toBe(a.orgId);
  });

  describe('row-level security without the application filter', () => {
    it('is enabled, forced and keyed to the tenant setting on every table that has an org_id (new tables included)', async () => {
      const { rows } = await sql<{ table: string; enabled: boolean; forced: boolean; policy: string | null }>`
        select c.relname as table, c.relrowsecurity as enabled, c.relforcerowsecurity as forced,
               (select pg_get_expr(p.polqual, p.polrelid) from pg_policy p where p.polrelid = c.oid and p.polname = 'tenant_isolation') as policy
        from pg_class c
        join pg_attribute a on a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
        order by 1`.execute(f.t.db);
      expect(rows.map((r) => r.table)).toEqual(
        expect.arrayContaining(['alarms', 'alarm_events', 'devices', 'rule_executions', 'rules', 'sites']),
      );
      for (const r of rows) {
        expect(r, r.table).toMatchObject({ enabled: true, forced: true });
        expect(r.policy, r.table).toContain("current_setting('rulr.org_id'");
      }
    });

    it('keeps the application role off partitions, which have no policies of their own (queries go through the parents)', async () => {
      // test/timescale-mode.test.ts does the same for TimescaleDB's chunks and internal tables
      await sql`select rulr_ensure_monthly_partitions('audit_logs', 3), rulr_ensure_partitions('device_metrics', 'day', 2)`.execute(f.t.db);
      const { rows } = await sql<{ part: string }>`
        select format('public.%I', c.relname) as part
        from pg_class c where c.relnamespace = 'public'::regnamespace and c.relispartition and c.relkind = 'r'`.execute(f.t.db);
      const parts = rows.map((r) => r.part);
      expect(parts).toEqual(expect.arrayContaining(['public.audit_logs_default', 'public.device_metrics_default']));
      expect(await privilegedForApp(f.t.url, parts)).toEqual([]);
      // tried as a tenant session of org A would: every read and write refused
      expect(await reachedAsTenant(f.t.url, a.orgId, parts)).toEqual([]);
      // through the parent, the tenant still reads its own audit rows
      const audit = await withTenant(
        f.t.db,
        a.orgId,
        async (tx) => (await sql<{ n: number }>`select count(*)::int as n from audit_logs`.execute(tx)).rows[0]?.n,
      );
      expect(audit).toBeGreaterThan(0);
    });

    it('keeps the application role off the maintenance job records', async () => {
      expect(await reachedAsTenant(f.t.url, a.orgId, ['public.maintenance_job_runs'])).toEqual([]);
    });

    it('lets the application role read but never write the migration records, their lock and PostGIS spatial_ref_sys', async () => {
      const system = ['public.rulr_migrations', 'public.rulr_migrations_lock', 'public.spatial_ref_sys'];
      expect(await reachedAsTenant(f.t.url, a.orgId, system, ['insert', 'update', 'delete'])).toEqual([]);
      expect(await reachedAsTenant(f.t.url, a.orgId, system.slice(0, 2), ['select'])).toEqual([]);
    });

    it("returns only org A's rows to a raw select inside A's tenant transaction", async () => {
      const rows = await withTenant(f.t.db, a.orgId, async (tx) => (await sql<{ org_id: string }>`select * from devices`.execute(tx)).rows);
      expect(rows.map((r) => r.org_id)).toEqual([a.orgId]);
      const sites = await withTenant(
        f.t.db,
        a.orgId,
        async (tx) => (await sql<{ org_id: string }>`select org_id from sites`.execute(tx)).rows,
      );
      expect(new Set(sites.map((r) => r.org_id))).toEqual(new Set([a.orgId]));
      const orgs = await withTenant(
        f.t.db,
        a.orgId,
        async (tx) => (await sql<{ id: string }>`select id from organizations`.execute(tx)).rows,
      );
      expect(orgs.map((r) => r.id)).toEqual([a.orgId]);
    });

    it("returns only org A's rows to raw selects sent through tenantRead (one round trip)", async () => {
      const [devices, sites, orgs] = await tenantRead(f.t.db, a.orgId, [
        sql`select org_id from devices`.compile(f.t.db),
        sql`select org_id from sites where org_id = any(${[a.orgId, b.orgId]}::uuid[])`.compile(f.t.db),
        sql`select id from organizations`.compile(f.t.db),
      ]);
      expect(devices?.map((r) => r.org_id)).toEqual([a.orgId]);
      expect(new Set(sites?.map((r) => r.org_id))).toEqual(new Set([a.orgId]));
      expect(orgs?.map((r) => r.id)).toEqual([a.orgId]);
    });

    it('refuses writes through tenantRead, rolls back, and leaves the pool usable', async () => {
      await expect(
        tenantRead(f.t.db, a.orgId, [sql`update devices set name = 'x' where id = ${b.deviceId}`.compile(f.t.db)]),
      ).rejects.toThrow(/read-only transaction/);
      await expect(tenantRead(f.t.db, a.orgId, [sql`select 1/0`.compile(f.t.db)])).rejects.toThrow(/division by zero/);
      // a quote in a value stays a value: no statement can be smuggled through a parameter
      const sneaky = `x'); update devices set name = 'pwned'; select ('`;
      const [rows] = await tenantRead(f.t.db, a.orgId, [sql`select ${sneaky}::text as v, ${'back\\slash'}::text as w`.compile(f.t.db)]);
      expect(rows).toEqual([{ v: sneaky, w: 'back\\slash' }]);
      const names = await f.t.db.selectFrom('devices').select('name').where('name', '=', 'pwned').execute();
      expect(names).toEqual([]);
      for (let i = 0; i < 8; i++) {
        const [d] = await tenantRead(f.t.db, a.orgId, [sql`select id from devices`.compile(f.t.db)]);
        expect(d).toEqual([{ id: a.deviceId }]);
      }
    });

    it('refuses a tenantRead for an org id that is not a uuid', async () => {
      await expect(tenantRead(f.t.db, "x', true); select ('", [])).rejects.toThrow(/uuid/);
    });

    it("refuses an insert carrying org B's org_id inside A's tenant transaction", async () => {
      await expect(
        withTenant(f.t.db, a.orgId, (tx) =>
          tx.insertInto('devices').values({ org_id: b.orgId, serial: 'SNEAK-1', name: 'sneak' }).execute(),
        ),
      ).rejects.toThrow(/row-level security/);
      expect(await f.t.db.selectFrom('devices').select('id').where('serial', '=', 'SNEAK-1').execute()).toEqual([]);
    });

    it("cannot update or delete org B's rows from A's tenant transaction", async () => {
      const upd = await withTenant(f.t.db, a.orgId, (tx) => sql`update devices set name = 'x' where id = ${b.deviceId}`.execute(tx));
      const del = await withTenant(f.t.db, a.orgId, (tx) => sql`delete from devices where id = ${b.deviceId}`.execute(tx));
      expect(Number(upd.numAffectedRows)).toBe(0);
      expect(Number(del.numAffectedRows)).toBe(0);
    });
  });
});
