import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Identity } from '../lib/identity.js';
import { type DevicesFixture, devicesFixture } from './devices-fixtures.js';

const PAGE = `query($after: String) { devices(first: 25, after: $after) { edges { cursor node { id serial } } pageInfo { hasNextPage endCursor } } }`;

describe('devices pagination', () => {
  let f: DevicesFixture;
  let admin: Identity;
  let initial: string[];

  beforeAll(async () => {
    f = await devicesFixture();
    admin = f.as(await f.org(), 'admin');
    const org = admin.orgId;
    const rows = Array.from({ length: 300 }, (_, i) => ({ org_id: org, serial: `PG-${String(i * 10).padStart(5, '0')}`, name: `d${i}` }));
    initial = (await f.t.db.insertInto('devices').values(rows).returning('id').execute()).map((r) => r.id);
  });
  afterAll(() => f.close());

  it('sees every device that existed at the start exactly once while others are inserted concurrently', async () => {
    let inserting = true;
    const inserted: string[] = [];
    const writer = (async () => {
      // Serials that sort between, before and after the existing ones.
      while (inserting && inserted.length < 400) {
        const serial = `PG-${String(Math.floor(Math.random() * 3000)).padStart(5, '0')}-${randomBytes(2).toString('hex')}`;
        const r = await f.run(admin, `mutation($s: String!) { createDevice(input: { serial: $s, name: "new" }) { id } }`, { s: serial });
        if (!r.errors) inserted.push(serial);
      }
    })();
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const d: { devices: { edges: { node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } } =
        await f.ok(admin, PAGE, { after });
      seen.push(...d.devices.edges.map((e) => e.node.id));
      after = d.devices.pageInfo.hasNextPage ? d.devices.pageInfo.endCursor : null;
      pages++;
      await new Promise((r) => setTimeout(r, 5));
    } while (after);
    inserting = false;
    await writer;
    expect(inserted.length).toBeGreaterThan(0);
    expect(pages).toBeGreaterThanOrEqual(12);
    expect(new Set(seen).size).toBe(seen.length);
    const seenSet = new Set(seen);
    expect(initial.filter((id) => !seenSet.has(id))).toEqual([]);
  });

  it('ends with hasNextPage false and a null cursor on an empty result', async () => {
    const d = await f.ok(
      admin,
      `{ devices(first: 5, filter: { search: "no such device" }) { edges { cursor } pageInfo { hasNextPage endCursor } } }`,
    );
    expect(d.devices).toEqual({ edges: [], pageInfo: { hasNextPage: false, endCursor: null } });
  });

  it('returns opaque cursors that resume right after the last edge', async () => {
    const first = await f.ok(admin, `{ devices(first: 2) { edges { cursor node { serial } } } }`);
    const [, second] = first.devices.edges;
    expect(second.cursor).not.toContain('PG-');
    const next = await f.ok(admin, `query($a: String) { devices(first: 1, after: $a) { edges { node { serial } } } }`, {
      a: second.cursor,
    });
    expect(next.devices.edges[0].node.serial > second.node.serial).toBe(true);
  });
});
