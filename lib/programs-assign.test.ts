import { describe, expect, it } from 'vitest';
import { AssignmentIndex, cellOf, inheritance, plan } from './programs-assign.js';

const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const label = (s: string) => s.replaceAll('-', '_');
const CITY = id(1);
const DISTRICT = id(2);
const STREET = id(3);
const LAMP = id(10);
const DECO = id(11);
const path = (...ids: string[]) => ids.map(label).join('.');

describe('assignments', () => {
  const a = (n: number, scope: { siteId?: string; profileId?: string; deviceId?: string }) => ({
    id: id(100 + n),
    siteId: scope.siteId ?? null,
    profileId: scope.profileId ?? null,
    deviceId: scope.deviceId ?? null,
  });
  const index = new AssignmentIndex([
    a(1, { siteId: CITY }),
    a(2, { siteId: DISTRICT }),
    a(3, { profileId: DECO }),
    a(4, { siteId: CITY, profileId: LAMP }),
    a(5, { siteId: STREET, profileId: LAMP }),
    a(6, { deviceId: id(50) }),
  ]);
  const device = (n: number, profileId: string | null, sitePath: string | null) => ({ id: id(n), profileId, sitePath });

  it('lets the most specific scope win: device, then site + profile (deepest first), then profile, then site (deepest first)', () => {
    expect(index.assignmentFor(device(50, LAMP, path(CITY, DISTRICT, STREET)))?.id).toBe(id(106));
    expect(index.assignmentFor(device(51, LAMP, path(CITY, DISTRICT, STREET)))?.id).toBe(id(105));
    expect(index.assignmentFor(device(52, LAMP, path(CITY, DISTRICT)))?.id).toBe(id(104));
    expect(index.assignmentFor(device(53, DECO, path(CITY, DISTRICT, STREET)))?.id).toBe(id(103));
    expect(index.assignmentFor(device(54, null, path(CITY, DISTRICT, STREET)))?.id).toBe(id(102));
    expect(index.assignmentFor(device(55, null, path(CITY)))?.id).toBe(id(101));
    expect(index.assignmentFor(device(56, DECO, null))?.id).toBe(id(103));
    expect(index.assignmentFor(device(57, null, null))).toBeNull();
  });
});

describe('clusters', () => {
  const sites = inheritance([
    { id: CITY, path: path(CITY), timeZone: 'Europe/Amsterdam', lat: 52.37, lng: 4.9 },
    { id: DISTRICT, path: path(CITY, DISTRICT), timeZone: null, lat: null, lng: null },
    { id: STREET, path: path(CITY, DISTRICT, STREET), timeZone: null, lat: 52.41, lng: 4.95 },
    { id: id(4), path: path(id(4)), timeZone: null, lat: 1, lng: 1 },
  ]);

  it('inherits the nearest time zone and location up the site tree', () => {
    expect(sites.get(STREET)).toEqual({ timeZone: 'Europe/Amsterdam', location: { lat: 52.41, lng: 4.95 } });
    expect(sites.get(DISTRICT)).toEqual({ timeZone: 'Europe/Amsterdam', location: { lat: 52.37, lng: 4.9 } });
  });

  it('groups devices by assignment, time zone and location cell, and lists those it cannot place', () => {
    const index = new AssignmentIndex([{ id: id(100), siteId: null, profileId: LAMP, deviceId: null }]);
    const d = (n: number, siteId: string | null, lat: number | null, lng: number | null, profileId: string | null = LAMP) => ({
      id: id(n),
      profileId,
      siteId,
      sitePath: null,
      lat,
      lng,
    });
    const p = plan(index, sites, [
      d(1, STREET, 52.3702, 4.8952),
      d(2, STREET, 52.3749, 4.9049), // same 0.1° cell
      d(3, STREET, 52.52, 4.9), // another cell
      d(4, DISTRICT, null, null), // the city's location, inherited
      d(5, id(4), 1, 1), // no time zone anywhere up its chain
      d(6, null, 52, 4),
      d(7, STREET, 52, 4, null),
    ]);
    expect([...p.clusters.values()].map((c) => [c.cellLat, c.cellLng, c.deviceIds.length])).toEqual([
      [52.4, 4.9, 3],
      [52.5, 4.9, 1],
    ]);
    expect(p.noTimeZone).toEqual([id(5), id(6)]);
    expect(p.unassigned).toBe(1);
    expect(cellOf(-33.8688, 0.1)).toBe(-33.9);
  });
});
