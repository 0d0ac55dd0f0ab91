import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { bumpProgramsVersion } from '../../../lib/contracts/program-state.js';
import { type Db, isUniqueViolation, isUuid, type Tx, tenantReadRows, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { Logger } from '../../../lib/logger.js';
import { type CalendarDefinition, type CalendarRule, programsOf, type SwitchPoint } from '../../../lib/programs.js';
import type { Redis } from '../../../lib/redis.js';

/**
 * Programs and calendars (their definitions, validated by lib/programs.ts before they get here).
 * Every statement runs in a tenant transaction and filters `org_id` itself; every committed write is
 * audited and bumps the organization's programs version (lib/contracts/program-state.ts), so the
 * scheduler replans at once.
 */

export interface ProgramRow {
  id: string;
  name: string;
  description: string;
  switchPoints: SwitchPoint[];
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
}

export interface CalendarRow extends CalendarDefinition {
  id: string;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

/**
 * Most programs (and calendars) an organization lists.
 * @default 500
 */
export const MAX_PROGRAMS = 500;

const programColumns = [
  'id',
  'name',
  'description',
  'switch_points as switchPoints',
  'created_by as createdBy',
  'created_at as createdAt',
  'updated_at as updatedAt',
  'deleted_at as deletedAt',
] as const;

const calendarColumns = [
  'id',
  'name',
  'description',
  'default_program_id as defaultProgramId',
  'rules',
  'created_by as createdBy',
  'created_at as createdAt',
  'updated_at as updatedAt',
] as const;

/** Bumps the organization's programs version after a committed change; a Redis failure is logged (the scheduler replans on its interval). */
export class ProgramsVersion {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly logger?: Logger,
  ) {}

  /** `fn` in a tenant transaction of the identity's organization, then the version bump (after commit). */
  async write<T>(db: Db, identity: Identity, fn: (tx: Tx, orgId: string) => Promise<T>): Promise<T> {
    const r = await withTenant(db, identity.orgId, (tx) => fn(tx, identity.orgId));
    await this.bump(identity.orgId);
    return r;
  }

  async bump(orgId: string): Promise<void> {
    try {
      await bumpProgramsVersion(this.redis, this.prefix, orgId);
    } catch (e) {
      this.logger?.warn({ err: e, orgId }, 'could not bump the programs version');
    }
  }
}

const conflictOn = (what: string, name: string) => (e: unknown) => {
  if (isUniqueViolation(e)) throw new ConflictError(`a ${what} named "${name}" already exists`);
  throw e;
};

export class ProgramsRepository {
  constructor(
    private readonly db: Db,
    private readonly version: ProgramsVersion,
  ) {}

  /** Programs of `orgId` among `ids` (deleted ones included, so old references still resolve). */
  async programsByIds(orgId: string, ids: readonly string[]): Promise<ProgramRow[]> {
    const valid = [...new Set(ids.filter(isUuid))];
    if (!valid.length) return [];
    const q = this.db.selectFrom('programs').select(programColumns).where('org_id', '=', orgId).where('id', 'in', valid);
    return tenantReadRows<ProgramRow>(this.db, orgId, q.compile());
  }

  /** Undeleted programs, by name. */
  listPrograms(orgId: string): Promise<ProgramRow[]> {
    const q = this.db
      .selectFrom('programs')
      .select(programColumns)
      .where('org_id', '=', orgId)
      .where('deleted_at', 'is', null)
      .orderBy('name')
      .limit(MAX_PROGRAMS);
    return tenantReadRows<ProgramRow>(this.db, orgId, q.compile());
  }

  async createProgram(identity: Identity, def: { name: string; description: string; switchPoints: SwitchPoint[] }): Promise<ProgramRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      const created = (await tx
        .insertInto('programs')
        .values({
          org_id: orgId,
          name: def.name,
          description: def.description,
          switch_points: JSON.stringify(def.switchPoints),
          created_by: actorOf(identity),
        })
        .returning(programColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn('program', def.name))) as unknown as ProgramRow;
      await audit(tx, orgId, actorOf(identity), 'program.create', 'program', created.id, null, created);
      return created;
    });
  }

  async updateProgram(
    identity: Identity,
    id: string,
    def: { name: string; description: string; switchPoints: SwitchPoint[] },
  ): Promise<ProgramRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      const before = await liveProgram(tx, orgId, id);
      const after = (await tx
        .updateTable('programs')
        .set({ name: def.name, description: def.description, switch_points: JSON.stringify(def.switchPoints), updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(programColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn('program', def.name))) as unknown as ProgramRow;
      await audit(tx, orgId, actorOf(identity), 'program.update', 'program', id, before, after);
      return after;
    });
  }

  /** Soft-deletes a program; CONFLICT while a calendar or an assignment uses it. */
  async deleteProgram(identity: Identity, id: string): Promise<void> {
    await this.version.write(this.db, identity, async (tx, orgId) => {
      const before = await liveProgram(tx, orgId, id);
      const { rows } = await sql<{ what: string; name: string | null }>`
        select 'calendar' as what, c.name from program_calendars c
        where c.org_id = ${orgId} and c.deleted_at is null
          and (c.default_program_id = ${id} or c.rules @> ${JSON.stringify([{ programId: id }])}::jsonb)
        union all
        select 'assignment', null from program_assignments a where a.org_id = ${orgId} and a.program_id = ${id}
        limit 1`.execute(tx);
      const use = rows[0];
      if (use) {
        throw new ConflictError(
          use.what === 'calendar' ? `program is used by calendar "${use.name}"` : 'program is assigned: unassign it first',
        );
      }
      const after = await tx
        .updateTable('programs')
        .set({ deleted_at: sql`now()`, updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(programColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'program.delete', 'program', id, before, after);
    });
  }

  async calendarsByIds(orgId: string, ids: readonly string[]): Promise<CalendarRow[]> {
    const valid = [...new Set(ids.filter(isUuid))];
    if (!valid.length) return [];
    const q = this.db.selectFrom('program_calendars').select(calendarColumns).where('org_id', '=', orgId).where('id', 'in', valid);
    return tenantReadRows<CalendarRow>(this.db, orgId, q.compile());
  }

  listCalendars(orgId: string): Promise<CalendarRow[]> {
    const q = this.db
      .selectFrom('program_calendars')
      .select(calendarColumns)
      .where('org_id', '=', orgId)
      .where('deleted_at', 'is', null)
      .orderBy('name')
      .limit(MAX_PROGRAMS);
    return tenantReadRows<CalendarRow>(this.db, orgId, q.compile());
  }

  async createCalendar(identity: Identity, def: CalendarDefinition): Promise<CalendarRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      await assertPrograms(tx, orgId, def);
      const created = (await tx
        .insertInto('program_calendars')
        .values({
          org_id: orgId,
          name: def.name,
          description: def.description,
          default_program_id: def.defaultProgramId,
          rules: JSON.stringify(def.rules),
          created_by: actorOf(identity),
        })
        .returning(calendarColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn('calendar', def.name))) as unknown as CalendarRow;
      await audit(tx, orgId, actorOf(identity), 'program_calendar.create', 'program_calendar', created.id, null, created);
      return created;
    });
  }

  async updateCalendar(identity: Identity, id: string, def: CalendarDefinition): Promise<CalendarRow> {
    return this.version.write(this.db, identity, async (tx, orgId) => {
      const before = await liveCalendar(tx, orgId, id);
      await assertPrograms(tx, orgId, def);
      const after = (await tx
        .updateTable('program_calendars')
        .set({
          name: def.name,
          description: def.description,
          default_program_id: def.defaultProgramId,
          rules: JSON.stringify(def.rules),
          updated_at: sql`now()`,
        })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(calendarColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn('calendar', def.name))) as unknown as CalendarRow;
      await audit(tx, orgId, actorOf(identity), 'program_calendar.update', 'program_calendar', id, before, after);
      return after;
    });
  }

  /** Soft-deletes a calendar; CONFLICT while an assignment uses it. */
  async deleteCalendar(identity: Identity, id: string): Promise<void> {
    await this.version.write(this.db, identity, async (tx, orgId) => {
      const before = await liveCalendar(tx, orgId, id);
      const used = await tx
        .selectFrom('program_assignments')
        .select('id')
        .where('org_id', '=', orgId)
        .where('calendar_id', '=', id)
        .executeTakeFirst();
      if (used) throw new ConflictError('calendar is assigned: unassign it first');
      await tx
        .updateTable('program_calendars')
        .set({ deleted_at: sql`now()`, updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .execute();
      await audit(tx, orgId, actorOf(identity), 'program_calendar.delete', 'program_calendar', id, before, null);
    });
  }
}

/** An undeleted program, locked for the rest of the transaction; NOT_FOUND otherwise. */
async function liveProgram(tx: Tx, orgId: string, id: string): Promise<ProgramRow> {
  const row = await tx
    .selectFrom('programs')
    .select(programColumns)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .forUpdate()
    .executeTakeFirst();
  if (!row) throw new NotFoundError('program');
  return row as unknown as ProgramRow;
}

async function liveCalendar(tx: Tx, orgId: string, id: string): Promise<CalendarRow> {
  const row = await tx
    .selectFrom('program_calendars')
    .select(calendarColumns)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .forUpdate()
    .executeTakeFirst();
  if (!row) throw new NotFoundError('calendar');
  return row as unknown as CalendarRow;
}

/** BAD_USER_INPUT naming the field when a program a calendar chooses is not one of the organization's undeleted programs. */
async function assertPrograms(tx: Tx, orgId: string, def: Pick<CalendarDefinition, 'defaultProgramId' | 'rules'>): Promise<void> {
  const ids = programsOf(def);
  const found = new Set(
    (
      await tx
        .selectFrom('programs')
        .select('id')
        .where('org_id', '=', orgId)
        .where('id', 'in', ids)
        .where('deleted_at', 'is', null)
        .forShare()
        .execute()
    ).map((r) => r.id),
  );
  if (!found.has(def.defaultProgramId)) throw new BadInputError('defaultProgramId: program not found', { field: 'defaultProgramId' });
  def.rules.forEach((r: CalendarRule, i) => {
    if (!found.has(r.programId)) throw new BadInputError(`rules.${i}.programId: program not found`, { field: `rules.${i}.programId` });
  });
}
