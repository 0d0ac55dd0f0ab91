import { randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../../lib/db.js';
import { parseProgram } from '../../lib/programs.js';
import { siteLabel } from '../../lib/sites.js';

/**
 * The organization, site, lamps (and lighting program) that the rules, programs and schedules tests
 * start from, written straight to the database (the APIs are tested on their own). Every call makes a
 * new organization with its own ids (random slug and uuids), so tests sharing a database never see
 * each other's rows.
 */

/** The city's time zone, at 52.37 N 4.9 E. */
export const CITY_TIME_ZONE = 'Europe/Amsterdam';

export interface CityOptions {
  /** lamps, serials `SL-0`, `SL-1`…, names `Lamp 0`… @default 2 */
  lamps?: number;
  /** the city has a time zone and a location (programs compute sun times from them) @default false */
  located?: boolean;
  /** the lamps stand on a street (`Damrak`, no zone of its own) below the city, not in the city itself @default false */
  street?: boolean;
  /** a lighting program (`parseProgram`'s input) assigned to the city */
  program?: unknown;
}

export interface City {
  orgId: string;
  /** the top site */
  cityId: string;
  /** the site the lamps stand on: the street, or the city */
  siteId: string;
  /** the lamps' ids, in serial order */
  lamps: string[];
  /** the assigned program, when one was asked for */
  programId?: string;
}

/** A new organization (random slug); its id. */
export async function seedOrg(db: Db): Promise<string> {
  const o = await db
    .insertInto('organizations')
    .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
    .returning('id')
    .executeTakeFirstOrThrow();
  return o.id;
}

/** A new organization with a city site and its lamps, see {@link CityOptions}. */
export async function seedCity(db: Db, o: CityOptions = {}): Promise<City> {
  const orgId = await seedOrg(db);
  const cityId = randomUUID();
  await sql`insert into sites (id, org_id, name, path, time_zone, location)
    values (${cityId}, ${orgId}, 'City', ${siteLabel(cityId)}::ltree,
            ${o.located ? CITY_TIME_ZONE : null}, ${o.located ? 'SRID=4326;POINT(4.9 52.37)' : null}::geography)`.execute(db);
  let siteId = cityId;
  if (o.street) {
    siteId = randomUUID();
    await db
      .insertInto('sites')
      .values({ id: siteId, org_id: orgId, name: 'Damrak', path: `${siteLabel(cityId)}.${siteLabel(siteId)}` })
      .execute();
  }
  const lamps = Array.from({ length: o.lamps ?? 2 }, () => randomUUID());
  if (lamps.length)
    await db
      .insertInto('devices')
      .values(lamps.map((id, i) => ({ id, org_id: orgId, serial: `SL-${i}`, name: `Lamp ${i}`, site_id: siteId })))
      .execute();
  if (o.program === undefined) return { orgId, cityId, siteId, lamps };
  const program = parseProgram(o.program);
  const p = await db
    .insertInto('programs')
    .values({ org_id: orgId, name: program.name, switch_points: JSON.stringify(program.switchPoints), created_by: 'test' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db.insertInto('program_assignments').values({ org_id: orgId, program_id: p.id, site_id: cityId, created_by: 'test' }).execute();
  return { orgId, cityId, siteId, lamps, programId: p.id };
}

/** "On at sunset, off at sunrise": the program the programs tests assign unless they test another. */
export const SUNSET_TO_SUNRISE = {
  name: 'p',
  switchPoints: [
    { at: 'sunset', level: 100 },
    { at: 'sunrise', level: 0 },
  ],
};
