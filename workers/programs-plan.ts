import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { type Db, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import { calendarRuleSchema, type SwitchPoint, switchPointsSchema } from '../lib/programs.js';
import {
  AssignmentIndex,
  type AssignmentScope,
  inheritance,
  inSubtree,
  type PlacedDevice,
  type Plan,
  plan,
  type SiteInfo,
} from '../lib/programs-assign.js';
import { type OverrideWindow, type Schedule, scheduleFor, winningOverride } from '../lib/programs-schedule.js';

/**
 * An organization's program plan as the scheduler and the detectors use it: its devices grouped into
 * location clusters (lib/programs-assign.ts), each assignment's schedule, and the overrides in force.
 * Read in one tenant transaction; stored definitions are parsed with the same schemas the rules
 * subgraph validated them with, and one that no longer parses is left out and counted (its
 * assignment does not run) rather than guessed.
 */

const unreadable = counter('rulr_programs_unreadable_total', 'Stored programs or calendars that no longer parse, left out of plans', [
  'kind',
]);

export interface AssignmentRow extends AssignmentScope {
  programId: string | null;
  calendarId: string | null;
}

export interface OrgPlan {
  orgId: string;
  plan: Plan;
  devices: Map<string, PlacedDevice>;
  /** site id → its ltree path */
  sitePaths: Map<string, string>;
  /** assignment id → its schedule (null: it needs a program or calendar that is gone or unreadable) and a hash of it */
  schedules: Map<string, { schedule: Schedule | null; hash: string }>;
}

/** Reads and plans one organization (devices in service only). */
export async function loadOrgPlan(db: Db, orgId: string, cellDegrees: number, logger?: Logger): Promise<OrgPlan> {
  return withTenant(db, orgId, async (tx) => {
    const sites = (
      await sql<SiteInfo>`
        select id, path::text as path, time_zone as "timeZone",
               case when location is null then null else st_y(location::geometry) end as lat,
               case when location is null then null else st_x(location::geometry) end as lng
        from sites where org_id = ${orgId}`.execute(tx)
    ).rows;
    const devices = (
      await sql<PlacedDevice>`
        select d.id, d.profile_id as "profileId", d.site_id as "siteId", s.path::text as "sitePath",
               case when d.location is null then null else st_y(d.location::geometry) end as lat,
               case when d.location is null then null else st_x(d.location::geometry) end as lng
        from devices d left join sites s on s.id = d.site_id and s.org_id = ${orgId}
        where d.org_id = ${orgId} and d.decommissioned_at is null`.execute(tx)
    ).rows;
    const assignments = (
      await sql<AssignmentRow>`
        select id, program_id as "programId", calendar_id as "calendarId", site_id as "siteId",
               profile_id as "profileId", device_id as "deviceId"
        from program_assignments where org_id = ${orgId}`.execute(tx)
    ).rows;
    const programRows = (
      await sql<{ id: string; switch_points: unknown }>`
        select id, switch_points from programs where org_id = ${orgId} and deleted_at is null`.execute(tx)
    ).rows;
    const calendarRows = (
      await sql<{ id: string; default_program_id: string; rules: unknown }>`
        select id, default_program_id, rules from program_calendars where org_id = ${orgId} and deleted_at is null`.execute(tx)
    ).rows;

    const programs = new Map<string, { switchPoints: SwitchPoint[] }>();
    for (const p of programRows) {
      const r = switchPointsSchema.safeParse(p.switch_points);
      if (r.success) programs.set(p.id, { switchPoints: r.data });
      else {
        unreadable.inc({ kind: 'program' });
        logger?.warn({ orgId, programId: p.id }, 'stored program does not parse: its assignments do not run');
      }
    }
    const calendars = new Map<string, { defaultProgramId: string; rules: ReturnType<typeof calendarRuleSchema.parse>[] }>();
    for (const c of calendarRows) {
      const r = calendarRuleSchema.array().safeParse(c.rules);
      if (r.success) calendars.set(c.id, { defaultProgramId: c.default_program_id, rules: r.data });
      else {
        unreadable.inc({ kind: 'calendar' });
        logger?.warn({ orgId, calendarId: c.id }, 'stored calendar does not parse: its assignments do not run');
      }
    }
    const schedules = new Map<string, { schedule: Schedule | null; hash: string }>();
    for (const a of assignments) {
      const schedule = scheduleFor(a, calendars, programs);
      schedules.set(a.id, { schedule, hash: hashOf(schedule) });
    }
    const placed = plan(new AssignmentIndex(assignments), inheritance(sites), devices, cellDegrees);
    return {
      orgId,
      plan: placed,
      devices: new Map(devices.map((d) => [d.id, d])),
      sitePaths: new Map(sites.map((s) => [s.id, s.path])),
      schedules,
    };
  });
}

/** A stable digest of what a schedule does, so a replan can tell an edited program from an unchanged one. */
function hashOf(schedule: Schedule | null): string {
  if (!schedule) return 'none';
  const programs = [...schedule.programs].sort(([a], [b]) => (a < b ? -1 : 1));
  return createHash('sha256')
    .update(JSON.stringify({ calendar: schedule.calendar, programs }))
    .digest('base64url')
    .slice(0, 22);
}

/** An override row as the scheduler reads it. */
export interface OverrideRow extends OverrideWindow {
  siteId: string | null;
  deviceId: string | null;
}

/** Does an override reach a device (its site subtree, or the device itself)? */
export function reaches(
  o: Pick<OverrideRow, 'siteId' | 'deviceId'>,
  device: PlacedDevice,
  sitePaths: ReadonlyMap<string, string>,
): boolean {
  if (o.deviceId) return o.deviceId === device.id;
  const path = o.siteId ? sitePaths.get(o.siteId) : undefined;
  return path !== undefined && inSubtree(device.sitePath, path);
}

/** The devices of `ids` that an override in force at `t` reaches, with the winning override of each. */
export function overridden(
  ids: readonly string[],
  overrides: readonly OverrideRow[],
  t: number,
  p: Pick<OrgPlan, 'devices' | 'sitePaths'>,
): Map<string, OverrideRow> {
  const out = new Map<string, OverrideRow>();
  const active = overrides.filter((o) => o.startsAt <= t && (o.expiresAt === null || t < o.expiresAt));
  if (!active.length) return out;
  for (const id of ids) {
    const d = p.devices.get(id);
    if (!d) continue;
    const mine = active.filter((o) => reaches(o, d, p.sitePaths));
    const win = winningOverride(mine, t) as OverrideRow | null;
    if (win) out.set(id, win);
  }
  return out;
}
