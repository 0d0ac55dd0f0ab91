import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_PROGRAM, seedDemo } from '../cli/seed.js';
import { loadConfig } from '../lib/config.js';
import { createSubgraph as createRulesSubgraph } from '../subgraphs/rules/index.js';
import { type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';

describe('the demo seed runs a street-lighting program in the demo city', () => {
  let f: SubgraphFixture<ReturnType<typeof createRulesSubgraph>>;
  const cfg = loadConfig({ NODE_ENV: 'test' });

  beforeAll(async () => {
    f = await subgraphFixture(createRulesSubgraph);
  });
  afterAll(() => f.close());

  it('assigns "on at sunset -10 min, 50 % at 00:30, off at sunrise +10 min" to the city (once, however often it runs)', async () => {
    const { orgId } = await seedDemo(cfg, { devices: 40, db: f.t.db, password: 'demo-password-1', quiet: true });
    await seedDemo(cfg, { devices: 40, db: f.t.db, password: 'demo-password-2', quiet: true });
    const viewer = f.as(orgId, 'viewer');
    const { programs, programAssignments } = await f.ok(
      viewer,
      '{ programs { id name switchPoints { at time offsetMinutes level } } programAssignments { program { name } site { id } } }',
    );
    expect(programs).toHaveLength(1);
    expect(programs[0]).toMatchObject({
      name: DEMO_PROGRAM.name,
      switchPoints: [
        { at: 'SUNSET', time: null, offsetMinutes: -10, level: 100 },
        { at: 'FIXED', time: '00:30', offsetMinutes: 0, level: 50 },
        { at: 'SUNRISE', time: null, offsetMinutes: 10, level: 0 },
      ],
    });
    expect(programAssignments).toHaveLength(1);
    const city = await f.t.db
      .selectFrom('sites')
      .select(['id', 'time_zone'])
      .where('org_id', '=', orgId)
      .where('parent_id', 'is', null)
      .executeTakeFirstOrThrow();
    expect(city.time_zone).toBe('Europe/Amsterdam');
    expect(programAssignments[0].site).toEqual({ id: city.id });
    const p = await f.ok(
      viewer,
      `query($id: ID!) { programPreview(siteId: $id, from: "2027-03-27T12:00:00+01:00", to: "2027-03-28T12:00:00+02:00") {
        devices unassignedDevices locations { devices events { localTime level } } conflicts { kind } } }`,
      { id: city.id },
    );
    expect(p.programPreview.devices).toBeGreaterThanOrEqual(40);
    expect(p.programPreview.unassignedDevices).toBe(0);
    expect(p.programPreview.conflicts).toEqual([]);
    // across the spring-forward night (27 to 28 March 2027): sunset -10 in CET, 00:30, sunrise +10 in CEST
    const events = p.programPreview.locations[0].events.map((e: { localTime: string; level: number }) => [e.localTime, e.level]);
    expect(events.map((e: [string, number]) => e[1])).toEqual([100, 50, 0]);
    expect(events[0][0]).toMatch(/^2027-03-27 18:5\d$/);
    expect(events[1][0]).toBe('2027-03-28 00:30');
    expect(events[2][0]).toMatch(/^2027-03-28 07:[34]\d$/);
  });
});
