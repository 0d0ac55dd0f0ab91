import { type CompiledQuery, type SelectQueryBuilder, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { latestKey, numericLatest } from '../../../lib/contracts/device-state.js';
import { parseRuleStats, type RuleStats, ruleStatsKey, rulesVersionKey } from '../../../lib/contracts/rule-state.js';
import { type DB, type Db, isUniqueViolation, isUuid, type Tx, tenantReadRows, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { Logger } from '../../../lib/logger.js';
import type { Redis } from '../../../lib/redis.js';
import { assertCondition, type RuleCursor, type RuleDefinition, type RulePatch } from '../validation.js';

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

export interface ScopeReadings {
  /** devices in scope that were looked at (at most {@link DRY_RUN_DEVICE_CAP}) */
  devicesInScope: number;
  truncated: boolean;
  /** the numeric latest values among them, in serial order */
  values: LatestValue[];
}

const ruleColumns = [
  'id',
  'name',
  'description',
  'enabled',
  'metric',
  'operator',
  'threshold',
  'clear_threshold as clearThreshold',
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
      const created = await tx
        .insertInto('rules')
        .values({
          org_id: orgId,
          name: def.name,
          description: def.description,
          enabled: def.enabled,
          metric: def.metric,
          operator: def.operator,
          threshold: def.threshold,
          clear_threshold: def.clearThreshold,
          severity: def.severity,
          alarm_type: def.alarmType,
          auto_clear: def.autoClear,
          site_id: def.siteId,
          profile_id: def.profileId,
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
      const merged = { ...before, ...patch };
      assertCondition(merged);
      await assertRefs(tx, orgId, patch);
      const after = (await tx
        .updateTable('rules')
        .set({
          name: merged.name,
          description: merged.description,
          enabled: merged.enabled,
          metric: merged.metric,
          operator: merged.operator,
          threshold: merged.threshold,
          clear_threshold: merged.clearThreshold,
          severity: merged.severity,
          alarm_type: merged.alarmType,
          auto_clear: merged.autoClear,
          site_id: merged.siteId,
          profile_id: merged.profileId,
          updated_at: sql`now()`,
        })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(ruleColumns)
        .executeTakeFirstOrThrow()
        .catch(conflictOn(merged.name))) as RuleRow;
      await audit(tx, orgId, actorOf(identity), 'rule.update', 'rule', id, before, after);
      return after;
    });
    await this.bumpVersion(orgId);
    return row;
  }

  /** Soft-deletes an undeleted rule (audited): it stops evaluating, its alarms keep their rule. */
  async delete(identity: Identity, id: string): Promise<void> {
    const orgId = identity.orgId;
    await withTenant(this.db, orgId, async (tx) => {
      const before = await liveRule(tx, orgId, id);
      const after = (await tx
        .updateTable('rules')
        .set({ deleted_at: sql`now()`, updated_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(ruleColumns)
        .executeTakeFirstOrThrow()) as RuleRow;
      await audit(tx, orgId, actorOf(identity), 'rule.delete', 'rule', id, before, after);
    });
    await this.bumpVersion(orgId);
  }

  /**
   * The latest numeric values of `metric` of the active devices in a rule's scope (site subtree
   * and/or profile), at most {@link DRY_RUN_DEVICE_CAP} devices in serial order. Reads only.
   */
  async scopeReadings(orgId: string, scope: Pick<RuleDefinition, 'siteId' | 'profileId' | 'metric'>): Promise<ScopeReadings> {
    const ids = await withTenant(this.db, orgId, async (tx) => {
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
    const truncated = ids.length > DRY_RUN_DEVICE_CAP;
    const inScope = truncated ? ids.slice(0, DRY_RUN_DEVICE_CAP) : ids;
    const values: LatestValue[] = [];
    for (let i = 0; i < inScope.length; i += LATEST_CHUNK) {
      const chunk = inScope.slice(i, i + LATEST_CHUNK);
      const p = this.redis.pipeline();
      for (const id of chunk) p.hget(latestKey(this.prefix, id), scope.metric);
      const res = (await p.exec()) ?? [];
      chunk.forEach((deviceId, j) => {
        const reading = numericLatest(res[j]?.[1] as string | null | undefined);
        if (reading) values.push({ deviceId, value: reading.value, ts: new Date(reading.ts) });
      });
    }
    return { devicesInScope: inScope.length, truncated, values };
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
