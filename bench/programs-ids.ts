import type { Kysely } from 'kysely';
import type { DB } from '../lib/db.js';
import { parseProgram } from '../lib/programs.js';

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
