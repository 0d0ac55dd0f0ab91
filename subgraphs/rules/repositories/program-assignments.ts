import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, isUuid, type Tx, tenantRead, tenantReadRows } from '../../../lib/db.js';
import { BadInputError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { PlacedDevice, SiteInfo } from '../../../lib/programs-assign.js';
import type { ProgramsVersion } from './programs.js';

/**
 * Assignments of programs and calendars to scopes, overrides, and what a preview reads: the devices
 * of a scope with their sites. Tenant transactions, `org_id` filtered, audited, version bumped.
 */

export interface AssignmentRow {
  id: string;
  programId: string | null;
  calendarId: string | null;
  siteId: string | null;
  profileId: string | null;
  deviceId: string | null;
  createdBy: string;
  createdAt: Date;
}

export interface OverrideRow {
  id: string;
  siteId: string | null;
  deviceId: string | null;
  level: number;
  startsAt: Date;
  expiresAt: Date;
  reason: string;
  createdBy: string;
  createdAt: Date;
  canceledAt: Date | null;
  startedAt: Date | null;
  endedAt: Date | null;
}

export interface AssignInput {
  programId: string | null;
  calendarId: string | null;
  siteId: string | null;
  profileId: string | null;
  deviceId: string | null;
}

export interface OverrideInput {
  siteId: string | null;
  deviceId: string | null;
  level: number;
  startsAt: Date;
  expiresAt: Date;
  reason: string;
}

/** What a preview needs of its scope: the devices (in service), every site, assignments and overrides. */
export interface PreviewScope {
  devices: PlacedDevice[];
  sites: SiteInfo[];
  assignments: AssignmentRow[];
  overrides: (OverrideRow & { sitePath: string | null })[];
}

/**
 * Most devices a preview reads.
 * @default 200000
 */
export const PREVIEW_DEVICE_CAP = 200_000;

const assignmentColumns = [
  'id',
  'program_id as programId',
  'calendar_id as calendarId',
  'site_id as siteId',
  'profile_id as profileId',
  'device_id as deviceId',
  'created_by as createdBy',
  'created_at as createdAt',
] as const;

const overrideColumns = [
  'id',
  'site_id as siteId',
  'device_id as deviceId',
  'level',
  'starts_at as startsAt',
  'expires_at as expiresAt',
  'reason',
  'created_by as createdBy',
  'created_at as createdAt',
  'canceled_at as canceledAt',
  'started_at as startedAt',
  'ended_at as endedAt',
] as const;

export class ProgramAssignmentsRepository {
  constructor(
    private readonly db: Db,
    private readonly version: ProgramsVersion,
  ) {}

  async assignmentsByIds(orgId: string, ids: readonly string[]): Promise<AssignmentRow[]> {
    const valid = [...new Set(ids.filter(isUuid))];
    if (!valid.length) return [];
    const q = this.db.selectFrom('program_assignments').select(assignmentColumns).where('org_id', '=', orgId).where('id', 'in', valid);
    return tenantReadRows<AssignmentRow>(this.db, orgId, q.compile());
  }

  /** Assignments, all or those of one site (itself, not its subtree) or one device. */
  listAssignments(orgId: string, f: { siteId?: string | undefined; deviceId?: string | undefined }): Promise<AssignmentRow[]> {
    let q = this.db.selectFrom('program_assignments').select(assignmentColumns).where('org_id', '=', orgId);
    if (f.siteId) q = q.where('site_id', '=', f.siteId);
    if (f.deviceId) q = q.where('device_id', '=', f.deviceId);
    return tenantReadRows<AssignmentRow>(this.db, orgId, q.orderBy('created_at').orderBy('id').limit(10_000).compile());
  }

  /** Assigns a program or calendar to a scope, replacing that scope's assignment (audited either way). */
  async assign(identity: Identity, input: AssignInput): Promise<AssignmentRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      await assertRefs(tx, orgId, input);
      const existing = await tx
        .selectFrom('program_assignments')
        .select(assignmentColumns)
        .where('org_id', '=', orgId)
        .where(sql<boolean>`site_id is not distinct from ${input.siteId}::uuid`)
        .where(sql<boolean>`profile_id is not distinct from ${input.profileId}::uuid`)
        .where(sql<boolean>`device_id is not distinct from ${input.deviceId}::uuid`)
        .forUpdate()
        .executeTakeFirst();
      if (existing) {
        const after = (await tx
          .updateTable('program_assignments')
          .set({ program_id: input.programId, calendar_id: input.calendarId, created_by: actorOf(identity), created_at: sql`now()` })
          .where('org_id', '=', orgId)
          .where('id', '=', existing.id)
          .returning(assignmentColumns)
          .executeTakeFirstOrThrow()) as AssignmentRow;
        await audit(tx, orgId, actorOf(identity), 'program.assign', 'program_assignment', after.id, existing, after);
        return after;
      }
      const created = (await tx
        .insertInto('program_assignments')
        .values({
          org_id: orgId,
          program_id: input.programId,
          calendar_id: input.calendarId,
          site_id: input.siteId,
          profile_id: input.profileId,
          device_id: input.deviceId,
          created_by: actorOf(identity),
        })
        .returning(assignmentColumns)
        .executeTakeFirstOrThrow()) as AssignmentRow;
      await audit(tx, orgId, actorOf(identity), 'program.assign', 'program_assignment', created.id, null, created);
      return created;
    });
  }

  async unassign(identity: Identity, id: string): Promise<void> {
    await this.version.write(this.db, identity, async (tx, orgId) => {
      const before = await tx
        .deleteFrom('program_assignments')
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(assignmentColumns)
        .executeTakeFirst();
      if (!before) throw new NotFoundError('assignment');
      await audit(tx, orgId, actorOf(identity), 'program.unassign', 'program_assignment', id, before, null);
    });
  }

  async overridesByIds(orgId: string, ids: readonly string[]): Promise<OverrideRow[]> {
    const valid = [...new Set(ids.filter(isUuid))];
    if (!valid.length) return [];
    const q = this.db.selectFrom('program_overrides').select(overrideColumns).where('org_id', '=', orgId).where('id', 'in', valid);
    return tenantReadRows<OverrideRow>(this.db, orgId, q.compile());
  }

  /** Overrides newest first; `active`: not ended and not canceled. */
  listOverrides(orgId: string, o: { active?: boolean | undefined; first: number }): Promise<OverrideRow[]> {
    let q = this.db.selectFrom('program_overrides').select(overrideColumns).where('org_id', '=', orgId);
    if (o.active) q = q.where('canceled_at', 'is', null).where('expires_at', '>', sql<Date>`now()`);
    return tenantReadRows<OverrideRow>(this.db, orgId, q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(o.first).compile());
  }

  async createOverride(identity: Identity, input: OverrideInput): Promise<OverrideRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      await assertRefs(tx, orgId, input);
      const created = (await tx
        .insertInto('program_overrides')
        .values({
          org_id: orgId,
          site_id: input.siteId,
          device_id: input.deviceId,
          level: input.level,
          starts_at: input.startsAt,
          expires_at: input.expiresAt,
          reason: input.reason,
          created_by: actorOf(identity),
        })
        .returning(overrideColumns)
        .executeTakeFirstOrThrow()) as OverrideRow;
      await audit(tx, orgId, actorOf(identity), 'program_override.create', 'program_override', created.id, null, created);
      return created;
    });
  }

  /** Cancels an override that has not ended; the scheduler applies its end at once. Repeating it changes nothing. */
  async cancelOverride(identity: Identity, id: string): Promise<OverrideRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      const before = (await tx
        .selectFrom('program_overrides')
        .select(overrideColumns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst()) as OverrideRow | undefined;
      if (!before) throw new NotFoundError('override');
      if (before.canceledAt || before.endedAt || before.expiresAt.getTime() <= Date.now()) return before;
      const after = (await tx
        .updateTable('program_overrides')
        .set({ canceled_at: sql`clock_timestamp()`, canceled_by: actorOf(identity) })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(overrideColumns)
        .executeTakeFirstOrThrow()) as OverrideRow;
      await audit(tx, orgId, actorOf(identity), 'program_override.cancel', 'program_override', id, before, after);
      return after;
    });
  }

  /**
   * The in-service devices of a site's subtree (or one device) with their site and location, every
   * site of the organization (for inherited time zones and locations), the assignments and the
   * overrides that reach into `[from, to)`. NOT_FOUND when the site or device is not the organization's.
   */
  async previewScope(orgId: string, scope: { siteId?: string; deviceId?: string }, from: Date, to: Date): Promise<PreviewScope> {
    const [root] = await tenantRead(this.db, orgId, [
      scope.siteId
        ? sql`select path::text as path from sites where org_id = ${orgId} and id = ${scope.siteId}`.compile(this.db)
        : sql`select id from devices where org_id = ${orgId} and id = ${scope.deviceId ?? null} and decommissioned_at is null`.compile(
            this.db,
          ),
    ]);
    if (!root?.length) throw new NotFoundError(scope.siteId ? 'site' : 'device');
    const sitePath = scope.siteId ? String(root[0]?.path) : null;
    const [devices, sites, assignments, overrides] = await tenantRead(this.db, orgId, [
      sql`
        select d.id, d.profile_id as "profileId", d.site_id as "siteId", s.path::text as "sitePath",
               case when d.location is null then null else st_y(d.location::geometry) end as lat,
               case when d.location is null then null else st_x(d.location::geometry) end as lng
        from devices d left join sites s on s.id = d.site_id and s.org_id = ${orgId}
        where d.org_id = ${orgId} and d.decommissioned_at is null
          ${sitePath ? sql`and s.path <@ ${sitePath}::ltree` : sql`and d.id = ${scope.deviceId ?? null}`}
        limit ${PREVIEW_DEVICE_CAP}`.compile(this.db),
      sql`
        select id, path::text as path, time_zone as "timeZone",
               case when location is null then null else st_y(location::geometry) end as lat,
               case when location is null then null else st_x(location::geometry) end as lng
        from sites where org_id = ${orgId}`.compile(this.db),
      this.db.selectFrom('program_assignments').select(assignmentColumns).where('org_id', '=', orgId).compile(),
      sql`
        select o.id, o.site_id as "siteId", o.device_id as "deviceId", o.level, o.starts_at as "startsAt",
               o.expires_at as "expiresAt", o.reason, o.created_by as "createdBy", o.created_at as "createdAt",
               o.canceled_at as "canceledAt", o.started_at as "startedAt", o.ended_at as "endedAt", s.path::text as "sitePath"
        from program_overrides o left join sites s on s.id = o.site_id and s.org_id = ${orgId}
        where o.org_id = ${orgId} and o.starts_at < ${to} and least(o.expires_at, coalesce(o.canceled_at, o.expires_at)) > ${from}`.compile(
        this.db,
      ),
    ]);
    return {
      devices: devices as unknown as PlacedDevice[],
      sites: sites as unknown as SiteInfo[],
      assignments: assignments as unknown as AssignmentRow[],
      overrides: overrides as unknown as PreviewScope['overrides'],
    };
  }
}

/** BAD_USER_INPUT naming the field when a referenced program, calendar, site, profile or device is not the organization's. */
async function assertRefs(
  tx: Tx,
  orgId: string,
  refs: Partial<Pick<AssignInput, 'programId' | 'calendarId' | 'siteId' | 'profileId' | 'deviceId'>>,
): Promise<void> {
  const checks: [keyof typeof refs, string, string, string][] = [
    ['programId', 'programs', 'program', 'and deleted_at is null'],
    ['calendarId', 'program_calendars', 'calendar', 'and deleted_at is null'],
    ['siteId', 'sites', 'site', ''],
    ['profileId', 'device_profiles', 'device profile', ''],
    ['deviceId', 'devices', 'device', 'and decommissioned_at is null'],
  ];
  for (const [field, table, what, extra] of checks) {
    const id = refs[field];
    if (!id) continue;
    const { rows } = await sql`select 1 from ${sql.table(table)} where org_id = ${orgId} and id = ${id} ${sql.raw(extra)}`.execute(tx);
    if (!rows.length) throw new BadInputError(`${field}: ${what} not found`, { field });
  }
}
