import { type Kysely, sql } from 'kysely';
import type { DB } from '../lib/db.js';
import { parseProgram } from '../lib/programs.js';
import { siteLabel } from '../lib/sites.js';

/** The benches' city (Amsterdam): where the lamps stand and whose sunset starts the program. */
export const BENCH_CITY = { lat: 52.3702, lng: 4.8952, timeZone: 'Europe/Amsterdam' };
/** The benches' one site. */
export const BENCH_SITE = '00000000-0000-4000-8000-0000000000c1';

/**
 * The device ids of one bench:programs run: a per-run tag of 8 hex digits, then the lamp's number,
 * so the simulated lamps know the run's devices from the topic alone (`devices/{id}/commands`).
 */
export const benchDeviceId = (tag: string, i: number) => `${tag}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;

/** The benches' one program (on at sunset, off at sunrise), assigned to `siteId`. */
export async function assignStreetLighting(db: Kysely<DB>, orgId: string, siteId: string): Promise<void> {
  const program = parseProgram({
    name: 'Street lighting',
    switchPoints: [
      { at: 'sunset', level: 100 },
      { at: 'sunrise', level: 0 },
    ],
  });
  const p = await db
    .insertInto('programs')
    .values({ org_id: orgId, name: program.name, switch_points: JSON.stringify(program.switchPoints), created_by: 'bench' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db.insertInto('program_assignments').values({ org_id: orgId, program_id: p.id, site_id: siteId, created_by: 'bench' }).execute();
}

/**
 * The benches' organization `bench`: one site in {@link BENCH_CITY} and `lamps` lamps spread over about
 * 5 km around it (all in one location cell), ids {@link benchDeviceId} of `tag`. Returns the organization's id.
 */
export async function seedBenchCity(db: Kysely<DB>, tag: string, lamps: number): Promise<string> {
  const org = await db.insertInto('organizations').values({ slug: 'bench', name: 'Bench' }).returning('id').executeTakeFirstOrThrow();
  const { lat, lng, timeZone } = BENCH_CITY;
  await sql`insert into sites (id, org_id, name, path, time_zone, location)
    values (${BENCH_SITE}, ${org.id}, 'City', ${siteLabel(BENCH_SITE)}::ltree, ${timeZone}, st_setsrid(st_makepoint(${lng}, ${lat}), 4326)::geography)`.execute(
    db,
  );
  await sql`
    insert into devices (id, org_id, serial, name, site_id, location)
    select (${tag} || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, ${org.id}, 'SL-' || lpad(i::text, 6, '0'), 'Lamp ' || i, ${BENCH_SITE},
           st_setsrid(st_makepoint(${lng} + ((i % 300) - 150) * 0.0001, ${lat} + ((i / 300 % 300) - 150) * 0.0001), 4326)::geography
    from generate_series(0, ${lamps - 1}) i`.execute(db);
  return org.id;
}
