import { sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import { latestKey, statusKey } from '../../lib/contracts/device-state.js';
import { type Db, isUuid, type Tx, withTenant } from '../../lib/db.js';
import type { Redis } from '../../lib/redis.js';
import { type Aggregate, DAY, HOUR, pgInterval, type SeriesPlan } from './series.js';

/**
 * SQL and Redis reads of the metrics subgraph. Every database read runs inside `withTenant` (row-level
 * security) AND filters `org_id` itself, so a forgotten filter and a forgotten policy are both needed
 * for a leak. Raw SQL (not the query builder) because the statements are window/aggregate queries the
 * builder would only obscure.
 */

/** How far before a range's start the last counter reading is looked for (to count the first interval). */
export const ENERGY_LOOKBACK_MS = 7 * DAY;

const EPOCH = sql`'1970-01-01 00:00:00+00'::timestamptz`;

const RAW_AGG: Record<Aggregate, ReturnType<typeof sql.raw>> = {
  AVG: sql.raw('avg(value)'),
  MIN: sql.raw('min(value)'),
  MAX: sql.raw('max(value)'),
  SUM: sql.raw('sum(value)'),
  COUNT: sql.raw('count(*)::float8'),
  LAST: sql.raw('(array_agg(value order by time desc))[1]'),
};

const ROLLUP_AGG: Record<Aggregate, ReturnType<typeof sql.raw>> = {
  AVG: sql.raw('sum("sum") / nullif(sum("count"), 0)'),
  MIN: sql.raw('min("min")'),
  MAX: sql.raw('max("max")'),
  SUM: sql.raw('sum("sum")'),
  COUNT: sql.raw('sum("count")::float8'),
  LAST: sql.raw('(array_agg("last" order by last_time desc))[1]'),
};

export interface PointRow {
  ts: Date;
  value: number | null;
}

export interface EnergyRow {
  ts: Date;
  kwh: number;
}

export interface DeadLetterRow {
  id: string;
  receivedAt: Date;
  /** `received_at` at full (microsecond) precision, for the cursor */
  receivedAtText: string;
  deviceId: string | null;
  topic: string;
  reason: string;
  detail: string | null;
  payload: string | null;
}

export interface SiteRow {
  id: string;
  path: string;
}

const oneDevice = (deviceId: string) => sql`select ${deviceId}::uuid as id`;

/** Devices of a site subtree, decommissioned ones included (they consumed energy while they ran). */
const siteDevices = (orgId: string, sitePath: string) =>
  sql`select d.id from devices d join sites s on s.id = d.site_id
      where d.org_id = ${orgId} and s.org_id = ${orgId} and s.path <@ ${sitePath}::ltree`;

export class MetricsRepository {
  /**
   * device id → owning organization, for devices already seen. A device never changes organization
   * (the column is not updatable through the API), so positive answers are cached across requests;
   * unknown or foreign ids are always asked again.
   */
  private readonly owners = new LRUCache<string, string>({ max: 100_000, ttl: 10 * 60_000 });

  constructor(
    private readonly db: Db,
    private readonly redis: Redis,
    /** `REDIS_PREFIX` */
    private readonly prefix: string,
  ) {}

  private tenant<T>(orgId: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return withTenant(this.db, orgId, fn);
  }

  /** The subset of `ids` that are devices of `orgId` (foreign and malformed ids drop out). */
  async ownedDevices(orgId: string, ids: readonly string[]): Promise<Set<string>> {
    const owned = new Set<string>();
    const unknown: string[] = [];
    for (const id of ids) {
      if (this.owners.get(id) === orgId) owned.add(id);
      else if (isUuid(id)) unknown.push(id);
    }
    if (!unknown.length) return owned;
    const { rows } = await this.tenant(orgId, (tx) =>
      sql<{ id: string }>`select id from devices where org_id = ${orgId} and id = any(${unknown}::uuid[])`.execute(tx),
    );
    for (const r of rows) {
      owned.add(r.id);
      this.owners.set(r.id, orgId);
    }
    return owned;
  }

  /** Sites of `orgId` among `ids`, with their ltree paths. */
  async ownedSites(orgId: string, ids: readonly string[]): Promise<Map<string, SiteRow>> {
    const valid = ids.filter(isUuid);
    if (!valid.length) return new Map();
    const { rows } = await this.tenant(orgId, (tx) =>
      sql<SiteRow>`select id, path::text as path from sites where org_id = ${orgId} and id = any(${valid}::uuid[])`.execute(tx),
    );
    return new Map(rows.map((r) => [r.id, r]));
  }

  /** Aggregated series of one metric of one device, from the table the plan chose. */
  async series(orgId: string, deviceId: string, metric: string, plan: SeriesPlan, agg: Aggregate): Promise<PointRow[]> {
    const iv = pgInterval(plan.intervalMs);
    const from = new Date(plan.from);
    const to = new Date(plan.to);
    const { rows } = await this.tenant(orgId, (tx) => {
      if (plan.source === 'raw') {
        return sql<PointRow>`
          select date_bin(${iv}::interval, time, ${EPOCH}) as ts, ${RAW_AGG[agg]} as value
          from device_metrics
          where org_id = ${orgId} and device_id = ${deviceId} and metric = ${metric}
            and time >= ${from} and time < ${to} and value is not null and text is null
          group by 1 order by 1`.execute(tx);
      }
      // The `_live` views add the rollup deltas ingest appended and the compactor has not folded yet,
      // so a rollup series equals the raw aggregates at every moment.
      const table = sql.table(plan.source === 'hourly' ? 'metrics_hourly_live' : 'metrics_daily_live');
      return sql<PointRow>`
        select date_bin(${iv}::interval, bucket, ${EPOCH}) as ts, ${ROLLUP_AGG[agg]} as value
        from ${table}
        where org_id = ${orgId} and device_id = ${deviceId} and metric = ${metric}
          and bucket >= ${from} and bucket < ${to}
        group by 1 order by 1`.execute(tx);
    });
    return rows;
  }

  /**
   * The same series computed from raw rows whatever the interval: the reference the rollup paths are
   * tested and benchmarked against.
   */
  async seriesFromRaw(orgId: string, deviceId: string, metric: string, plan: SeriesPlan, agg: Aggregate): Promise<PointRow[]> {
    return this.series(orgId, deviceId, metric, { ...plan, source: 'raw' }, agg);
  }

  /** kWh per bucket for one device (see {@link energyForDevices}). */
  energy(orgId: string, deviceId: string, from: number, to: number, intervalMs: number): Promise<EnergyRow[]> {
    return this.energyForDevices(orgId, oneDevice(deviceId), from, to, intervalMs);
  }

  /** kWh per UTC day over the devices of a site subtree (`path` is the site's ltree path). */
  siteEnergy(orgId: string, sitePath: string, from: number, to: number): Promise<EnergyRow[]> {
    return this.energyForDevices(orgId, siteDevices(orgId, sitePath), from, to, DAY);
  }

  /**
   * The same answers as {@link energy} / {@link siteEnergy} computed from every counter reading of
   * the range (no rollup): the reference the rollup path is tested and benchmarked against.
   */
  energyFromReadings(orgId: string, deviceId: string, from: number, to: number, intervalMs: number): Promise<EnergyRow[]> {
    return this.energyFromRaw(orgId, oneDevice(deviceId), from, to, intervalMs);
  }

  /** {@link siteEnergy} from every counter reading (see {@link energyFromReadings}). */
  siteEnergyFromReadings(orgId: string, sitePath: string, from: number, to: number): Promise<EnergyRow[]> {
    return this.energyFromRaw(orgId, siteDevices(orgId, sitePath), from, to, DAY);
  }

  /**
   * kWh per bucket summed over a set of devices, from the hourly energy rollup for the whole hours of
   * the range and raw readings for the rest; the same answers as {@link energyFromRaw} (the rule of
   * `energyBuckets` in `series.ts`). Per device, time-ordered "segments" are chained: a segment is
   * an `energy_hourly` row (its `kwh` is the increase between its own readings) or one raw reading;
   * each segment adds its `kwh` plus `increase(previous segment's last_kwh, its first_kwh)` to the
   * bucket of its first reading. Raw readings are used for the device's last reading in the week
   * before `from`, the partial hours at the edges of an unaligned range, and whole hours that still
   * have partials pending in `energy_hourly_deltas` (not compacted yet: the rollup row would be
   * incomplete, the readings are not, and both commit together), so a committed reading counts at
   * once. A bucket appears when at least one pair of consecutive readings ends in it, as in the raw
   * rule. Intervals that are not whole hours read raw readings only.
   */
  private async energyForDevices(orgId: string, devices: ReturnType<typeof sql>, from: number, to: number, intervalMs: number) {
    const hf = Math.ceil(from / HOUR) * HOUR;
    const ht = Math.floor(to / HOUR) * HOUR;
    if (intervalMs % HOUR !== 0 || hf >= ht) return this.energyFromRaw(orgId, devices, from, to, intervalMs);
    const f = new Date(from);
    const t = new Date(to);
    const hF = new Date(hf);
    const hT = new Date(ht);
    const lookback = new Date(from - ENERGY_LOOKBACK_MS);
    const edges = [
      ...(from < hf ? [sql`(e.time >= ${f} and e.time < ${hF})`] : []),
      ...(ht < to ? [sql`(e.time >= ${hT} and e.time < ${t})`] : []),
    ];
    const { rows } = await this.tenant(orgId, (tx) =>
      sql<EnergyRow>`
        with devs as (${devices}),
        pending as (
          select devs.id, p.buckets
          from devs left join (
            select device_id, array_agg(distinct bucket) as buckets from energy_hourly_deltas
            where org_id = ${orgId} and bucket >= ${hF} and bucket < ${hT}
            group by 1
          ) p on p.device_id = devs.id
        )
        select date_bin(${pgInterval(intervalMs)}::interval, first_time, ${EPOCH}) as ts,
               sum(kwh + case when prev is null then 0 when first_kwh >= prev then first_kwh - prev else first_kwh end) as kwh
        from pending cross join lateral (
          select first_time, first_kwh, kwh, count, lag(last_kwh) over (order by first_time) as prev
          from (
            (select time as first_time, counter_kwh as first_kwh, counter_kwh as last_kwh, 0::float8 as kwh, 1::bigint as count
             from energy_readings e
             where e.device_id = pending.id and e.org_id = ${orgId} and e.time >= ${lookback} and e.time < ${f}
             order by time desc limit 1)
            union all
            select h.first_time, h.first_kwh, h.last_kwh, h.kwh, h.count
            from energy_hourly h
            where h.device_id = pending.id and h.org_id = ${orgId} and h.bucket >= ${hF} and h.bucket < ${hT}
              and (pending.buckets is null or h.bucket <> all(pending.buckets))
            union all
            select e.time, e.counter_kwh, e.counter_kwh, 0, 1
            from unnest(pending.buckets) p(bucket)
            join energy_readings e on e.device_id = pending.id and e.org_id = ${orgId} and e.time >= p.bucket and e.time < p.bucket + interval '1 hour'
            ${
              edges.length
                ? sql`union all
            select e.time, e.counter_kwh, e.counter_kwh, 0, 1
            from energy_readings e
            where e.device_id = pending.id and e.org_id = ${orgId} and (${sql.join(edges, sql` or `)})`
                : sql``
            }
          ) s
        ) w
        where first_time >= ${f}
        group by 1
        having sum(count - 1 + case when prev is null then 0 else 1 end) > 0
        order by 1`.execute(tx),
    );
    return rows;
  }

  /**
   * kWh per bucket summed over a set of devices, from `energy_readings` counters: per device (one
   * ordered index range scan each, so no big sort), its readings in [from, to) plus its last
   * reading in the week before `from`, consecutive deltas (a drop means the counter restarted at 0,
   * so the new value is the delta), each delta booked in the bucket of the later reading. Same rule
   * as `energyBuckets` in `series.ts`. Cost grows with the readings of the range.
   */
  private async energyFromRaw(orgId: string, devices: ReturnType<typeof sql>, from: number, to: number, intervalMs: number) {
    const f = new Date(from);
    const t = new Date(to);
    const lookback = new Date(from - ENERGY_LOOKBACK_MS);
    const { rows } = await this.tenant(orgId, (tx) =>
      sql<EnergyRow>`
        with devs as (${devices})
        select x.ts, sum(x.kwh) as kwh
        from devs cross join lateral (
          select date_bin(${pgInterval(intervalMs)}::interval, time, ${EPOCH}) as ts,
                 sum(case when counter_kwh >= prev then counter_kwh - prev else counter_kwh end) as kwh
          from (
            select time, counter_kwh, lag(counter_kwh) over (order by time) as prev
            from (
              (select time, counter_kwh from energy_readings e
               where e.device_id = devs.id and e.org_id = ${orgId} and e.time >= ${lookback} and e.time < ${f}
               order by time desc limit 1)
              union all
              (select time, counter_kwh from energy_readings e
               where e.device_id = devs.id and e.org_id = ${orgId} and e.time >= ${f} and e.time < ${t})
            ) u
          ) w
          where prev is not null
          group by 1
        ) x
        group by 1 order by 1`.execute(tx),
    );
    return rows;
  }

  /** Active devices of a site subtree. */
  async siteDeviceIds(orgId: string, sitePath: string): Promise<string[]> {
    const { rows } = await this.tenant(orgId, (tx) =>
      sql<{ id: string }>`
        select d.id from devices d join sites s on s.id = d.site_id
        where d.org_id = ${orgId} and s.org_id = ${orgId} and s.path <@ ${sitePath}::ltree and d.decommissioned_at is null`.execute(tx),
    );
    return rows.map((r) => r.id);
  }

  /** Dead letters of one organization, newest first, keyset-paginated on (received_at, id). */
  async deadLetters(
    orgId: string,
    o: { first: number; after?: { receivedAt: string; id: string } | undefined; reason?: string | null | undefined },
  ): Promise<DeadLetterRow[]> {
    const { rows } = await this.tenant(orgId, (tx) =>
      sql<DeadLetterRow>`
        select id::text as id, received_at as "receivedAt", received_at::text as "receivedAtText", device_id as "deviceId", topic, reason, detail, payload
        from dead_letters
        where org_id = ${orgId}
          ${o.reason ? sql`and reason = ${o.reason}` : sql``}
          ${o.after ? sql`and (received_at, id) < (${o.after.receivedAt}::timestamptz, ${o.after.id}::bigint)` : sql``}
        order by received_at desc, id desc
        limit ${o.first + 1}`.execute(tx),
    );
    return rows;
  }

  /** `latest:<id>` hashes of many devices in one pipeline. */
  async latestHashes(ids: readonly string[]): Promise<Record<string, string>[]> {
    return this.hashes(latestKey, ids);
  }

  /** `status:<id>` hashes of many devices in one pipeline. */
  async statusHashes(ids: readonly string[]): Promise<Record<string, string>[]> {
    return this.hashes(statusKey, ids);
  }

  /** One field of the `latest:<id>` hash of many devices, in one pipeline. */
  async latestField(ids: readonly string[], metric: string): Promise<(string | null)[]> {
    if (!ids.length) return [];
    const p = this.redis.pipeline();
    for (const id of ids) p.hget(latestKey(this.prefix, id), metric);
    const res = (await p.exec()) ?? [];
    return res.map(([err, v]) => {
      if (err) throw err;
      return (v as string | null) ?? null;
    });
  }

  private async hashes(key: (prefix: string, id: string) => string, ids: readonly string[]): Promise<Record<string, string>[]> {
    if (!ids.length) return [];
    const p = this.redis.pipeline();
    for (const id of ids) p.hgetall(key(this.prefix, id));
    const res = (await p.exec()) ?? [];
    return res.map(([err, v]) => {
      if (err) throw err;
      return (v as Record<string, string>) ?? {};
    });
  }
}
