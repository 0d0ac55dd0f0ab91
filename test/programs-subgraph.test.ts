import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { programsVersionKey } from '../lib/contracts/program-state.js';
import type { Identity } from '../lib/identity.js';
import { createSubgraph as createRulesSubgraph } from '../subgraphs/rules/index.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';

const PROGRAM_FIELDS = 'id name description switchPoints { at time offsetMinutes level rampSeconds } createdBy';
const CREATE = `mutation($input: ProgramInput!) { createProgram(input: $input) { ${PROGRAM_FIELDS} } }`;
const UPDATE = `mutation($id: ID!, $input: ProgramInput!) { updateProgram(id: $id, input: $input) { ${PROGRAM_FIELDS} } }`;
const DELETE = 'mutation($id: ID!) { deleteProgram(id: $id) }';
const CALENDAR = `mutation($input: ProgramCalendarInput!) { createProgramCalendar(input: $input) {
  id name defaultProgram { id } rules { kind program { id name } from to month day weekdays n weekday months } } }`;
const ASSIGN = `mutation($input: AssignProgramInput!) { assignProgram(input: $input) {
  id program { id } calendar { id } site { id } profile { id } device { id } } }`;
const OVERRIDE = `mutation($input: ProgramOverrideInput!) { createProgramOverride(input: $input) {
  id level startsAt expiresAt reason status site { id } device { id } } }`;
const SOLAR = `query($lat: Float!, $lng: Float!, $date: String!, $tz: String!) {
  solarEvents(lat: $lat, lng: $lng, date: $date, timeZone: $tz) { date timeZone sunrise sunset civilDawn civilDusk solarNoon polarDay polarNight } }`;
const PREVIEW = `query($siteId: ID, $deviceId: ID, $from: DateTime!, $to: DateTime!, $first: Int) {
  programPreview(siteId: $siteId, deviceId: $deviceId, from: $from, to: $to, firstLocations: $first) {
    devices unassignedDevices noTimeZoneDevices noLocationDevices locationCount
    locations { lat lng timeZone devices deviceIds assignment { id }
      events { at localTime kind level program { id } switchPoint override { id } overridden } }
    conflicts { kind message from to days program { id name } switchPoints overrides { id } }
  } }`;

const STREET = {
  name: 'Street lighting',
  switchPoints: [
    { at: 'SUNSET', offsetMinutes: -10, level: 100 },
    { at: 'FIXED', time: '00:30', level: 50, rampSeconds: 30 },
    { at: 'SUNRISE', offsetMinutes: 10, level: 0 },
  ],
};
const TRAP = {
  name: 'Morning boost',
  switchPoints: [
    { at: 'SUNSET', level: 100 },
    { at: 'FIXED', time: '23:00', level: 0 },
    { at: 'FIXED', time: '06:00', level: 100 },
    { at: 'SUNRISE', level: 0 },
  ],
};

const label = (id: string) => id.replaceAll('-', '_');

describe('programs in the rules subgraph', () => {
  let f: SubgraphFixture<ReturnType<typeof createRulesSubgraph>>;
  let orgA: string;
  let orgB: string;
  let operator: Identity;
  let viewer: Identity;
  let outsider: Identity;
  let city: string;
  let street: string;
  let lampProfile: string;
  const lamps: string[] = [];

  const create = async (input: Record<string, unknown>, as: Identity = operator) => (await f.ok(as, CREATE, { input })).createProgram;

  beforeAll(async () => {
    f = await subgraphFixture(createRulesSubgraph);
    orgA = await f.org();
    orgB = await f.org();
    operator = f.as(orgA, 'operator');
    viewer = f.as(orgA, 'viewer');
    outsider = f.as(orgB, 'admin');
    city = randomUUID();
    street = randomUUID();
    await f.t.db
      .insertInto('sites')
      .values([
        { id: city, org_id: orgA, name: 'Amsterdam', path: label(city), time_zone: 'Europe/Amsterdam' },
        { id: street, org_id: orgA, name: 'Damrak', parent_id: city, path: `${label(city)}.${label(street)}` },
      ])
      .execute();
    lampProfile = (
      await f.t.db.insertInto('device_profiles').values({ org_id: orgA, name: 'lamp' }).returning('id').executeTakeFirstOrThrow()
    ).id;
    for (let i = 0; i < 3; i++) {
      const r = await f.t.db
        .insertInto('devices')
        .values({
          org_id: orgA,
          serial: `SL-${i}`,
          name: `Lamp ${i}`,
          site_id: street,
          profile_id: lampProfile,
          // two in one location cell, one ~20 km away
          location: i < 2 ? `SRID=4326;POINT(4.89 52.37)` : `SRID=4326;POINT(4.62 52.38)`,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      lamps.push(r.id);
    }
  });

  afterAll(async () => {
    await f?.close();
  });

  describe('programs', () => {
    it('stores "on at sunset -10 min, 50 % at 00:30, off at sunrise +10 min" and reads it back, audited', async () => {
      const p = await create(STREET);
      expect(p).toMatchObject({
        name: 'Street lighting',
        description: '',
        createdBy: `user:${operator.subject}`,
        switchPoints: [
          { at: 'SUNSET', time: null, offsetMinutes: -10, level: 100, rampSeconds: 0 },
          { at: 'FIXED', time: '00:30', offsetMinutes: 0, level: 50, rampSeconds: 30 },
          { at: 'SUNRISE', time: null, offsetMinutes: 10, level: 0, rampSeconds: 0 },
        ],
      });
      expect((await f.ok(viewer, 'query($id: ID!) { program(id: $id) { id name } }', { id: p.id })).program).toEqual({
        id: p.id,
        name: p.name,
      });
      const audit = await f.t.db.selectFrom('audit_logs').select(['action', 'actor']).where('entity_id', '=', p.id).execute();
      expect(audit).toEqual([{ action: 'program.create', actor: `user:${operator.subject}` }]);
      expect(Number(await f.ctx.redis.get(programsVersionKey(f.ctx.config.REDIS_PREFIX, orgA)))).toBeGreaterThan(0);
    });

    it('refuses bad definitions with a clear error naming the field', async () => {
      const bad = async (input: Record<string, unknown>) => {
        const r = await f.run(operator, CREATE, { input });
        return [codes(r)[0], r.errors?.[0]?.message];
      };
      expect(await bad({ name: 'x', switchPoints: [{ at: 'FIXED', time: '25:00', level: 10 }] })).toEqual([
        'BAD_USER_INPUT',
        'input.switchPoints.0.time: must be HH:MM between 00:00 and 23:59',
      ]);
      expect(await bad({ name: 'x', switchPoints: [{ at: 'SUNSET', offsetMinutes: -600, level: 10 }] })).toEqual([
        'BAD_USER_INPUT',
        'input.switchPoints.0.offsetMinutes: must be between -240 and 240',
      ]);
      expect(await bad({ name: 'x', switchPoints: [{ at: 'SUNSET', level: 150 }] })).toEqual([
        'BAD_USER_INPUT',
        'input.switchPoints.0.level: must be between 0 and 100',
      ]);
      expect(await bad({ name: 'Street lighting', switchPoints: [{ at: 'SUNSET', level: 10 }] })).toEqual([
        'CONFLICT',
        'a program named "Street lighting" already exists',
      ]);
    });

    it('lets viewers read but not write, and API keys only with rules:write', async () => {
      expect(codes(await f.run(viewer, CREATE, { input: { ...STREET, name: 'v' } }))).toEqual(['FORBIDDEN']);
      const reader = f.as(orgA, 'admin', 'apikey', ['rules:read']);
      expect(codes(await f.run(reader, CREATE, { input: { ...STREET, name: 'k' } }))).toEqual(['FORBIDDEN']);
      const writer = f.as(orgA, 'admin', 'apikey', ['rules:write']);
      expect((await f.ok(writer, CREATE, { input: { ...STREET, name: 'Key program' } })).createProgram.name).toBe('Key program');
    });

    it('keeps organizations apart: another one sees none of them and cannot use them', async () => {
      const p = await create({ ...STREET, name: 'Private' });
      expect((await f.ok(outsider, 'query($id: ID!) { program(id: $id) { id } }', { id: p.id })).program).toBeNull();
      expect((await f.ok(outsider, '{ programs { id } }')).programs).toEqual([]);
      expect(codes(await f.run(outsider, UPDATE, { id: p.id, input: STREET }))).toEqual(['NOT_FOUND']);
      const r = await f.run(outsider, ASSIGN, { input: { programId: p.id, deviceId: lamps[0] } });
      expect(r.errors?.[0]?.message).toBe('programId: program not found');
      const cal = await f.run(outsider, CALENDAR, { input: { name: 'c', defaultProgramId: p.id } });
      expect(cal.errors?.[0]?.message).toBe('defaultProgramId: program not found');
    });

    it('replaces a definition, and refuses to delete a program while it is assigned', async () => {
      const p = await create({ ...STREET, name: 'Replace me' });
      const u = (await f.ok(operator, UPDATE, { id: p.id, input: { name: 'Replaced', switchPoints: [{ at: 'CIVIL_DUSK', level: 80 }] } }))
        .updateProgram;
      expect(u.switchPoints).toEqual([{ at: 'CIVIL_DUSK', time: null, offsetMinutes: 0, level: 80, rampSeconds: 0 }]);
      const a = (await f.ok(operator, ASSIGN, { input: { programId: p.id, deviceId: lamps[2] } })).assignProgram;
      const refused = await f.run(operator, DELETE, { id: p.id });
      expect([codes(refused)[0], refused.errors?.[0]?.message]).toEqual(['CONFLICT', 'program is assigned: unassign it first']);
      expect((await f.ok(operator, 'mutation($id: ID!) { unassignProgram(id: $id) }', { id: a.id })).unassignProgram).toBe(true);
      expect((await f.ok(operator, DELETE, { id: p.id })).deleteProgram).toBe(true);
      expect((await f.ok(viewer, 'query($id: ID!) { program(id: $id) { id } }', { id: p.id })).program).toBeNull();
    });
  });

  describe('calendars and assignments', () => {
    it('stores a calendar of TALQ rules with a default and resolves their programs', async () => {
      const normal = await create({ ...STREET, name: 'Normal' });
      const festive = await create({
        name: 'Festive',
        switchPoints: [
          { at: 'SUNSET', level: 100 },
          { at: 'SUNRISE', level: 0 },
        ],
      });
      const c = (
        await f.ok(operator, CALENDAR, {
          input: {
            name: 'City calendar',
            defaultProgramId: normal.id,
            rules: [
              { kind: 'DATE', from: '2026-12-24', to: '2026-12-26', programId: festive.id },
              { kind: 'YEARLY', month: 12, day: 31, programId: festive.id },
              { kind: 'NTH_WEEKDAY', n: -1, weekday: 6, months: [11], programId: festive.id },
              { kind: 'WEEKDAY', weekdays: [5, 6], programId: normal.id },
            ],
          },
        })
      ).createProgramCalendar;
      expect(c.defaultProgram).toEqual({ id: normal.id });
      expect(c.rules.map((r: { kind: string; program: { name: string } }) => [r.kind, r.program.name])).toEqual([
        ['DATE', 'Festive'],
        ['YEARLY', 'Festive'],
        ['NTH_WEEKDAY', 'Festive'],
        ['WEEKDAY', 'Normal'],
      ]);
      expect(c.rules[0]).toMatchObject({ from: '2026-12-24', to: '2026-12-26', month: null });
      const bad = await f.run(operator, CALENDAR, {
        input: { name: 'Bad', defaultProgramId: normal.id, rules: [{ kind: 'YEARLY', month: 2, day: 30, programId: normal.id }] },
      });
      expect(bad.errors?.[0]?.message).toBe('input.rules.0.day: month 2 has no day 30');
    });

    it('replaces the assignment of a scope, and refuses unknown scopes and half-given targets', async () => {
      const one = await create({ ...STREET, name: 'One' });
      const two = await create({ ...STREET, name: 'Two' });
      const first = (await f.ok(operator, ASSIGN, { input: { programId: one.id, siteId: city, profileId: lampProfile } })).assignProgram;
      const again = (await f.ok(operator, ASSIGN, { input: { programId: two.id, siteId: city, profileId: lampProfile } })).assignProgram;
      expect(again.id).toBe(first.id);
      expect(again.program).toEqual({ id: two.id });
      const msg = async (input: Record<string, unknown>) => (await f.run(operator, ASSIGN, { input })).errors?.[0]?.message;
      expect(await msg({ programId: one.id, siteId: randomUUID() })).toBe('siteId: site not found');
      expect(await msg({ programId: one.id })).toBe('input: give a siteId, a profileId (or both), or a deviceId');
      expect(await msg({ siteId: city })).toBe('input: give exactly one of programId and calendarId');
      expect(await msg({ programId: one.id, deviceId: lamps[0], siteId: city })).toBe(
        'input.deviceId: a device assignment takes no siteId or profileId',
      );
      await f.ok(operator, 'mutation($id: ID!) { unassignProgram(id: $id) }', { id: first.id });
    });
  });

  describe('solarEvents', () => {
    it("answers Amsterdam's sunrise and sunset for a local date, for any signed-in caller", async () => {
      const r = (
        await f.ok(f.as(orgB, 'viewer', 'apikey', ['devices:read']), SOLAR, {
          lat: 52.3676,
          lng: 4.9041,
          date: '2026-06-21',
          tz: 'europe/amsterdam',
        })
      ).solarEvents;
      expect(r).toMatchObject({ date: '2026-06-21', timeZone: 'Europe/Amsterdam', polarDay: false, polarNight: false });
      // NOAA: 05:18 and 22:06 CEST (lib/solar.test.ts)
      expect(Math.abs(Date.parse(r.sunrise) - Date.parse('2026-06-21T03:18:00Z'))).toBeLessThan(60_000);
      expect(Math.abs(Date.parse(r.sunset) - Date.parse('2026-06-21T20:06:00Z'))).toBeLessThan(60_000);
    });

    it('reports a polar day with no sunset, and refuses bad places, dates and zones', async () => {
      const r = (await f.ok(viewer, SOLAR, { lat: 69.65, lng: 18.96, date: '2026-06-21', tz: 'Europe/Oslo' })).solarEvents;
      expect(r).toMatchObject({ sunrise: null, sunset: null, polarDay: true });
      const msg = async (v: Record<string, unknown>) =>
        (await f.run(viewer, SOLAR, { lat: 52, lng: 4, date: '2026-06-21', tz: 'UTC', ...v })).errors?.[0]?.message;
      expect(await msg({ lat: 95 })).toBe('lat must be between -90 and 90');
      expect(await msg({ date: '2026-06-31' })).toBe('date: must be a date YYYY-MM-DD');
      expect(await msg({ tz: 'CEST' })).toBe('timeZone: not an IANA time zone (e.g. Europe/Amsterdam)');
    });
  });

  describe('programPreview', () => {
    const from = '2026-01-01T00:00:00+01:00';
    const to = '2027-01-01T00:00:00+01:00';

    it('lists every switch event per location for a year and flags the seasonal trap', async () => {
      const trap = await create(TRAP);
      const a = (await f.ok(operator, ASSIGN, { input: { programId: trap.id, siteId: street } })).assignProgram;
      const p = (await f.ok(viewer, PREVIEW, { siteId: city, from, to })).programPreview;
      expect(p).toMatchObject({ devices: 3, unassignedDevices: 0, noTimeZoneDevices: 0, noLocationDevices: 0, locationCount: 2 });
      expect(p.locations.map((l: { lat: number; lng: number; devices: number }) => [l.lat, l.lng, l.devices])).toEqual([
        [52.4, 4.9, 2],
        [52.4, 4.6, 1],
      ]);
      const events = p.locations[0].events;
      expect(events).toHaveLength(4 * 365);
      expect(events[0]).toMatchObject({ kind: 'PROGRAM', program: { id: trap.id }, overridden: false });
      expect(events.find((e: { localTime: string }) => e.localTime === '2026-06-21 23:00')).toMatchObject({ level: 0, switchPoint: 1 });
      const cross = p.conflicts.filter((c: { kind: string }) => c.kind === 'FIXED_CROSSES_SOLAR');
      expect(cross.length).toBeGreaterThan(0);
      expect(cross[0]).toMatchObject({ program: { id: trap.id, name: 'Morning boost' }, switchPoints: [2, 3] });
      expect(cross[0].from).toMatch(/^2026-05/);
      expect(p.conflicts.some((c: { kind: string }) => c.kind === 'NEVER_OFF')).toBe(true);
      await f.ok(operator, 'mutation($id: ID!) { unassignProgram(id: $id) }', { id: a.id });
    });

    it('shows an override taking over, the last one winning, and the program resuming; overlapping ones are flagged', async () => {
      const p = await create({ ...STREET, name: 'With overrides' });
      const a = (await f.ok(operator, ASSIGN, { input: { programId: p.id, deviceId: lamps[0] } })).assignProgram;
      const early = (
        await f.ok(operator, OVERRIDE, {
          input: {
            deviceId: lamps[0],
            level: 20,
            startsAt: '2027-06-21T22:00:00+02:00',
            expiresAt: '2027-06-22T03:00:00+02:00',
            reason: 'works',
          },
        })
      ).createProgramOverride;
      const late = (
        await f.ok(operator, OVERRIDE, {
          input: { siteId: street, level: 80, startsAt: '2027-06-21T23:00:00+02:00', expiresAt: '2027-06-22T01:00:00+02:00' },
        })
      ).createProgramOverride;
      expect(early).toMatchObject({ level: 20, reason: 'works', status: 'SCHEDULED', device: { id: lamps[0] }, site: null });
      const r = (await f.ok(viewer, PREVIEW, { deviceId: lamps[0], from: '2027-06-21T12:00:00+02:00', to: '2027-06-22T12:00:00+02:00' }))
        .programPreview;
      expect(r.locations).toHaveLength(1);
      expect(
        r.locations[0].events.map((e: { localTime: string; kind: string; level: number; overridden: boolean }) => [
          e.localTime,
          e.kind,
          e.level,
          e.overridden,
        ]),
      ).toEqual([
        ['2027-06-21 21:56', 'PROGRAM', 100, false],
        ['2027-06-21 22:00', 'OVERRIDE', 20, false],
        ['2027-06-21 23:00', 'OVERRIDE', 80, false],
        ['2027-06-22 00:30', 'PROGRAM', 50, true],
        ['2027-06-22 01:00', 'OVERRIDE', 20, false],
        ['2027-06-22 03:00', 'RESUME', 50, false],
        ['2027-06-22 05:28', 'PROGRAM', 0, false],
      ]);
      expect(r.conflicts).toMatchObject([{ kind: 'OVERLAPPING_OVERRIDES', overrides: [{ id: early.id }, { id: late.id }] }]);
      const canceled = (
        await f.ok(operator, 'mutation($id: ID!) { cancelProgramOverride(id: $id) { status canceledAt } }', { id: late.id })
      ).cancelProgramOverride;
      expect(canceled.status).toBe('CANCELED');
      await f.ok(operator, 'mutation($id: ID!) { cancelProgramOverride(id: $id) { id } }', { id: early.id });
      await f.ok(operator, 'mutation($id: ID!) { unassignProgram(id: $id) }', { id: a.id });
    });

    it('refuses overrides that end before they start or target nothing, and previews longer than a year', async () => {
      const msg = async (input: Record<string, unknown>) => (await f.run(operator, OVERRIDE, { input })).errors?.[0]?.message;
      expect(await msg({ deviceId: lamps[0], level: 10, startsAt: '2026-06-02T00:00:00Z', expiresAt: '2026-06-01T00:00:00Z' })).toBe(
        'input.expiresAt: must be after startsAt',
      );
      expect(await msg({ level: 10, expiresAt: '2027-01-01T00:00:00Z' })).toBe('input: give exactly one of siteId and deviceId');
      expect(await msg({ siteId: randomUUID(), level: 10, expiresAt: '2027-01-01T00:00:00Z' })).toBe('siteId: site not found');
      const long = await f.run(viewer, PREVIEW, { siteId: city, from: '2026-01-01T00:00:00Z', to: '2027-01-03T00:00:00Z' });
      expect(long.errors?.[0]?.message).toBe('to: a preview covers at most 366 days');
      const other = await f.run(outsider, PREVIEW, { siteId: city, from, to });
      expect(codes(other)).toEqual(['NOT_FOUND']);
    });

    it('counts devices it cannot schedule: no time zone anywhere up their sites', async () => {
      const lone = randomUUID();
      await f.t.db
        .insertInto('sites')
        .values({ id: lone, org_id: orgA, name: 'Nowhere', path: label(lone) })
        .execute();
      const d = await f.t.db
        .insertInto('devices')
        .values({
          org_id: orgA,
          serial: 'SL-lone',
          name: 'Lone',
          site_id: lone,
          profile_id: lampProfile,
          location: 'SRID=4326;POINT(4 52)',
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      const p = await create({ ...STREET, name: 'Lonely' });
      await f.ok(operator, ASSIGN, { input: { programId: p.id, siteId: lone } });
      const r = (await f.ok(viewer, PREVIEW, { siteId: lone, from, to })).programPreview;
      expect(r).toMatchObject({ devices: 1, noTimeZoneDevices: 1, locationCount: 0, locations: [] });
      expect(d.id).toBeTruthy();
    });
  });
});
