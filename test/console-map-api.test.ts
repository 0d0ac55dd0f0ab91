import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayHandle, startGateway } from '../gateway/index.js';
import { testContext } from '../gateway/test-fixtures.js';
import { seedFleet } from '../ingest/testing/fixtures.js';
import { issueToken } from '../lib/auth.js';
import type { Role } from '../lib/identity.js';
import type { RoleContext } from '../lib/role.js';
import { createSubgraph as createAlarmsSubgraph } from '../subgraphs/alarms/index.js';
import { createSubgraph as createDevicesSubgraph } from '../subgraphs/devices/index.js';
import { createSubgraph as createMetricsSubgraph } from '../subgraphs/metrics/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

// What the console's fleet map asks for (docs/console.md): `devicesInBox` (devices subgraph) with each
// device's status (metrics) and the worst severity of its active alarms (alarms), through the gateway.

let t: TestDatabase;
let ctx: RoleContext;
let gw: GatewayHandle;

interface Tenant {
  orgId: string;
  deviceIds: string[];
  site: string;
  token: (role: Role) => Promise<string>;
}
let a: Tenant;
let b: Tenant;

/** Devices of a tenant on a line of longitudes 4.00, 4.01, … at latitude 52 (device i at 4 + i/100). */
async function tenant(devices: number): Promise<Tenant> {
  const fleet = await seedFleet(t.url, { devices });
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  const site = randomUUID();
  await c.query('insert into sites (id, org_id, name, path) values ($1, $2, $3, $4::ltree)', [
    site,
    fleet.orgId,
    'Centre',
    site.replaceAll('-', '_'),
  ]);
  await c.query(
    `update devices d set site_id = $2, location = st_setsrid(st_makepoint(4 + (x.i - 1) / 100.0, 52), 4326)::geography
     from unnest($1::uuid[]) with ordinality as x(id, i) where d.id = x.id`,
    [fleet.deviceIds, site],
  );
  await c.end();
  const cfg = ctx.config;
  return {
    orgId: fleet.orgId,
    deviceIds: fleet.deviceIds,
    site,
    token: (role) =>
      issueToken({ userId: randomUUID(), orgId: fleet.orgId, role }, { secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: 600 }),
  };
}

async function raise(tn: Tenant, deviceId: string, severity: string, cleared = false): Promise<void> {
  await t.db
    .insertInto('alarms')
    .values({
      org_id: tn.orgId,
      device_id: deviceId,
      type: `T-${randomUUID().slice(0, 8)}`,
      severity,
      message: 'seeded',
      raised_by: 'system:test',
      ...(cleared ? { cleared_at: new Date(), cleared_by: 'system:test' } : {}),
    } as never)
    .execute();
}

async function gql(token: string, query: string, variables: Record<string, unknown> = {}) {
  const res = await fetch(`http://127.0.0.1:${gw.port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  // biome-ignore lint/suspicious/noExplicitAny: GraphQL answers are checked field by field below.
  return (await res.json()) as { data?: any; errors?: { message: string; extensions?: { code?: string; field?: string } }[] };
}

const MAP = `query Map($bbox: BoundingBox!, $siteId: ID, $first: Int, $after: String) {
  devicesInBox(bbox: $bbox, siteId: $siteId, first: $first, after: $after) {
    edges { node { id name location { lat lng } status { online } worstActiveSeverity } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const box = (minLng: number, maxLng: number) => ({ minLat: 51.9, maxLat: 52.1, minLng, maxLng });

beforeAll(async () => {
  t = await createTestDatabase();
  ctx = testContext({ DATABASE_URL: t.url });
  gw = await startGateway(ctx, {
    port: 0,
    realtime: false,
    local: { devices: createDevicesSubgraph(ctx), alarms: createAlarmsSubgraph(ctx), metrics: createMetricsSubgraph(ctx) },
  });
  a = await tenant(30);
  b = await tenant(5);
});

afterAll(async () => {
  await gw?.close();
  await ctx?.close();
  await t?.drop();
});

describe('devicesInBox (the console map)', () => {
  it('answers only the devices inside the box, with status and the worst active alarm severity', async () => {
    await raise(a, a.deviceIds[2] as string, 'minor');
    await raise(a, a.deviceIds[2] as string, 'critical');
    await raise(a, a.deviceIds[3] as string, 'critical', true);
    await raise(a, a.deviceIds[3] as string, 'warning');
    const r = await gql(await a.token('viewer'), MAP, { bbox: box(4.015, 4.095), first: 1000 });
    expect(r.errors).toBeUndefined();
    const nodes = r.data.devicesInBox.edges.map((e: { node: unknown }) => e.node);
    expect(nodes.map((n: { id: string }) => n.id).sort()).toEqual(a.deviceIds.slice(2, 10).sort());
    const byId = new Map(nodes.map((n: { id: string }) => [n.id, n]));
    expect(byId.get(a.deviceIds[2])).toMatchObject({ worstActiveSeverity: 'CRITICAL', status: { online: false } });
    // the cleared critical alarm does not count
    expect(byId.get(a.deviceIds[3])).toMatchObject({ worstActiveSeverity: 'WARNING' });
    expect(byId.get(a.deviceIds[4])).toMatchObject({ worstActiveSeverity: null });
    expect(byId.get(a.deviceIds[5])).toMatchObject({ location: { lat: 52, lng: 4.05 } });
  });

  it('pages through a box with cursors', async () => {
    const token = await a.token('viewer');
    const seen: string[] = [];
    let after: string | null = null;
    for (let i = 0; i < 10; i++) {
      const r = await gql(token, MAP, { bbox: box(3.9, 4.5), first: 7, after });
      expect(r.errors).toBeUndefined();
      seen.push(...r.data.devicesInBox.edges.map((e: { node: { id: string } }) => e.node.id));
      if (!r.data.devicesInBox.pageInfo.hasNextPage) break;
      after = r.data.devicesInBox.pageInfo.endCursor;
    }
    expect(seen.sort()).toEqual([...a.deviceIds].sort());
  });

  it("never shows another organization's devices, even in the same box", async () => {
    const r = await gql(await b.token('admin'), MAP, { bbox: box(3.9, 4.5), first: 1000 });
    const ids = r.data.devicesInBox.edges.map((e: { node: { id: string } }) => e.node.id);
    expect(ids.sort()).toEqual([...b.deviceIds].sort());
    const other = await gql(await b.token('admin'), MAP, { bbox: box(3.9, 4.5), siteId: a.site, first: 1000 });
    expect(other.data.devicesInBox.edges).toEqual([]);
  });

  it('narrows to a site subtree', async () => {
    const r = await gql(await a.token('viewer'), MAP, { bbox: box(3.9, 4.5), siteId: a.site, first: 1000 });
    expect(r.data.devicesInBox.edges).toHaveLength(30);
  });

  it('refuses a page over 1,000 and a box whose minLat exceeds maxLat, naming the field', async () => {
    const token = await a.token('viewer');
    const big = await gql(token, MAP, { bbox: box(3.9, 4.5), first: 1001 });
    expect(big.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(big.errors?.[0]?.message).toContain('first must be between 1 and 1000');
    const upside = await gql(token, MAP, { bbox: { minLat: 53, maxLat: 52, minLng: 4, maxLng: 5 }, first: 10 });
    expect(upside.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(upside.errors?.[0]?.message).toContain('minLat must not exceed maxLat');
  });

  it('refuses anonymous callers', async () => {
    const res = await fetch(`http://127.0.0.1:${gw.port}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: MAP, variables: { bbox: box(3.9, 4.5) } }),
    });
    const body = (await res.json()) as { data?: { devicesInBox: unknown } | null; errors?: { extensions?: { code?: string } }[] };
    expect(body.data?.devicesInBox ?? null).toBeNull();
    expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });
});

const EXTENT = 'query ($s: ID) { deviceExtent(siteId: $s) { minLat minLng maxLat maxLng devices } }';
const OUTLINES = '{ sites { id outline { lat lng } } }';

describe('deviceExtent and Site.outline (the map’s first view and site outlines)', () => {
  it('answers the box around the organization’s located devices, and of a site subtree', async () => {
    const token = await a.token('viewer');
    const all = await gql(token, EXTENT);
    expect(all.errors).toBeUndefined();
    expect(all.data.deviceExtent).toEqual({ minLat: 52, minLng: 4, maxLat: 52, maxLng: 4.29, devices: 30 });
    const site = await gql(token, EXTENT, { s: a.site });
    expect(site.data.deviceExtent).toEqual(all.data.deviceExtent);
  });

  it('keeps organizations apart: another’s devices are not in the extent, another’s site gives null', async () => {
    const token = await b.token('viewer');
    expect((await gql(token, EXTENT)).data.deviceExtent).toEqual({ minLat: 52, minLng: 4, maxLat: 52, maxLng: 4.04, devices: 5 });
    const other = await gql(token, EXTENT, { s: a.site });
    expect(other.errors).toBeUndefined();
    expect(other.data.deviceExtent).toBeNull();
  });

  it('answers null without located devices, and refuses a siteId that is no id, naming the field', async () => {
    const c = await tenant(2);
    await t.db.updateTable('devices').set({ location: null }).where('org_id', '=', c.orgId).execute();
    expect((await gql(await c.token('viewer'), EXTENT)).data.deviceExtent).toBeNull();
    const bad = await gql(await c.token('viewer'), EXTENT, { s: 'not-an-id' });
    expect(bad.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(bad.errors?.[0]?.message).toContain('siteId');
  });

  it('outlines a site by the convex hull of its subtree’s devices; a point or nothing for fewer spots', async () => {
    const c = await tenant(5);
    const [d0, d1, d2, d3, d4] = c.deviceIds as [string, string, string, string, string];
    const sql = new pg.Client({ connectionString: t.url });
    await sql.connect();
    const child = randomUUID();
    const empty = randomUUID();
    const label = (id: string) => id.replaceAll('-', '_');
    for (const s of [child, empty])
      await sql.query('insert into sites (id, org_id, name, parent_id, path) values ($1, $2, $3, $4, $5::ltree)', [
        s,
        c.orgId,
        `Sub ${s.slice(0, 4)}`,
        c.site,
        `${label(c.site)}.${label(s)}`,
      ]);
    const at = (id: string, lng: number, lat: number, site = c.site) =>
      sql.query('update devices set location = st_setsrid(st_makepoint($2, $3), 4326)::geography, site_id = $4 where id = $1', [
        id,
        lng,
        lat,
        site,
      ]);
    // a triangle with a device inside it (not on the outline) and a decommissioned one outside (left out)
    await at(d0, 4, 52);
    await at(d1, 4.1, 52);
    await at(d2, 4.05, 52.1, child);
    await at(d3, 4.05, 52.03);
    await at(d4, 9, 9);
    await sql.query('update devices set decommissioned_at = now() where id = $1', [d4]);
    await sql.end();
    const r = await gql(await c.token('viewer'), OUTLINES);
    expect(r.errors).toBeUndefined();
    const outline = new Map<string, { lat: number; lng: number }[]>(
      r.data.sites.map((s: { id: string; outline: { lat: number; lng: number }[] }) => [s.id, s.outline]),
    );
    const key = (l: { lat: number; lng: number }[] = []) => l.map((p) => `${p.lng},${p.lat}`).sort();
    expect(key(outline.get(c.site))).toEqual(['4,52', '4.05,52.1', '4.1,52']);
    expect(outline.get(child)).toEqual([{ lat: 52.1, lng: 4.05 }]);
    expect(outline.get(empty)).toEqual([]);
    // a line of devices outlines as its two ends
    expect(key((await gql(await b.token('viewer'), OUTLINES)).data.sites[0].outline)).toEqual(['4,52', '4.04,52']);
  });
});
