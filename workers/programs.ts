import { sql } from 'kysely';
import { type DesiredLevelsOptions, setDesiredLevels } from '../lib/commands.js';
import { deviceChangesChannel, parseDeviceChange } from '../lib/contracts/device-changes.js';
import { parseProgramsVersion, programsVersionKey } from '../lib/contracts/program-state.js';
import type { Db, Tx } from '../lib/db.js';
import { ContractError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { counter, histogram } from '../lib/metrics.js';
import type { Cluster } from '../lib/programs-assign.js';
import { lastBefore, nextAfter, type Place } from '../lib/programs-schedule.js';
import type { Redis } from '../lib/redis.js';
import { loadOrgPlan, type OrgPlan, type OverrideRow, overridden, reaches } from './programs-plan.js';

/**
 * The program scheduler: runs lighting programs and overrides (docs/programs.md).
 *
 * The durable schedule is one `program_clusters` row per (assignment, time zone, location cell) with
 * its next switch event, not a row per lamp per minute. Every tick (`PROGRAMS_TICK_MS`), any number
 * of workers processes claim due rows with `for update skip locked`; in the claiming transaction one
 * of them records the firing (`program_firings`, unique per source and instant), writes the level of
 * every member device (`program_device_levels`, the expected state) and moves the row to its next
 * event. A process killed mid-firing rolls back and another fires it: each switch point fires once.
 * Override starts and ends are claimed the same way from `program_overrides`. Levels then reach
 * devices through a {@link DesiredLevelSink} (the devices' desired state), pushed from
 * `program_device_levels` rows whose `pushed_at` is null, in the transaction that sets it: an outbox,
 * so a crash between the two delays a level but never loses or repeats it.
 *
 * Catching up: an event that came due while no scheduler ran fires once, with the level in force
 * now (the older ones are not replayed). A new location cluster, or one whose schedule changed
 * (an edited program, a new assignment), fires at once with the level in force now.
 */

const firedTotal = counter('rulr_program_firings_total', 'Program switch events and override starts/ends fired', ['source']);
const levelsTotal = counter('rulr_program_levels_total', 'Device levels written by programs and overrides');
const pushedTotal = counter('rulr_program_levels_pushed_total', 'Device levels pushed to the desired state');
const fireSeconds = histogram(
  'rulr_program_firing_seconds',
  'Time to fire one switch event for a location cluster',
  [],
  [0.01, 0.05, 0.1, 0.5, 1, 5, 20],
);

/** One device's level. */
export interface LevelItem {
  deviceId: string;
  level: number;
  rampSeconds: number;
}

/**
 * Where levels go once the scheduler has recorded them: the devices' desired state (the commands
 * issue's path). `push` runs inside the transaction that marks the levels pushed, so a sink that
 * writes through `tx` applies each level exactly once; one that cannot must be idempotent (the same
 * level again changes nothing).
 */
export interface DesiredLevelSink {
  readonly name: string;
  push(tx: Tx, orgId: string, items: readonly LevelItem[], actor: string): Promise<void>;
}

/** Keeps levels in `program_device_levels` only (the expected state the detectors read); nothing is sent to devices. */
export const recordOnlySink: DesiredLevelSink = { name: 'record-only', push: async () => undefined };

/**
 * Writes levels into the devices' desired state and queues one `setState` command per device whose
 * reported level differs, set-based in the firing's transaction (lib/commands.ts `setDesiredLevels`);
 * the command dispatcher's sweep sends them.
 */
export const desiredStateSink = (o: DesiredLevelsOptions): DesiredLevelSink => ({
  name: 'desired-state',
  push: async (tx, orgId, items, actor) => void (await setDesiredLevels(tx, orgId, items, actor, o)),
});

export interface ProgramSchedulerOptions {
  db: Db;
  redis: Redis;
  /** `REDIS_PREFIX` */
  prefix: string;
  logger: Logger;
  sink: DesiredLevelSink;
  /** ms since the epoch; tests pass a controlled clock @default Date.now */
  clock?: () => number;
  /** @default 1000 */
  tickMs?: number;
  /** seconds between replans without a version change @default 300 */
  replanS?: number;
  /** `SOLAR_CLUSTER_DEGREES` @default 0.1 */
  cellDegrees?: number;
  /** levels per desired-state push transaction @default 5000 */
  pushBatch?: number;
  /** desired-state push transactions at a time, on disjoint devices @default 1 */
  pushConcurrency?: number;
  /** test hook: runs inside a firing's transaction, after the claim */
  onClaim?: (what: { source: string; id: string }) => Promise<void>;
  /** test hook: runs inside a push's transaction, after the sink, before the commit */
  onPush?: (what: { orgId: string; devices: number }) => Promise<void>;
}

export interface TickSummary {
  replanned: number;
  fired: number;
  levels: number;
  pushed: number;
}

interface ClusterRow {
  id: string;
  org_id: string;
  assignment_id: string;
  time_zone: string;
  cell_lat: number;
  cell_lng: number;
  next_at: Date;
  next_event: { kind: 'catch-up' | 'switch' } | null;
}

/** Levels per push transaction: large enough that the push's statements cost per row, not per batch. */
export const PUSH_BATCH = 5000;
/**
 * Push transactions at a time (on disjoint devices). One: on the 2-core bench machine two cut the push
 * of 100,000 lamps from 11.2 to 9.9 s but cost PostgreSQL 24 % more CPU (7.5 s instead of 6.1 s), CPU
 * the dispatch of the same commands needs (docs/programs.md).
 */
export const PUSH_CONCURRENCY = 1;
/** Unpushed levels read per round of the push (ids only, so memory stays bounded whatever the fleet). */
const PUSH_ROUND = 100_000;

const clusterKeyOf = (r: Pick<ClusterRow, 'assignment_id' | 'time_zone' | 'cell_lat' | 'cell_lng'>) =>
  `${r.assignment_id}|${r.time_zone}|${r.cell_lat}|${r.cell_lng}`;

/** Sets the tenant of the rest of a transaction that began as the system (to claim across organizations). */
async function enterTenant(tx: Tx, orgId: string): Promise<void> {
  await sql`select set_config('role', 'rulr_app', true), set_config('rulr.org_id', ${orgId}, true)`.execute(tx);
}

export class ProgramScheduler {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private closed = false;
  private readonly plans = new Map<string, { plan: OrgPlan; version: number; sites: string; at: number }>();
  private readonly clock: () => number;

  constructor(private readonly o: ProgramSchedulerOptions) {
    this.clock = o.clock ?? Date.now;
  }

  start(): this {
    const loop = () => {
      if (this.closed) return;
      this.running = this.tick()
        .catch((e) => this.o.logger.warn({ err: (e as Error).message }, 'program scheduler tick failed; retried next tick'))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(loop, this.o.tickMs ?? 1000);
        });
    };
    loop();
    return this;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Forgets an organization's cached plan (a device-change notice); the next tick replans it. */
  invalidate(orgId: string): void {
    this.plans.delete(orgId);
  }

  /**
   * Replans an organization as soon as its devices change (lib/contracts/device-changes.ts), on a
   * dedicated connection; a lost notice only waits for `replanS`. Returns the subscriber to close.
   */
  async listen(redis: Redis): Promise<Redis> {
    const sub = redis.duplicate();
    sub.on('error', () => undefined);
    sub.on('message', (_ch, msg: string) => {
      try {
        this.invalidate(parseDeviceChange(msg).orgId);
      } catch (e) {
        if (!(e instanceof ContractError)) throw e;
      }
    });
    await sub.subscribe(deviceChangesChannel(this.o.prefix));
    return sub;
  }

  /** One round: replan what changed, fire what is due, push pending levels. */
  async tick(): Promise<TickSummary> {
    const now = this.clock();
    const summary: TickSummary = { replanned: 0, fired: 0, levels: 0, pushed: 0 };
    const { rows: orgs } = await sql<{ org_id: string }>`select distinct org_id from program_assignments`.execute(this.o.db);
    for (const { org_id } of orgs) {
      try {
        if (await this.ensurePlan(org_id, now)) summary.replanned++;
      } catch (e) {
        // a cluster held by a long firing (or a stuck one) must not stop the other organizations
        this.o.logger.warn({ orgId: org_id, err: (e as Error).message }, 'programs: replan postponed to the next tick');
      }
    }
    for (;;) {
      const r = await this.fireNextCluster(now);
      if (!r) break;
      summary.fired++;
      summary.levels += r;
    }
    for (;;) {
      const r = await this.fireNextOverride(now);
      if (r === null) break;
      summary.fired++;
      summary.levels += r;
    }
    summary.pushed = await this.pushPending();
    return summary;
  }

  /** The organization's plan, replanned (and its clusters rewritten) when its version or sites changed or it is old. */
  private async ensurePlan(orgId: string, now: number): Promise<boolean> {
    const version = parseProgramsVersion(await this.o.redis.get(programsVersionKey(this.o.prefix, orgId)));
    const { rows } = await sql<{ stamp: string }>`
      select count(*)::text || ':' || coalesce(max(updated_at)::text, '') as stamp from sites where org_id = ${orgId}`.execute(this.o.db);
    const sites = rows[0]?.stamp ?? '';
    const hit = this.plans.get(orgId);
    const fresh = hit && hit.version === version && version >= 0 && hit.sites === sites && now - hit.at < (this.o.replanS ?? 300) * 1000;
    if (fresh) return false;
    const plan = await loadOrgPlan(this.o.db, orgId, this.o.cellDegrees ?? 0.1, this.o.logger);
    await this.writeClusters(plan, now);
    this.plans.set(orgId, { plan, version, sites, at: now });
    return true;
  }

  /**
   * The cached plan, for use inside a claim: never replans there (a replan rewrites the clusters,
   * and the claimed row is locked); without a cached plan it reads one.
   */
  private async planOf(orgId: string): Promise<OrgPlan> {
    return this.plans.get(orgId)?.plan ?? loadOrgPlan(this.o.db, orgId, this.o.cellDegrees ?? 0.1, this.o.logger);
  }

  /**
   * Makes `program_clusters` match a plan: new clusters and clusters whose schedule changed fire at
   * once (catch-up), clusters without a next event get one, clusters no longer planned go.
   */
  private async writeClusters(p: OrgPlan, now: number): Promise<void> {
    const clusters = [...p.plan.clusters.values()].filter((c) => p.schedules.get(c.assignmentId)?.schedule);
    await this.o.db.transaction().execute(async (tx) => {
      // one replan of an organization at a time, across processes
      await sql`set local lock_timeout = '2s'`.execute(tx);
      await sql`select pg_advisory_xact_lock(hashtext(${`programs:${p.orgId}`}))`.execute(tx);
      await enterTenant(tx, p.orgId);
      const { rows: existing } = await sql<ClusterRow & { schedule_hash: string | null }>`
        select id, assignment_id, time_zone, cell_lat, cell_lng, next_at, schedule_hash from program_clusters
        where org_id = ${p.orgId} for update`.execute(tx);
      const byKey = new Map(existing.map((r) => [clusterKeyOf(r), r]));
      const keep = new Set<string>();
      for (const c of clusters) {
        const hash = p.schedules.get(c.assignmentId)?.hash ?? 'none';
        const row = byKey.get(c.key);
        if (row) {
          keep.add(row.id);
          const changed = row.schedule_hash !== hash;
          await sql`
            update program_clusters set devices = ${c.deviceIds.length}, schedule_hash = ${hash}, updated_at = now(),
              next_at = case when ${changed} or next_at is null then ${new Date(now)}::timestamptz else next_at end,
              next_event = case when ${changed} or next_at is null then '{"kind":"catch-up"}'::jsonb else next_event end
            where id = ${row.id}`.execute(tx);
        } else {
          await sql`
            insert into program_clusters (org_id, assignment_id, time_zone, cell_lat, cell_lng, devices, next_at, next_event, schedule_hash)
            values (${p.orgId}, ${c.assignmentId}, ${c.timeZone}, ${c.cellLat}, ${c.cellLng}, ${c.deviceIds.length},
                    ${new Date(now)}, '{"kind":"catch-up"}'::jsonb, ${hash})
            on conflict (org_id, assignment_id, time_zone, cell_lat, cell_lng) do nothing`.execute(tx);
        }
      }
      const gone = existing.filter((r) => !keep.has(r.id)).map((r) => r.id);
      if (gone.length) await sql`delete from program_clusters where id = any(${gone}::uuid[])`.execute(tx);
    });
  }

  /** Claims and fires the most overdue due cluster; the number of levels written, or null when none is due. */
  private async fireNextCluster(now: number): Promise<number | null> {
    const started = performance.now();
    const r = await this.o.db.transaction().execute(async (tx) => {
      const { rows } = await sql<ClusterRow>`
        select id, org_id, assignment_id, time_zone, cell_lat, cell_lng, next_at, next_event from program_clusters
        where next_at <= ${new Date(now)} order by next_at limit 1 for update skip locked`.execute(tx);
      const row = rows[0];
      if (!row) return null;
      await this.o.onClaim?.({ source: 'program', id: row.id });
      const p = await this.planOf(row.org_id);
      await enterTenant(tx, row.org_id);
      const cluster = p.plan.clusters.get(clusterKeyOf(row));
      const schedule = cluster ? p.schedules.get(cluster.assignmentId)?.schedule : null;
      if (!cluster || !schedule) {
        await sql`update program_clusters set next_at = null, next_event = null where id = ${row.id}`.execute(tx);
        return 0;
      }
      const place: Place = { lat: cluster.cellLat, lng: cluster.cellLng, timeZone: cluster.timeZone };
      const inForce = lastBefore(schedule, place, now + 1);
      const next = nextAfter(schedule, place, now);
      const at = row.next_event?.kind === 'catch-up' || !inForce ? now : inForce.at;
      let written = 0;
      if (inForce) {
        written = await this.writeProgramLevels(tx, p, cluster, row.id, at, inForce.level, inForce.rampSeconds, now, {
          programId: inForce.programId,
          index: inForce.index,
        });
      }
      await sql`
        update program_clusters set last_fired_at = ${new Date(at)}, next_at = ${next ? new Date(next.at) : null},
          next_event = ${next ? JSON.stringify({ kind: 'switch', programId: next.programId, index: next.index, level: next.level }) : null}::jsonb
        where id = ${row.id}`.execute(tx);
      return written;
    });
    if (r !== null) fireSeconds.observe((performance.now() - started) / 1000);
    return r;
  }

  /** Records a program firing and writes the level of the cluster's devices that no override holds. */
  private async writeProgramLevels(
    tx: Tx,
    p: OrgPlan,
    cluster: Cluster,
    clusterId: string,
    at: number,
    level: number,
    rampSeconds: number,
    now: number,
    point: { programId: string; index: number },
  ): Promise<number> {
    const held = overridden(cluster.deviceIds, await activeOverrides(tx, p.orgId, now), now, p);
    const ids = held.size ? cluster.deviceIds.filter((id) => !held.has(id)) : cluster.deviceIds;
    const firing = await recordFiring(tx, p.orgId, 'program', clusterId, at, level, ids.length, point);
    if (firing === null) return 0;
    firedTotal.inc({ source: 'program' });
    return this.writeLevels(tx, p.orgId, ids, () => ({ level, rampSeconds }), 'program', clusterId, firing, at);
  }

  /** Upserts device levels (unpushed), one statement. */
  private async writeLevels(
    tx: Tx,
    orgId: string,
    ids: readonly string[],
    levelOf: (id: string) => { level: number; rampSeconds: number },
    source: string,
    refId: string,
    firingId: number,
    at: number,
  ): Promise<number> {
    if (!ids.length) return 0;
    const levels = ids.map((id) => levelOf(id));
    await sql`
      insert into program_device_levels as l (device_id, org_id, level, ramp_seconds, source, ref_id, firing_id, event_at)
      select v.device_id, ${orgId}, v.level, v.ramp, ${source}, ${refId}, ${firingId}, ${new Date(at)}
      from unnest(${ids}::uuid[], ${levels.map((l) => l.level)}::int[], ${levels.map((l) => l.rampSeconds)}::int[]) as v(device_id, level, ramp)
      on conflict (device_id) do update set
        org_id = excluded.org_id, level = excluded.level, ramp_seconds = excluded.ramp_seconds, source = excluded.source,
        ref_id = excluded.ref_id, firing_id = excluded.firing_id, event_at = excluded.event_at, set_at = now(),
        writes = l.writes + 1, pushed_at = null`.execute(tx);
    levelsTotal.inc(ids.length);
    return ids.length;
  }

  /**
   * Claims one due override start or end and applies it: at its start, the devices it reaches and no
   * later-created override holds take its level; at its end (expiry or cancel), those it held take the
   * level of the override still in force, else their program's level now. Null when none is due.
   */
  private async fireNextOverride(now: number): Promise<number | null> {
    return this.o.db.transaction().execute(async (tx) => {
      const { rows } = await sql<{
        id: string;
        org_id: string;
        site_id: string | null;
        device_id: string | null;
        level: number;
        starts_at: Date;
        end_at: Date;
        started_at: Date | null;
        created_at: Date;
      }>`
        select id, org_id, site_id, device_id, level, starts_at, least(expires_at, coalesce(canceled_at, expires_at)) as end_at,
               started_at, created_at
        from program_overrides
        where ended_at is null
          and ((started_at is null and starts_at <= ${new Date(now)}) or least(expires_at, coalesce(canceled_at, expires_at)) <= ${new Date(now)})
        order by least(starts_at, expires_at) limit 1 for update skip locked`.execute(tx);
      const o = rows[0];
      if (!o) return null;
      await this.o.onClaim?.({ source: 'override', id: o.id });
      const p = await this.planOf(o.org_id);
      await enterTenant(tx, o.org_id);
      const ending = o.end_at.getTime() <= now;
      const reached = [...p.devices.values()]
        .filter((d) => reaches({ siteId: o.site_id, deviceId: o.device_id }, d, p.sitePaths))
        .map((d) => d.id);
      if (!ending) {
        // starting: it wins where no override created after it is in force
        const held = overridden(reached, await activeOverrides(tx, o.org_id, now, o.id), now, p);
        const ids = reached.filter((id) => held.get(id)?.id === o.id);
        const firing = await recordFiring(tx, o.org_id, 'override-start', o.id, o.starts_at.getTime(), o.level, ids.length, null);
        await sql`update program_overrides set started_at = ${new Date(now)} where id = ${o.id}`.execute(tx);
        if (firing === null) return 0;
        firedTotal.inc({ source: 'override-start' });
        return this.writeLevels(tx, o.org_id, ids, () => ({ level: o.level, rampSeconds: 0 }), 'override-start', o.id, firing, now);
      }
      await sql`update program_overrides set ended_at = ${new Date(now)}, started_at = coalesce(started_at, ${new Date(now)}) where id = ${o.id}`.execute(
        tx,
      );
      if (!o.started_at) return 0; // it ended before it was ever applied: nothing to hand back
      // the devices it held: those it won just before it ended
      const before = overridden(reached, await activeOverrides(tx, o.org_id, o.end_at.getTime() - 1, o.id), o.end_at.getTime() - 1, p);
      const heldIds = reached.filter((id) => before.get(id)?.id === o.id);
      const others = overridden(heldIds, await activeOverrides(tx, o.org_id, now, o.id), now, p);
      const levels = new Map<string, { level: number; rampSeconds: number }>();
      for (const id of heldIds) {
        const other = others.get(id);
        if (other && other.id !== o.id) {
          levels.set(id, { level: other.level, rampSeconds: 0 });
          continue;
        }
        const key = p.plan.clusterOf.get(id);
        const cluster = key ? p.plan.clusters.get(key) : undefined;
        const schedule = cluster ? p.schedules.get(cluster.assignmentId)?.schedule : null;
        if (!cluster || !schedule) continue;
        const inForce = lastBefore(schedule, { lat: cluster.cellLat, lng: cluster.cellLng, timeZone: cluster.timeZone }, now + 1);
        if (inForce) levels.set(id, { level: inForce.level, rampSeconds: inForce.rampSeconds });
      }
      const ids = [...levels.keys()];
      const firing = await recordFiring(tx, o.org_id, 'override-end', o.id, o.end_at.getTime(), null, ids.length, null);
      if (firing === null) return 0;
      firedTotal.inc({ source: 'override-end' });
      return this.writeLevels(
        tx,
        o.org_id,
        ids,
        (id) => levels.get(id) as { level: number; rampSeconds: number },
        'override-end',
        o.id,
        firing,
        now,
      );
    });
  }

  /**
   * Pushes unpushed levels to the sink, in batches, each in the transaction that marks them pushed.
   * A round reads the ids of up to {@link PUSH_ROUND} unpushed levels in push order (oldest first),
   * then `pushConcurrency` transactions at a time claim and push them `pushBatch` by `pushBatch` by
   * primary key: a plan that costs per batch, whatever the planner believes of a table one firing just
   * rewrote (an `order by … limit … for update` re-sorted every unpushed row for each batch).
   */
  async pushPending(): Promise<number> {
    let pushed = 0;
    const { rows: orgs } = await sql<{ org_id: string }>`
      select distinct org_id from program_device_levels where pushed_at is null`.execute(this.o.db);
    const size = this.o.pushBatch ?? PUSH_BATCH;
    for (const { org_id } of orgs) {
      for (;;) {
        const { rows } = await sql<{ device_id: string }>`
          select device_id from program_device_levels where org_id = ${org_id} and pushed_at is null
          order by set_at, device_id limit ${PUSH_ROUND}`.execute(this.o.db);
        const batches: string[][] = [];
        for (let i = 0; i < rows.length; i += size) batches.push(rows.slice(i, i + size).map((r) => r.device_id));
        let next = 0;
        let round = 0;
        let failed = false;
        const pusher = async () => {
          for (let b = batches[next++]; b && !failed; b = batches[next++]) {
            const ids = b;
            try {
              const n = await this.o.db.transaction().execute((tx) => this.pushOne(tx, org_id, ids));
              round += n;
              pushedTotal.inc(n);
            } catch (e) {
              failed = true; // the other pushers stop after their batch; the tick reports the error
              throw e;
            }
          }
        };
        const results = await Promise.allSettled(
          Array.from({ length: Math.min(this.o.pushConcurrency ?? PUSH_CONCURRENCY, batches.length) }, pusher),
        );
        const error = results.find((r) => r.status === 'rejected');
        if (error) throw error.reason;
        pushed += round;
        // none left, or the rest held by another process's push (it pushes them)
        if (!round) break;
      }
    }
    return pushed;
  }

  /**
   * Pushes the unpushed levels among `deviceIds` in `tx`: claims them (`skip locked`: those another
   * push holds are its own) and marks them pushed, then hands them to the sink in
   * device-id order (the order the dispatcher locks `device_states` rows in); a failure rolls both
   * back. How many were pushed.
   */
  async pushOne(tx: Tx, orgId: string, deviceIds: readonly string[]): Promise<number> {
    await enterTenant(tx, orgId);
    // By primary key alone, both statements (row-level security keeps it to the organization): with
    // `pushed_at is null` or `org_id` in the query the planner may take the partial push index or the
    // organization's, whose statistics the firing has just made wrong, and read every unpushed row.
    const { rows: locked } = await sql<{ device_id: string; level: number; ramp_seconds: number; unpushed: boolean }>`
      select device_id, level, ramp_seconds, pushed_at is null as unpushed from program_device_levels
      where device_id = any(${deviceIds}::uuid[]) for update skip locked`.execute(tx);
    const rows = locked.filter((r) => r.unpushed);
    if (!rows.length) return 0;
    await sql`update program_device_levels set pushed_at = now() where device_id = any(${rows.map((r) => r.device_id)}::uuid[])`.execute(
      tx,
    );
    rows.sort((a, b) => (a.device_id < b.device_id ? -1 : a.device_id > b.device_id ? 1 : 0));
    await this.o.sink.push(
      tx,
      orgId,
      rows.map((r) => ({ deviceId: r.device_id, level: r.level, rampSeconds: r.ramp_seconds })),
      'system:programs',
    );
    await this.o.onPush?.({ orgId, devices: rows.length });
    return rows.length;
  }
}

/** Overrides in force at `now` (started, not ended), optionally with one being started counted as started. */
async function activeOverrides(tx: Tx, orgId: string, now: number, including?: string): Promise<OverrideRow[]> {
  const { rows } = await sql<{
    id: string;
    site_id: string | null;
    device_id: string | null;
    level: number;
    starts_at: Date;
    end_at: Date;
    created_at: Date;
  }>`
    select id, site_id, device_id, level, starts_at, least(expires_at, coalesce(canceled_at, expires_at)) as end_at, created_at
    from program_overrides
    where org_id = ${orgId} and (ended_at is null or id = ${including ?? null}::uuid) and (started_at is not null or id = ${including ?? null}::uuid)
      and starts_at <= ${new Date(now)} and least(expires_at, coalesce(canceled_at, expires_at)) > ${new Date(now)}`.execute(tx);
  return rows.map((r) => ({
    id: r.id,
    siteId: r.site_id,
    deviceId: r.device_id,
    level: r.level,
    startsAt: r.starts_at.getTime(),
    expiresAt: r.end_at.getTime(),
    createdAt: r.created_at.getTime(),
  }));
}

/** Records a firing; null when this source fired at this instant already (it is never applied twice). */
async function recordFiring(
  tx: Tx,
  orgId: string,
  source: 'program' | 'override-start' | 'override-end',
  refId: string,
  at: number,
  level: number | null,
  devices: number,
  point: { programId: string; index: number } | null,
): Promise<number | null> {
  const { rows } = await sql<{ id: number }>`
    insert into program_firings (org_id, source, ref_id, at, level, devices, program_id, switch_point)
    values (${orgId}, ${source}, ${refId}, ${new Date(at)}, ${level}, ${devices}, ${point?.programId ?? null}, ${point?.index ?? null})
    on conflict (source, ref_id, at) do nothing returning id`.execute(tx);
  return rows[0]?.id ?? null;
}
