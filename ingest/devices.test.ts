import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DeviceDirectory } from './devices.js';

// The cache logic of the device directory, with the database query replaced by rows held here (the
// query itself runs against PostgreSQL in test/ingest-flow.test.ts and test/device-changes.test.ts).

const ORG = randomUUID();
const row = (id: string, profileId: string | null, serial = id.slice(0, 8)) => ({
  id,
  org_id: ORG,
  serial,
  site_id: null,
  site_path: null,
  profile_id: profileId,
  metrics: [],
  silence_timeout_s: 900,
  is_gateway: false,
  auto_create_children: false,
  decommissioned_at: null,
});

function directory() {
  const rows = new Map<string, ReturnType<typeof row>>();
  let queries = 0;
  let hold: Promise<void> | undefined;
  const dir = new DeviceDirectory(async (_text, values) => {
    queries++;
    const snapshot = (values[0] as string[]).flatMap((id) => (rows.has(id) ? [{ ...rows.get(id) }] : []));
    await hold;
    return { rows: snapshot };
  }, 300_000);
  return {
    dir,
    rows,
    queries: () => queries,
    /** the next lookups read their rows, then wait until `release()` */
    hold(): () => void {
      let release!: () => void;
      hold = new Promise((r) => {
        release = r;
      });
      return () => {
        hold = undefined;
        release();
      };
    },
  };
}

describe('device directory', () => {
  it('serves a device from the cache until a notice names it', async () => {
    const d = directory();
    const id = randomUUID();
    d.rows.set(id, row(id, null));
    await d.dir.resolve([id]);
    await d.dir.resolve([id]);
    expect(d.queries()).toBe(1);
    d.dir.apply({ orgId: ORG, kind: 'decommissioned', deviceIds: [id] });
    await d.dir.resolve([id]);
    expect(d.queries()).toBe(2);
  });

  it('drops every cached device of a profile on a profile notice, and only those', async () => {
    const d = directory();
    const profile = randomUUID();
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    d.rows.set(a, row(a, profile));
    d.rows.set(b, row(b, profile));
    d.rows.set(c, row(c, randomUUID()));
    await d.dir.resolve([a, b, c]);
    d.dir.apply({ orgId: ORG, kind: 'profile-updated', profileId: profile });
    const before = d.queries();
    await d.dir.resolve([c]);
    expect(d.queries()).toBe(before);
    await d.dir.resolve([a, b]);
    expect(d.queries()).toBe(before + 1);
  });

  it('does not cache a lookup that read the old row while a notice arrived', async () => {
    const d = directory();
    const id = randomUUID();
    d.rows.set(id, row(id, null));
    const release = d.hold();
    const lookup = d.dir.resolve([id]);
    await new Promise((r) => setImmediate(r));
    d.rows.set(id, { ...row(id, null), decommissioned_at: new Date() as never });
    d.dir.apply({ orgId: ORG, kind: 'decommissioned', deviceIds: [id] });
    release();
    expect((await lookup).get(id)?.decommissioned).toBe(false);
    expect((await d.dir.resolve([id])).get(id)?.decommissioned).toBe(true);
  });
});
