import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, isUniqueViolation, isUuid, type Tx, withTenant } from '../../../lib/db.js';
import { ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import { parseScheduleAction, type ScheduleAction, scheduleActionJson } from '../../../lib/schedule-actions.js';
import { nextOccurrence } from '../../../lib/schedules.js';

/**
 * SQL of the schedules part of the rules subgraph: cron schedules and their runs. Every statement
 * runs in a tenant transaction and filters `org_id`; writes are audited. `next_at` is computed here
 * (lib/schedules.ts) and advanced by the workers as they run occurrences.
 */

export interface ScheduleDefinition {
  name: string;
  description: string;
  enabled: boolean;
  cron: string;
  timeZone: string;
  action: ScheduleAction;
}

export interface ScheduleRow extends ScheduleDefinition {
  id: string;
  nextRunAt: Date | null;
  lastRunAt: Date | null;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

export interface ScheduleRunRow {
  occurrence: Date;
  startedAt: Date;
  status: 'succeeded' | 'failed' | 'skipped';
  result: unknown;
  error: string | null;
}

const columns = sql`id, name, description, enabled, cron, time_zone as "timeZone", action, next_at as "nextRunAt", last_at as "lastRunAt",
  created_by as "createdBy", created_at as "createdAt", updated_at as "updatedAt"`;

const toRow = (r: Record<string, unknown>): ScheduleRow => ({ ...(r as unknown as ScheduleRow), action: parseScheduleAction(r.action) });

/** The next occurrence after now of an enabled definition (null while disabled). */
const nextAt = (d: ScheduleDefinition, now = Date.now()) => {
  if (!d.enabled) return null;
  const t = nextOccurrence(d, now);
  return t === null ? null : new Date(t);
};

export class SchedulesRepository {
  constructor(private readonly db: Db) {}

  async list(orgId: string, limit: number): Promise<ScheduleRow[]> {
    return withTenant(this.db, orgId, async (tx) => {
      const { rows } = await sql<Record<string, unknown>>`select ${columns} from schedules where org_id = ${orgId}
        order by created_at desc, id desc limit ${limit}`.execute(tx);
      return rows.map(toRow);
    });
  }

  async byId(orgId: string, id: string): Promise<ScheduleRow | null> {
    if (!isUuid(id)) return null;
    return withTenant(this.db, orgId, (tx) => one(tx, orgId, id));
  }

  async runs(orgId: string, scheduleId: string, first: number): Promise<ScheduleRunRow[]> {
    return withTenant(this.db, orgId, async (tx) => {
      const { rows } = await sql<ScheduleRunRow>`
        select occurrence, started_at as "startedAt", status, result, error from schedule_runs
        where org_id = ${orgId} and schedule_id = ${scheduleId} order by occurrence desc limit ${first}`.execute(tx);
      return rows;
    });
  }

  /** Stores a schedule (audited); `check` validates the action's references inside the transaction. */
  async create(identity: Identity, def: ScheduleDefinition, check: (tx: Tx) => Promise<void>): Promise<ScheduleRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      await check(tx);
      const { rows } = await sql<Record<string, unknown>>`
        insert into schedules (org_id, name, description, enabled, cron, time_zone, action, next_at, created_by)
        values (${orgId}, ${def.name}, ${def.description}, ${def.enabled}, ${def.cron}, ${def.timeZone},
                ${scheduleActionJson(def.action)}::jsonb, ${nextAt(def)}, ${actorOf(identity)})
        returning ${columns}`
        .execute(tx)
        .catch(conflictOn(def.name));
      const row = toRow(rows[0] as Record<string, unknown>);
      await audit(tx, orgId, actorOf(identity), 'schedule.create', 'schedule', row.id, null, row);
      return row;
    });
  }

  /** Applies a patch (audited); the next occurrence is recomputed from now. */
  async update(
    identity: Identity,
    id: string,
    patch: (before: ScheduleDefinition) => ScheduleDefinition,
    check: (tx: Tx, def: ScheduleDefinition) => Promise<void>,
  ): Promise<ScheduleRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await one(tx, orgId, id, true);
      if (!before) throw new NotFoundError('schedule');
      const def = patch(before);
      await check(tx, def);
      const { rows } = await sql<Record<string, unknown>>`
        update schedules set name = ${def.name}, description = ${def.description}, enabled = ${def.enabled}, cron = ${def.cron},
          time_zone = ${def.timeZone}, action = ${scheduleActionJson(def.action)}::jsonb, next_at = ${nextAt(def)}, updated_at = now()
        where org_id = ${orgId} and id = ${id}
        returning ${columns}`
        .execute(tx)
        .catch(conflictOn(def.name));
      const after = toRow(rows[0] as Record<string, unknown>);
      await audit(tx, orgId, actorOf(identity), 'schedule.update', 'schedule', id, before, after);
      return after;
    });
  }

  async delete(identity: Identity, id: string): Promise<void> {
    const orgId = identity.orgId;
    await withTenant(this.db, orgId, async (tx) => {
      const before = await one(tx, orgId, id, true);
      if (!before) throw new NotFoundError('schedule');
      await sql`delete from schedules where org_id = ${orgId} and id = ${id}`.execute(tx);
      await audit(tx, orgId, actorOf(identity), 'schedule.delete', 'schedule', id, before, null);
    });
  }
}

async function one(tx: Tx, orgId: string, id: string, lock = false): Promise<ScheduleRow | null> {
  if (!isUuid(id)) return null;
  const { rows } = await sql<Record<string, unknown>>`select ${columns} from schedules where org_id = ${orgId} and id = ${id}
    ${lock ? sql`for update` : sql``}`.execute(tx);
  return rows[0] ? toRow(rows[0]) : null;
}

const conflictOn = (name: string) => (e: unknown) => {
  if (isUniqueViolation(e)) throw new ConflictError(`a schedule named "${name}" already exists`);
  throw e;
};
