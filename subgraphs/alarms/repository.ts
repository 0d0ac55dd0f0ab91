import { type RawBuilder, type Selectable, sql } from 'kysely';
import { type AlarmChange, afterAction, statusOf, statusPredicate } from '../../lib/alarms.js';
import { actorOf, audit } from '../../lib/audit.js';
import { type Db, type Tx, tenantReadRows, withTenant } from '../../lib/db.js';
import { NotFoundError } from '../../lib/errors.js';
import type { Identity } from '../../lib/identity.js';
import type { Severity } from '../../lib/rules.js';
import type { Alarms } from '../../schema/db.js';
import type { AlarmCursor, AlarmFilterInput } from './validation.js';

/** One `alarms` row as the resolvers read it. */
export type AlarmRow = Selectable<Alarms>;

/** A page row of `alarms`: the row and its `raised_at` as text at full precision (for the cursor). */
export type AlarmPageRow = AlarmRow & { raised_at_text: string };

export interface AlarmEventRow {
  alarm_id: string;
  at: Date;
  kind: AlarmChange;
  actor: string;
  value: number | null;
  note: string | null;
}

export interface AlarmCountsRow {
  active: number;
  unacknowledged: number;
  critical: number;
  major: number;
  minor: number;
  warning: number;
  indeterminate: number;
}

/** Where an alarm's device sits, for the real-time event's filter. */
export interface DeviceSite {
  siteId: string | null;
  /** the site's ltree path as text, null when the device has no site */
  sitePath: string | null;
}

/** What a mutation did, for the event published after commit (`change` null: nothing changed). */
export interface AlarmWrite {
  row: AlarmRow;
  change: AlarmChange | null;
  site: DeviceSite;
}

const COLUMNS = [
  'id',
  'org_id',
  'device_id',
  'rule_id',
  'type',
  'severity',
  'message',
  'value',
  'reading_ts',
  'occurrences',
  'raised_at',
  'last_at',
  'raised_by',
  'acknowledged_at',
  'acknowledged_by',
  'cleared_at',
  'cleared_by',
] as const;
const ALARM = sql.raw(COLUMNS.map((c) => `a.${c}`).join(', '));

/** Devices of a site and its whole subtree (a site of another organization matches nothing). */
const siteSubtree = (orgId: string, siteId: string) =>
  sql`select d.id from devices d join sites s on s.id = d.site_id
      where d.org_id = ${orgId} and s.org_id = ${orgId}
        and s.path <@ (select path from sites where id = ${siteId} and org_id = ${orgId})`;

function filterConditions(orgId: string, f: AlarmFilterInput): RawBuilder<unknown>[] {
  const where = [sql`a.org_id = ${orgId}`];
  if (f.status?.length) {
    const any = f.status.map((s) => {
      const p = statusPredicate(s);
      return sql`(a.cleared_at is ${sql.raw(p.cleared ? 'not null' : 'null')} and a.acknowledged_at is ${sql.raw(p.acknowledged ? 'not null' : 'null')})`;
    });
    where.push(sql`(${sql.join(any, sql` or `)})`);
  }
  if (f.severity?.length) where.push(sql`a.severity = any(${f.severity}::text[])`);
  if (f.deviceId) where.push(sql`a.device_id = ${f.deviceId}`);
  if (f.siteId) where.push(sql`a.device_id in (${siteSubtree(orgId, f.siteId)})`);
  if (f.ruleId) where.push(sql`a.rule_id = ${f.ruleId}`);
  if (f.type != null) where.push(sql`a.type = ${f.type}`);
  if (f.raisedAfter) where.push(sql`a.raised_at >= ${f.raisedAfter}`);
  if (f.raisedBefore) where.push(sql`a.raised_at < ${f.raisedBefore}`);
  return where;
}

/**
 * All SQL of the alarms subgraph. Every read runs in a read-only tenant transaction sent as one round
 * trip (`tenantRead`), every write inside `withTenant` (row-level security both ways), AND each
 * statement filters `org_id` itself, so a leak needs both a forgotten filter and a forgotten policy; one
 * method is one transaction. Raw SQL because the statements (upserts, window functions, ltree) are
 * clearer written out than built.
 */
export class AlarmsRepository {
  constructor(private readonly db: Db) {}

  private tenant<T>(orgId: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return withTenant(this.db, orgId, fn);
  }

  /** One read-only statement in one round trip (`tenantRead`: the same row-level security as `withTenant`). */
  private read<T>(orgId: string, q: RawBuilder<T>): Promise<T[]> {
    return tenantReadRows<T>(this.db, orgId, q.compile(this.db));
  }

  /** Alarms of `orgId` among `ids` (other organizations' and unknown ids drop out). */
  async byIds(orgId: string, ids: readonly string[]): Promise<AlarmRow[]> {
    const rows = await this.read(
      orgId,
      sql<AlarmRow>`select ${ALARM} from alarms a where a.org_id = ${orgId} and a.id = any(${ids}::uuid[])`,
    );
    return rows;
  }

  /** History entries of many alarms, oldest first per alarm. */
  async history(orgId: string, alarmIds: readonly string[]): Promise<AlarmEventRow[]> {
    const rows = await this.read(
      orgId,
      sql<AlarmEventRow>`
        select alarm_id, at, kind, actor, value, note from alarm_events
        where org_id = ${orgId} and alarm_id = any(${alarmIds}::uuid[])
        order by alarm_id, id`,
    );
    return rows;
  }

  /** The newest `first` alarms of each device (only active or only cleared ones when `active` is set). */
  async ofDevices(orgId: string, deviceIds: readonly string[], first: number, active: boolean | null): Promise<AlarmRow[]> {
    const state = active === null ? sql`` : sql`and a.cleared_at is ${sql.raw(active ? 'null' : 'not null')}`;
    const rows = await this.read(
      orgId,
      sql<AlarmRow>`
        select ${ALARM} from (
          select ${ALARM}, row_number() over (partition by a.device_id order by a.raised_at desc, a.id desc) as rn
          from alarms a
          where a.org_id = ${orgId} and a.device_id = any(${deviceIds}::uuid[]) ${state}
        ) a
        where a.rn <= ${first}
        order by a.device_id, a.raised_at desc, a.id desc`,
    );
    return rows;
  }

  /** Active alarms per device, for the devices among `deviceIds` that have any. */
  async activeCounts(orgId: string, deviceIds: readonly string[]): Promise<Map<string, number>> {
    const rows = await this.read(
      orgId,
      sql<{ device_id: string; n: number }>`
        select device_id, count(*)::int as n from alarms
        where org_id = ${orgId} and device_id = any(${deviceIds}::uuid[]) and cleared_at is null
        group by device_id`,
    );
    return new Map(rows.map((r) => [r.device_id, r.n]));
  }

  /** The worst severity among each device's active (not cleared) alarms; devices without one are absent. */
  async worstActiveSeverities(orgId: string, deviceIds: readonly string[]): Promise<Map<string, string>> {
    const rows = await this.read(
      orgId,
      sql<{ device_id: string; severity: string }>`
        select device_id,
          (array['critical', 'major', 'minor', 'warning', 'indeterminate'])[
            min(array_position(array['critical', 'major', 'minor', 'warning', 'indeterminate'], severity::text))
          ] as severity
        from alarms
        where org_id = ${orgId} and device_id = any(${deviceIds}::uuid[]) and cleared_at is null
        group by device_id`,
    );
    return new Map(rows.map((r) => [r.device_id, r.severity]));
  }

  /** One page of `alarms`, newest first, keyset-paginated on (raised_at, id); `limit` rows at most. */
  async list(orgId: string, o: { limit: number; after?: AlarmCursor | undefined; filter: AlarmFilterInput }): Promise<AlarmPageRow[]> {
    const where = filterConditions(orgId, o.filter);
    if (o.after) where.push(sql`(a.raised_at, a.id) < (${o.after.raisedAt}::timestamptz, ${o.after.id}::uuid)`);
    const rows = await this.read(
      orgId,
      sql<AlarmPageRow>`
        select ${ALARM}, a.raised_at::text as raised_at_text from alarms a
        where ${sql.join(where, sql` and `)}
        order by a.raised_at desc, a.id desc
        limit ${o.limit}`,
    );
    return rows;
  }

  async count(orgId: string, filter: AlarmFilterInput): Promise<number> {
    const rows = await this.read(
      orgId,
      sql<{ n: number }>`select count(*)::int as n from alarms a where ${sql.join(filterConditions(orgId, filter), sql` and `)}`,
    );
    return rows[0]?.n ?? 0;
  }

  /** Active alarms of the organization, or of a site subtree, in total and per severity. */
  async counts(orgId: string, siteId: string | null): Promise<AlarmCountsRow> {
    const site = siteId ? sql`and a.device_id in (${siteSubtree(orgId, siteId)})` : sql``;
    const perSeverity = (s: Severity) => sql`count(*) filter (where a.severity = ${s})::int as ${sql.ref(s)}`;
    const rows = await this.read(
      orgId,
      sql<AlarmCountsRow>`
        select count(*)::int as active,
               count(*) filter (where a.acknowledged_at is null)::int as unacknowledged,
               ${perSeverity('critical')}, ${perSeverity('major')}, ${perSeverity('minor')},
               ${perSeverity('warning')}, ${perSeverity('indeterminate')}
        from alarms a
        where a.org_id = ${orgId} and a.cleared_at is null ${site}`,
    );
    return rows[0] as AlarmCountsRow;
  }

  /**
   * Raises an alarm by hand, or, when the device already has an active alarm of this type, counts
   * one more occurrence on it (new severity; new message when one is given). NOT_FOUND when the
   * device is not the caller's.
   */
  raise(identity: Identity, input: { deviceId: string; type: string; severity: Severity; message?: string | null | undefined }) {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    return this.tenant(orgId, async (tx): Promise<AlarmWrite> => {
      const site = await this.deviceSite(tx, orgId, input.deviceId);
      if (!site) throw new NotFoundError('device');
      const message = input.message ?? null;
      const { rows } = await sql<AlarmRow & { inserted: boolean }>`
        insert into alarms as a (org_id, device_id, type, severity, message, raised_by)
        values (${orgId}, ${input.deviceId}, ${input.type}, ${input.severity}, coalesce(${message}::text, ''), ${actor})
        on conflict (org_id, device_id, type) where cleared_at is null do update
          set occurrences = a.occurrences + 1, last_at = now(), severity = excluded.severity,
              message = coalesce(${message}::text, a.message)
        returning ${ALARM}, (xmax = 0) as inserted`.execute(tx);
      const { inserted, ...row } = rows[0] as AlarmRow & { inserted: boolean };
      if (inserted) await this.addEvent(tx, row, 'raised', actor, message || null);
      await audit(tx, orgId, actor, 'alarm.raise', 'alarm', row.id, null, row);
      return { row, change: inserted ? 'raised' : null, site };
    });
  }

  /**
   * Acknowledges or clears an alarm under a row lock; repeating the action changes nothing (no
   * history, `change` null). NOT_FOUND when the alarm is not the caller's.
   */
  act(identity: Identity, id: string, action: 'acknowledge' | 'clear', note: string | null): Promise<AlarmWrite> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    return this.tenant(orgId, async (tx) => {
      const before = await this.alarmIn(tx, orgId, id, true);
      const site = (await this.deviceSite(tx, orgId, before.device_id)) ?? { siteId: null, sitePath: null };
      if (afterAction(statusOf(before), action) === null) return { row: before, change: null, site };
      const [at, by, change, auditAction] =
        action === 'acknowledge'
          ? (['acknowledged_at', 'acknowledged_by', 'acknowledged', 'alarm.acknowledge'] as const)
          : (['cleared_at', 'cleared_by', 'cleared', 'alarm.clear'] as const);
      const { rows } = await sql<AlarmRow>`
        update alarms a set ${sql.ref(at)} = now(), ${sql.ref(by)} = ${actor}
        where a.org_id = ${orgId} and a.id = ${id}
        returning ${ALARM}`.execute(tx);
      const row = rows[0] as AlarmRow;
      await this.addEvent(tx, row, change, actor, note);
      await audit(tx, orgId, actor, auditAction, 'alarm', id, before, row);
      return { row, change, site };
    });
  }

  /** Adds a comment to an alarm's history. NOT_FOUND when the alarm is not the caller's. */
  comment(identity: Identity, id: string, text: string): Promise<AlarmWrite> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    return this.tenant(orgId, async (tx) => {
      const row = await this.alarmIn(tx, orgId, id, false);
      const site = (await this.deviceSite(tx, orgId, row.device_id)) ?? { siteId: null, sitePath: null };
      await this.addEvent(tx, row, 'commented', actor, text);
      await audit(tx, orgId, actor, 'alarm.comment', 'alarm', id, null, { text });
      return { row, change: 'commented', site };
    });
  }

  private async alarmIn(tx: Tx, orgId: string, id: string, lock: boolean): Promise<AlarmRow> {
    const { rows } = await sql<AlarmRow>`
      select ${ALARM} from alarms a where a.org_id = ${orgId} and a.id = ${id} ${lock ? sql`for update` : sql``}`.execute(tx);
    const row = rows[0];
    if (!row) throw new NotFoundError('alarm');
    return row;
  }

  /** The device's site, or undefined when the device is not one of `orgId`'s. */
  private async deviceSite(tx: Tx, orgId: string, deviceId: string): Promise<DeviceSite | undefined> {
    const { rows } = await sql<{ site_id: string | null; path: string | null }>`
      select d.site_id, s.path::text as path
      from devices d left join sites s on s.id = d.site_id and s.org_id = ${orgId}
      where d.org_id = ${orgId} and d.id = ${deviceId}`.execute(tx);
    const r = rows[0];
    return r && { siteId: r.site_id, sitePath: r.path };
  }

  private async addEvent(tx: Tx, row: AlarmRow, kind: AlarmChange, actor: string, note: string | null): Promise<void> {
    await sql`
      insert into alarm_events (org_id, alarm_id, kind, actor, value, note)
      values (${row.org_id}, ${row.id}, ${kind}, ${actor}, ${kind === 'raised' ? row.value : null}, ${note})`.execute(tx);
  }
}
