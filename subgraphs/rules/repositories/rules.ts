import { type CompiledQuery, type SelectQueryBuilder, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { storedSpecs } from '../../../lib/commands.js';
import { latestKey, numericLatest } from '../../../lib/contracts/device-state.js';
import { alarmChangedEvent, eventsChannel } from '../../../lib/contracts/events.js';
import { parseRuleStats, type RuleStats, ruleStatsKey, rulesVersionKey } from '../../../lib/contracts/rule-state.js';
import { type DB, type Db, isUniqueViolation, isUuid, type Tx, tenantReadRows, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { Logger } from '../../../lib/logger.js';
import type { Redis } from '../../../lib/redis.js';
import { checkActionsAgainstSpecs } from '../../../lib/rule-actions.js';
import type { Sample } from '../../../lib/rule-expr.js';
import { assertDefinition, type RuleCursor, type RuleDefinition, type RulePatch, ruleMetrics } from '../validation.js';

/**
 * SQL and Redis access of the rules subgraph. Every statement runs in a tenant transaction
 * (`withTenant`, or `tenantRead` for read-only batches) AND filters `org_id` itself. Each committed
 * write bumps the organization's rules version in Redis, so evaluation workers reload at once.
 */

/**
 * Devices a dry run looks at, at most.
 * @default 10000
 */
export const DRY_RUN_DEVICE_CAP = 10_000;
/** HGETs per Redis pipeline of a dry run. */
const LATEST_CHUNK = 1000;

/** A rule as the resolvers see it (enums in their lower-case database form). */
export interface RuleRow extends RuleDefinition {
  id: string;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
}

/** A rule row of a `rules` page, with its sort key. */
export interface RulePageRow extends RuleRow {
  /** `created_at` at full (microsecond) precision, for the cursor */
  createdAtText: string;
}

export interface RuleFilter {
  enabled?: boolean | undefined;
  metric?: string | undefined;
  search?: string | undefined;
}

export interface ExecutionRow {
  ruleId: string;
  at: Date;
  readings: number;
  matched: number;
  raised: number;
  cleared: number;
}

export type { RuleStats };

/** A device's latest numeric value of one metric (booleans as 1/0), as the status cache holds it. */
export interface LatestValue {
  deviceId: string;
  value: number;
  ts: Date;
}

/** One device's latest numeric samples of the metrics asked for (those it has). */
export interface DeviceLatest {
  deviceId: string;
  latest: Record<string, Sample>;
}

export interface ScopeReadings {
  /** devices in scope that were looked at (at most {@link DRY_RUN_DEVICE_CAP}) */
  devicesInScope: number;
  truncated: boolean;
  /** every device looked at, in serial order */
  devices: DeviceLatest[];
}

/**
 * Stored readings a windowed dry run replays, at most.
 * @default 200000
 */
export const DRY_RUN_READING_CAP = 200_000;

export interface WindowReadings {
  devicesInScope: number;
  /** more devices or readings than the caps */
  truncated: boolean;
  readings: number;
  /** per device in scope (serial order), its readings oldest first */
  byDevice: Map<string, { metric: string; ts: number; value: number }[]>;
}

const ruleColumns = [
  'id',
  'name',
  'description',
  'enabled',
  'kind',
  'metric',
  'operator',
  'threshold',
  'clear_threshold as clearThreshold',
  'expression',
  'for_seconds as forSeconds',
  'repeat_count as repeatCount',
  'window_seconds as windowSeconds',
  'no_data_seconds as noDataSeconds',
  'clear_on_disable as clearOnDisable',
  'notify',
  'actions',
  'severity',
  'alarm_type as alarmType',
  'auto_clear as autoClear',
  'site_id as siteId',
  'profile_id as profileId',
  'created_by as createdBy',
  'created_at as createdAt',
  'updated_at as updatedAt',
  'deleted_at as deletedAt',
] as const;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

export class RulesRepository {
  constructor(
    private readonly db: Db,
    private readonly redis: Redis,
    /** `REDIS_PREFIX` */
    private readonly prefix: string,
    private readonly logger?: Logger,
  ) {}

  /** One read-only statement in a tenant transaction, sent as one round trip. */
  private read(orgId: string, query: CompiledQuery): Promise<Record<string, unknown>[]> {
    return tenantReadRows(this.db, orgId, query);
  }

  private rulesQuery(orgId: string) {
    return this.db.selectFrom('rules').select(ruleColumns).where('org_id', '=', orgId);
  }

  private filtered<O>(q: SelectQueryBuilder<DB, 'rules', O>, f: RuleFilter) {
    let out = q.where('deleted_at', 'is', null);
    if (f.enabled !== undefined) out = out.where('enabled', '=', f.enabled);
    if (f.metric !== undefined) out = out.where('metric', '=', f.metric);
    if (f.search) out = out.where('name', 'ilike', `%${escapeLike(f.search)}%`);
    return out;
  }

  /** Rules of `orgId` among `ids` (deleted ones included: alarms keep pointing to them), in one statement. */
  async byIds(orgId: string, ids: readonly string[]): Promise<RuleRow[]> {
    const valid = [...new Set(ids.filter(isUuid))];
    if (!valid.length) return [];
    const rows = await this.read(orgId, this.rulesQuery(orgId).where('id', 'in', valid).compile());
    return rows as unknown as RuleRow[];
  }

  /** One page of undeleted rules, newest first, keyset-paginated on (created_at, id); `limit` rows at most. */
  async list(orgId: string, o: { limit: number; after?: RuleCursor | undefined; filter: RuleFilter }): Promise<RulePageRow[]> {
    let q = this.filtered(this.rulesQuery(orgId).select(sql<string>`created_at::text`.as('createdAtText')), o.filter);
    if (o.after) q = q.where(sql<boolean>`(created_at, id) < (${o.after[0]}::timestamptz, ${o.after[1]}::uuid)`);
    const rows = await this.read(orgId, q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(o.limit).compile());
    return rows as unknown as RulePageRow[];
  }

  /** How many undeleted rules match `filter`. */
  async count(orgId: string, filter: RuleFilter): Promise<number> {
    const q = this.filtered(
      this.db
        .selectFrom('rules')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('org_id', '=', orgId),
      filter,
    );
    const rows = await this.read(orgId, q.compile());
    return Number(rows[0]?.n ?? 0);
  }

  /** The newest `first` executions of each rule, for many rules in one statement (newest first per rule). */
  async executions(orgId: string, keys: readonly { ruleId: string; first: number }[]): Promise<ExecutionRow[]> {
    const valid = keys.filter((k) => isUuid(k.ruleId));
    if (!valid.length) return [];
    const q = sql<ExecutionRow>`
      select k.rule_id as "ruleId", e.at, e.readings, e.matched, e.raised, e.cleared
      from unnest(${valid.map((k) => k.ruleId)}::uuid[], ${valid.map((k) => k.first)}::int[]) with ordinality as k(rule_id, n, ord)
      cross join lateral (
        select id, at, readings, matched, raised, cleared from rule_executions x
        where x.org_id = ${orgId} and x.rule_id = k.rule_id
        order by x.id desc limit k.n
      ) e
      order by k.ord, e.id desc`;
    const rows = await this.read(orgId, q.compile(this.db));
    return rows as unknown as ExecutionRow[];
  }

  /** Stores a new rule (audited); CONFLICT when an undeleted rule of the organization has the same name. */
  async create(identity: Identity, def: RuleDefinition): Promise<RuleRow> {
    const orgId = identity.orgId;
    const row = await withTenant(this.db, orgId, async (tx) => {
      await assertRefs(tx, orgId, def);
      await assertMetrics(tx, orgId, def);
      await assertActions(tx, orgId, def);
      const created = await tx
        .insertInto('rules')
        .values({
          org_id: orgId,
          ...definitionColumns(def),
          created_by: actorOf(identity),
        })
        .returning(ruleColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn(def.name));
      const r = created as RuleRow;
      await audit(tx, orgId, actorOf(identity), 'rule.create', 'rule', r.id, null, r);
      return r;
    });
    await this.bumpVersion(orgId);
    return row;
  }

  /** Applies `patch` to an undeleted rule (audited); the merged condition must still be usable. */
  async update(identity: Identity, id: string, patch: RulePatch): Promise<RuleRow> {
    const orgId = identity.orgId;
    const row = await withTenant(this.db, orgId, async (tx) => {
      const before = await liveRule(tx, orgId, id);
      const next = { ...before, ...patch };
      next.actions ??= [];
      // an EXPRESSION rule's metric follows its expression unless the patch names one
      if (next.kind === 'expression' && patch.metric === undefined) next.metric = '';
      const merged = assertDefinition(next);
      await assertRefs(tx, orgId, patch);
      await assertMetrics(tx, orgId, merged);
      await assertActions(tx, orgId, merged);
      const after = (await tx
        .updateTable('rules')
        .set({ ...definitionColumns(merged), updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(ruleColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn(merged.name))) as RuleRow;
      await audit(tx, orgId, actorOf(identity), 'rule.update', 'rule', id, before, after);
      // shape changes drop the per-device state (it was kept for another condition)
      if (shapeChanged(before, after)) await sql`delete from rule_device_state where org_id = ${orgId} and rule_id = ${id}`.execute(tx);
      const cleared = before.enabled && !after.enabled && after.clearOnDisable ? await clearRuleAlarms(tx, orgId, id, 'disabled') : [];
      return { after, cleared };
    });
    await this.bumpVersion(orgId);
    await this.publishCleared(orgId, row.cleared);
    return row.after;
  }

  /** Soft-deletes an undeleted rule (audited): it stops evaluating, its alarms keep their rule. */
  async delete(identity: Identity, id: string): Promise<void> {
    const orgId = identity.orgId;
    const cleared = await withTenant(this.db, orgId, async (tx) => {
      const before = await liveRule(tx, orgId, id);
      const after = (await tx
        .updateTable('rules')
        .set({ deleted_at: sql`now()`, updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(ruleColumns)
        .executeTakeFirstOrThrow()) as RuleRow;
      await audit(tx, orgId, actorOf(identity), 'rule.delete', 'rule', id, before, after);
      await sql`delete from rule_device_state where org_id = ${orgId} and rule_id = ${id}`.execute(tx);
      return after.clearOnDisable ? clearRuleAlarms(tx, orgId, id, 'deleted') : [];
    });
    await this.bumpVersion(orgId);
    await this.publishCleared(orgId, cleared);
  }

  /** `alarmChanged` CLEARED for alarms a rule's disable or delete cleared (after commit; a failure is logged). */
  private async publishCleared(orgId: string, cleared: ClearedAlarm[]): Promise<void> {
    if (!cleared.length) return;
    const p = this.redis.pipeline();
    const now = Date.now();
    for (const a of cleared) {
      p.publish(
        eventsChannel(this.prefix, orgId),
        alarmChangedEvent(orgId, 'cleared', { id: a.id, deviceId: a.deviceId, severity: a.severity }, a, now),
      );
    }
    await p.exec().catch((e: unknown) => this.logger?.warn({ err: e, orgId }, 'could not publish cleared alarms'));
  }

  /**
   * The latest numeric values of `metrics` of the active devices in a rule's scope (site subtree
   * and/or profile), at most {@link DRY_RUN_DEVICE_CAP} devices in serial order. Reads only.
   */
  async scopeReadings(
    orgId: string,
    scope: Pick<RuleDefinition, 'siteId' | 'profileId'>,
    metrics: readonly string[],
  ): Promise<ScopeReadings> {
    const ids = await this.scopeDevices(orgId, scope);
    const truncated = ids.length > DRY_RUN_DEVICE_CAP;
    const inScope = truncated ? ids.slice(0, DRY_RUN_DEVICE_CAP) : ids;
    const devices: DeviceLatest[] = [];
    const per = Math.max(1, Math.floor(LATEST_CHUNK / metrics.length));
    for (let i = 0; i < inScope.length; i += per) {
      const chunk = inScope.slice(i, i + per);
      const p = this.redis.pipeline();
      for (const id of chunk) p.hmget(latestKey(this.prefix, id), ...metrics);
      const res = (await p.exec()) ?? [];
      chunk.forEach((deviceId, j) => {
        const raw = (res[j]?.[1] ?? []) as (string | null)[];
        const latest: Record<string, Sample> = {};
        metrics.forEach((m, k) => {
          const reading = numericLatest(raw[k]);
          if (reading) latest[m] = [reading.ts, reading.value];
        });
        devices.push({ deviceId, latest });
      });
    }
    return { devicesInScope: inScope.length, truncated, devices };
  }

  /** Ids of the active devices in a scope, serial order, at most {@link DRY_RUN_DEVICE_CAP} + 1. */
  private scopeDevices(orgId: string, scope: Pick<RuleDefinition, 'siteId' | 'profileId'>): Promise<string[]> {
    return withTenant(this.db, orgId, async (tx) => {
      await assertRefs(tx, orgId, scope);
      const { rows } = await sql<{ id: string }>`
        select d.id from devices d
        ${
          scope.siteId
            ? sql`join sites s on s.id = d.site_id and s.org_id = ${orgId}
                  and s.path <@ (select path from sites where id = ${scope.siteId} and org_id = ${orgId})`
            : sql``
        }
        where d.org_id = ${orgId} and d.decommissioned_at is null
          ${scope.profileId ? sql`and d.profile_id = ${scope.profileId}` : sql``}
        order by d.serial
        limit ${DRY_RUN_DEVICE_CAP + 1}`.execute(tx);
      return rows.map((r) => r.id);
    });
  }

  /**
   * The stored numeric readings of `metrics` in [from, to] of the devices in a scope (booleans are
   * stored as 1/0 in `value`), at most {@link DRY_RUN_READING_CAP}, oldest first per device.
   */
  async windowReadings(
    orgId: string,
    scope: Pick<RuleDefinition, 'siteId' | 'profileId'>,
    metrics: readonly string[],
    from: Date,
    to: Date,
  ): Promise<WindowReadings> {
    const ids = await this.scopeDevices(orgId, scope);
    const truncatedDevices = ids.length > DRY_RUN_DEVICE_CAP;
    const inScope = truncatedDevices ? ids.slice(0, DRY_RUN_DEVICE_CAP) : ids;
    const rows = await withTenant(this.db, orgId, async (tx) => {
      const { rows } = await sql<{ device_id: string; metric: string; ts: number; value: number }>`
        select device_id, metric, (extract(epoch from time) * 1000)::float8 as ts, value from device_metrics
        where org_id = ${orgId} and device_id = any(${inScope}::uuid[]) and metric = any(${[...metrics]}::text[])
          and time >= ${from} and time <= ${to} and value is not null
        order by device_id, time
        limit ${DRY_RUN_READING_CAP + 1}`.execute(tx);
      return rows;
    });
    const truncated = truncatedDevices || rows.length > DRY_RUN_READING_CAP;
    const byDevice = new Map<string, { metric: string; ts: number; value: number }[]>(inScope.map((id) => [id, []]));
    for (const r of rows.slice(0, DRY_RUN_READING_CAP))
      byDevice.get(r.device_id)?.push({ metric: r.metric, ts: Number(r.ts), value: Number(r.value) });
    return { devicesInScope: inScope.length, truncated, readings: Math.min(rows.length, DRY_RUN_READING_CAP), byDevice };
  }

  /** The evaluation counters of many rules, in one Redis pipeline. */
  async stats(ruleIds: readonly string[]): Promise<RuleStats[]> {
    const p = this.redis.pipeline();
    for (const id of ruleIds) p.hgetall(ruleStatsKey(this.prefix, id));
    const res = (await p.exec()) ?? [];
    return ruleIds.map((_, i) => parseRuleStats(res[i]?.[1] as Record<string, string> | undefined));
  }

  /**
   * Tells evaluation workers that `orgId`'s rules changed. The change is already committed, so a Redis
   * failure is logged rather than reported as a failed write (workers still reload on their TTL).
   */
  private async bumpVersion(orgId: string): Promise<void> {
    try {
      await this.redis.incr(rulesVersionKey(this.prefix, orgId));
    } catch (e) {
      this.logger?.warn({ err: e, orgId }, 'could not bump the rules version');
    }
  }
}

/** An undeleted rule of `orgId`, locked for the rest of the transaction; NOT_FOUND otherwise. */
async function liveRule(tx: Tx, orgId: string, id: string): Promise<RuleRow> {
  const row = await tx
    .selectFrom('rules')
    .select(ruleColumns)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .forUpdate()
    .executeTakeFirst();
  if (!row) throw new NotFoundError('rule');
  return row as RuleRow;
}

/** The stored columns of a definition. */
function definitionColumns(def: RuleDefinition) {
  return {
    name: def.name,
    description: def.description,
    enabled: def.enabled,
    kind: def.kind,
    metric: def.metric,
    operator: def.operator,
    threshold: def.threshold,
    clear_threshold: def.clearThreshold,
    expression: def.expression,
    for_seconds: def.forSeconds,
    repeat_count: def.repeatCount,
    window_seconds: def.windowSeconds,
    no_data_seconds: def.noDataSeconds,
    clear_on_disable: def.clearOnDisable,
    notify: def.notify === null ? null : JSON.stringify(def.notify),
    actions: def.actions.length ? JSON.stringify(def.actions) : null,
    severity: def.severity,
    alarm_type: def.alarmType,
    auto_clear: def.autoClear,
    site_id: def.siteId,
    profile_id: def.profileId,
  };
}

const SHAPE = [
  'kind',
  'metric',
  'operator',
  'threshold',
  'clearThreshold',
  'expression',
  'forSeconds',
  'repeatCount',
  'windowSeconds',
  'noDataSeconds',
] as const;
const shapeChanged = (a: RuleDefinition, b: RuleDefinition) => SHAPE.some((k) => a[k] !== b[k]);

/** An alarm cleared because its rule was disabled or deleted, with what its event needs. */
interface ClearedAlarm {
  id: string;
  deviceId: string;
  severity: string;
  siteId: string | null;
  sitePath: string | null;
}

/** Clears the open alarms a rule raised (`clearOnDisable`), with their history rows, in the caller's transaction. */
async function clearRuleAlarms(tx: Tx, orgId: string, ruleId: string, why: 'disabled' | 'deleted'): Promise<ClearedAlarm[]> {
  const { rows } = await sql<ClearedAlarm>`
    with c as (
      update alarms set cleared_at = now(), cleared_by = ${`rule:${ruleId}`}
      where org_id = ${orgId} and rule_id = ${ruleId} and cleared_at is null
      returning id, device_id, severity
    ), e as (
      insert into alarm_events (org_id, alarm_id, kind, actor, note)
      select ${orgId}, c.id, 'cleared', ${`rule:${ruleId}`}, ${`rule ${why}`} from c
    )
    select c.id, c.device_id as "deviceId", c.severity, d.site_id as "siteId", s.path::text as "sitePath"
    from c join devices d on d.id = c.device_id left join sites s on s.id = d.site_id`.execute(tx);
  return rows;
}

/**
 * BAD_USER_INPUT `unknown metric` when the rule's device profile declares its metrics and the rule
 * reads one it does not declare (without a profile, any metric name is accepted).
 */
async function assertMetrics(tx: Tx, orgId: string, def: RuleDefinition): Promise<void> {
  if (!def.profileId) return;
  const row = await tx
    .selectFrom('device_profiles')
    .select('metrics')
    .where('org_id', '=', orgId)
    .where('id', '=', def.profileId)
    .executeTakeFirst();
  const declared = new Set(((row?.metrics ?? []) as { name?: unknown }[]).map((m) => m?.name).filter((n) => typeof n === 'string'));
  if (!declared.size) return;
  for (const m of ruleMetrics(def)) {
    if (!declared.has(m)) {
      const field = def.kind === 'expression' ? 'input.expression' : 'input.metric';
      throw new BadInputError(`${field}: unknown metric "${m}" (the device profile declares ${[...declared].join(', ')})`, { field });
    }
  }
}

/**
 * BAD_USER_INPUT naming the action's field when the rule names a device profile and a command action
 * is one that profile does not declare, or its params fail the declared JSON Schema. Without a
 * profile, commands are checked per device when they run (refused ones are counted, not sent).
 */
async function assertActions(tx: Tx, orgId: string, def: RuleDefinition): Promise<void> {
  if (!def.profileId || !def.actions.some((a) => a.kind === 'command')) return;
  const row = await tx
    .selectFrom('device_profiles')
    .select('commands')
    .where('org_id', '=', orgId)
    .where('id', '=', def.profileId)
    .executeTakeFirst();
  checkActionsAgainstSpecs(def.actions, storedSpecs(row?.commands));
}

/** BAD_USER_INPUT when a scope site or profile is not the organization's (others' are invisible under RLS). */
async function assertRefs(tx: Tx, orgId: string, refs: { siteId?: string | null | undefined; profileId?: string | null | undefined }) {
  if (refs.siteId) {
    const site = await tx.selectFrom('sites').select('id').where('org_id', '=', orgId).where('id', '=', refs.siteId).executeTakeFirst();
    if (!site) throw new BadInputError('siteId: site not found', { field: 'siteId' });
  }
  if (refs.profileId) {
    const profile = await tx
      .selectFrom('device_profiles')
      .select('id')
      .where('org_id', '=', orgId)
      .where('id', '=', refs.profileId)
      .executeTakeFirst();
    if (!profile) throw new BadInputError('profileId: device profile not found', { field: 'profileId' });
  }
}

const conflictOn = (name: string) => (e: unknown) => {
  if (isUniqueViolation(e)) throw new ConflictError(`a rule named "${name}" already exists`);
  throw e;
};
