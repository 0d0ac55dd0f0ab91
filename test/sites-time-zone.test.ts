import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Identity } from '../lib/identity.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';

const CREATE = `mutation($input: CreateSiteInput!) { createSite(input: $input) { id name timeZone location { lat lng } } }`;
const UPDATE = `mutation($id: ID!, $input: UpdateSiteInput!) { updateSite(id: $id, input: $input) { id name timeZone location { lat lng } } }`;

describe('sites carry a time zone and a location for lighting programs', () => {
  let f: DevicesFixture;
  let operator: Identity;
  let viewer: Identity;
  let outsider: Identity;

  beforeAll(async () => {
    f = await devicesFixture();
    const org = await f.org();
    operator = f.as(org, 'operator');
    viewer = f.as(org, 'viewer');
    outsider = f.as(await f.org(), 'admin');
  });
  afterAll(async () => {
    await f?.close();
  });

  it('stores the canonical IANA name and the location given at creation', async () => {
    const s = (
      await f.ok(operator, CREATE, { input: { name: 'Amsterdam', timeZone: 'europe/amsterdam', location: { lat: 52.37, lng: 4.9 } } })
    ).createSite;
    expect(s).toMatchObject({ name: 'Amsterdam', timeZone: 'Europe/Amsterdam', location: { lat: 52.37, lng: 4.9 } });
    const child = (await f.ok(operator, CREATE, { input: { name: 'Damrak', parentId: s.id } })).createSite;
    expect(child).toMatchObject({ timeZone: null, location: null });
  });

  it('refuses time zones the platform does not know, naming the field', async () => {
    const r = await f.run(operator, CREATE, { input: { name: 'X', timeZone: 'CET+1' } });
    expect([codes(r)[0], r.errors?.[0]?.message]).toEqual([
      'BAD_USER_INPUT',
      'input.timeZone: not an IANA time zone (e.g. Europe/Amsterdam)',
    ]);
  });

  it('sets and clears the time zone and the location, audited, for operators of the organization only', async () => {
    const s = (await f.ok(operator, CREATE, { input: { name: 'Oslo' } })).createSite;
    const u = (await f.ok(operator, UPDATE, { id: s.id, input: { timeZone: 'Europe/Oslo', location: { lat: 59.91, lng: 10.75 } } }))
      .updateSite;
    expect(u).toMatchObject({ name: 'Oslo', timeZone: 'Europe/Oslo', location: { lat: 59.91, lng: 10.75 } });
    const cleared = (await f.ok(operator, UPDATE, { id: s.id, input: { location: null } })).updateSite;
    expect(cleared).toMatchObject({ timeZone: 'Europe/Oslo', location: null });
    const audit = await f.t.db.selectFrom('audit_logs').select('action').where('entity_id', '=', s.id).orderBy('at').execute();
    expect(audit.map((a) => a.action)).toEqual(['site.create', 'site.update', 'site.update']);
    expect(codes(await f.run(viewer, UPDATE, { id: s.id, input: { timeZone: 'UTC' } }))).toEqual(['FORBIDDEN']);
    expect(codes(await f.run(outsider, UPDATE, { id: s.id, input: { timeZone: 'UTC' } }))).toEqual(['NOT_FOUND']);
  });
});
