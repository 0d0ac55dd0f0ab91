import { Worker } from 'bullmq';
import { sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import { type AlarmEvent, queueAlarmEvents, writeAlarms } from '../lib/alarm-writer.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { parseRuleEvalJob, RULE_EVAL_QUEUE } from '../lib/contracts/rule-eval.js';
import { addRuleStatsBatch, rulesVersionKey } from '../lib/contracts/rule-state.js';
import { type Db, type Tx, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { firedActions } from '../lib/rule-actions.js';
import { decide, describeMatch, type EvalRule, type Operator, passes, SEVERITIES, type Severity, scopeIndexOf } from '../lib/rules.js';
import { RuleActionRunner, type RuleActionsOptions, safeActions } from './rule-actions.js';
import {
  alarmKey,
  type DeviceScope,
  type LoadedWaitRule,
  type OpenAlarm,
  openAlarms,
  RuleWait,
  scopes,
  type WaitOut,
  type WaitOutcome,
} from './rule-wait.js';

const jobsTotal = counter('rulr_rule_eval_jobs_total', 'rule-eval jobs by outcome', ['outcome']);
const readingsTotal = counter('rulr_rule_eval_readings_total', 'Readings compared with a rule (one per rule and reading)');
const invalidTotal = counter('rulr_rule_eval_invalid_total', 'Malformed rule-eval jobs or readings, skipped');
const alarmsTotal = counter('rulr_alarms_total', 'Alarms raised and cleared by rules', ['change']);

/** How long a cached rule set is trusted without a version change (a missed bump heals after this). */
const RULES_TTL_MS = 60_000;

export interface RuleEvaluatorOptions {
  db: Db;
  /** Shared client: rule versions, counters and event publishes. */
  redis: Redis;
  /** BullMQ opens its own blocking connections from this URL. */
  redisUrl: string;
  /** `REDIS_PREFIX`: queue keys under `<prefix>bull`, events and counters under `<prefix>`. */
  prefix: string;
  /** Jobs evaluated at once by this process. @default 2 */
  concurrency?: number;
  /** `RULE_STATE_CACHE_MAX`: waiting-rule states kept in memory between jobs. @default 100000 */
  stateCacheMax?: number;
  /** command defaults of the rules' device actions */
  actions?: RuleActionsOptions;
  logger: Logger;
}

/** What one job did. */
export interface EvalSummary {
  /** rule × reading comparisons */
  readings: number;
  matched: number;
  raised: number;
  cleared: number;
  /** readings older than what an alarm already reflects (a job evaluated late) */
  stale: number;
}

interface LatestAlarm {
  id: string;
  open: boolean;
  readingTs: number | null;
  severity?: string;
}

/** A numeric reading of a watched metric. */
interface Candidate {
  deviceId: string;
  ts: number;
  value: number;
}

/** A reading of a device in a rule's scope: what one decision is made from. */
interface Pair extends Candidate {
  rule: EvalRule;
  /** the reading passes the rule's threshold */
  breach: boolean;
}

/** Map key of one device's alarm of one type. */
interface Keep {
  id: string;
  value: number;
  ts: number;
  breach: boolean;
  severity: Severity;
  /** the alarm's severity as read (the most severe rule of the type may have changed) */
  previousSeverity: string | undefined;
}
interface Clear {
  id: string;
  rule: EvalRule;
  value: number;
  ts: number;
}

interface RuleCount {
  readings: number;
  matched: number;
  raised: number;
  cleared: number;
}

const SEVERITY_RANK = new Map(SEVERITIES.map((s, i) => [s, i]));

const typesCache = new WeakMap<readonly EvalRule[], Set<string>>();
/** The alarm types of a (cached, unchanging) threshold rule list. */
function typesOf(rules: readonly EvalRule[]): Set<string> {
  let t = typesCache.get(rules);
  if (!t) {
    t = new Set(rules.map((r) => r.alarmType));
    typesCache.set(rules, t);
  }
  return t;
}
const disjointCache = new WeakMap<readonly EvalRule[], WeakMap<readonly LoadedWaitRule[], boolean>>();
/** No alarm type is both a threshold rule's and a waiting rule's (per pair of cached rule lists). */
function disjointTypes(rules: readonly EvalRule[], waitRules: readonly LoadedWaitRule[]): boolean {
  let m = disjointCache.get(rules);
  if (!m) {
    m = new WeakMap();
    disjointCache.set(rules, m);
  }
  let d = m.get(waitRules);
  if (d === undefined) {
    const types = typesOf(rules);
    d = !waitRules.some((w) => types.has(w.alarmType));
    m.set(waitRules, d);
  }
  return d;
}
/** The devices of a job's threshold candidates. */
function candidateDevices(byMetric: ReadonlyMap<string, readonly Candidate[]>): Set<string> {
  const ids = new Set<string>();
  for (const list of byMetric.values()) for (const c of list) ids.add(c.deviceId);
  return ids;
}

/**
 * The `rule-eval` consumer: compares each job's readings with the organization's enabled rules and
 * raises, refreshes or clears alarms in one tenant transaction per job, then publishes `alarmChanged`
 * events and counts evaluations in Redis. Jobs may run out of order (several workers, retries):
 * an alarm remembers the time of the newest reading applied to it (`reading_ts`) and older readings
 * leave it alone. See docs/alarms-rules.md.
 */
export class RuleEvaluator {
  private worker?: Worker;
  private readonly rules = new LRUCache<string, { version: string | null; rules: EvalRule[]; at: number }>({ max: 10_000 });

  /** Rules that wait: evaluated here from readings, their timers swept by {@link RuleTimers}. */
  readonly wait: RuleWait;

  private readonly actions: RuleActionRunner;

  constructor(private readonly o: RuleEvaluatorOptions) {
    this.actions = new RuleActionRunner(o.redis, o.prefix, o.logger, o.actions);
    this.wait = new RuleWait({ ...o, actions: this.actions });
  }

  start(): this {
    const connection = { url: this.o.redisUrl, maxRetriesPerRequest: null };
    this.worker = new Worker(RULE_EVAL_QUEUE, (job) => this.evaluate(job.data), {
      connection,
      prefix: queuePrefix(this.o.prefix),
      concurrency: this.o.concurrency ?? 2,
    });
    this.worker.on('failed', (job, err) => {
      jobsTotal.inc({ outcome: 'failed' });
      this.o.logger.warn({ jobId: job?.id, attempts: job?.attemptsMade, err: err.message }, 'rule-eval job failed; retried with backoff');
    });
    this.worker.on('error', (err) => this.o.logger.warn({ err: err.message }, 'rule-eval worker error'));
    return this;
  }

  /**
   * Evaluates one job's data (the BullMQ processor; callable directly). A malformed job or reading
   * is skipped and counted (lib/contracts/rule-eval.ts). Throws on storage errors, so BullMQ retries.
   */
  async evaluate(data: unknown): Promise<EvalSummary> {
    const summary: EvalSummary = { readings: 0, matched: 0, raised: 0, cleared: 0, stale: 0 };
    let parsed: ReturnType<typeof parseRuleEvalJob>;
    try {
      parsed = parseRuleEvalJob(data);
    } catch (e) {
      invalidTotal.inc();
      jobsTotal.inc({ outcome: 'invalid' });
      this.o.logger.warn({ err: (e as Error).message }, 'malformed rule-eval job skipped');
      return summary;
    }
    const { job, invalid } = parsed;
    if (invalid) invalidTotal.inc(invalid);
    const orgId = job.orgId;
    // one GET of the rules version for both kinds of rules
    const version = await this.o.redis.get(rulesVersionKey(this.o.prefix, orgId));
    const rules = await this.rulesFor(orgId, version);
    const waitRules = await this.wait.rulesFor(orgId, version);
    // rules that wait (durations, repeats, expressions, no data) keep per-device state (workers/rule-wait.ts)
    const waitReadings = this.wait.readingsByDevice(waitRules, job.readings);
    // the numeric readings of metrics some threshold rule watches, by metric
    const byMetric = new Map<string, Candidate[]>(rules.map((r) => [r.metric, []]));
    let candidates = 0;
    for (const r of job.readings) {
      const list = byMetric.get(r.metric);
      if (list && r.value !== null) {
        list.push({ deviceId: r.deviceId, ts: r.ts, value: r.value });
        candidates++;
      }
    }
    if (!candidates && !waitReadings) {
      jobsTotal.inc({ outcome: 'no_rules' });
      return summary;
    }

    const perRule = new Map<string, RuleCount>();
    const events: AlarmEvent[] = [];
    const ruleById = new Map(rules.map((r) => [r.id, r]));
    const devices = new Map<string, DeviceScope>();
    let dispatch: string[] = [];
    const waitOut: WaitOut = { events: [], dispatch: [] };
    let waitWritten: WaitOutcome['written'] = [];
    let preRead: Map<string, OpenAlarm> | null = null;
    // one tenant transaction per job for both kinds of rules
    await withTenant(this.o.db, orgId, async (tx) => {
      const idSet = new Set<string>(waitReadings?.keys());
      for (const list of byMetric.values()) for (const c of list) idSet.add(c.deviceId);
      for (const d of await scopes(tx, orgId, [...idSet])) devices.set(d.id, d);
      // the waiting rules first: the threshold rules below see the alarms they wrote (as when they
      // committed in a transaction of their own before)
      if (waitReadings) {
        // when no alarm type is both a threshold rule's and a waiting rule's, the waiting rules' writes
        // cannot change what the threshold rules read: their open alarms come in the same statement
        const also =
          candidates && disjointTypes(rules, waitRules) ? { deviceIds: candidateDevices(byMetric), types: typesOf(rules) } : undefined;
        const w = await this.wait.apply(tx, orgId, waitRules, waitReadings, devices, waitOut, also);
        summary.raised += w.raised;
        summary.cleared += w.cleared;
        waitWritten = w.written;
        preRead = w.open;
      }
      if (!candidates) return;

      // Device by device, its rules most severe first (`rulesFor` sorts them, the scope index keeps
      // their order), so the first pair of a device and alarm type below is the most severe rule's.
      const index = scopeIndexOf(rules);
      const byDevice = new Map<string, Map<string, Candidate[]>>();
      for (const [metric, list] of byMetric) {
        for (const c of list) {
          let m = byDevice.get(c.deviceId);
          if (!m) {
            m = new Map();
            byDevice.set(c.deviceId, m);
          }
          const l = m.get(metric);
          if (l) l.push(c);
          else m.set(metric, [c]);
        }
      }
      const pairs: Pair[] = [];
      for (const [deviceId, metrics] of byDevice) {
        const device = devices.get(deviceId);
        if (!device) continue;
        for (const rule of index.forDevice(device)) {
          for (const c of metrics.get(rule.metric) ?? []) {
            const breach = passes(rule.operator, rule.threshold, c.value);
            pairs.push({ rule, ...c, breach });
            const n = perRule.get(rule.id) ?? { readings: 0, matched: 0, raised: 0, cleared: 0 };
            n.readings++;
            if (breach) n.matched++;
            perRule.set(rule.id, n);
          }
        }
      }
      summary.readings = pairs.length;
      for (const n of perRule.values()) summary.matched += n.matched;
      if (!pairs.length) return;

      const latest = await this.latestAlarms(tx, orgId, pairs, preRead);
      const raises: Pair[] = [];
      const keeps: Keep[] = [];
      const clears: Clear[] = [];
      // One decision per device and alarm type per job: rules sharing a type share the alarm, and the
      // most severe rule decides.
      const decided = new Set<string>();
      for (const p of pairs) {
        const key = alarmKey(p.deviceId, p.rule.alarmType);
        if (decided.has(key)) continue;
        decided.add(key);
        const cur = latest.get(key);
        if (cur?.readingTs != null && p.ts <= cur.readingTs) {
          summary.stale++;
          continue;
        }
        const open = cur?.open === true;
        const d = decide(p.rule, p.value, open, p.rule.autoClear);
        if (d === 'raise') raises.push(p);
        else if (d === 'keep' && cur)
          keeps.push({
            id: cur.id,
            value: p.value,
            ts: p.ts,
            breach: p.breach,
            severity: p.rule.severity,
            previousSeverity: cur.severity,
          });
        else if (d === 'clear' && cur) clears.push({ id: cur.id, rule: p.rule, value: p.value, ts: p.ts });
      }

      const written = await writeAlarms(tx, orgId, {
        raise: raises.map((r) => ({
          deviceId: r.deviceId,
          ruleId: r.rule.id,
          type: r.rule.alarmType,
          severity: r.rule.severity,
          message: describeMatch(r.rule.metric, r.rule, r.value),
          value: r.value,
          readingTs: r.ts,
          at: r.ts,
          actor: `rule:${r.rule.id}`,
        })),
        refresh: keeps.map((k) => ({
          id: k.id,
          value: k.value,
          readingTs: k.ts,
          at: k.ts,
          breach: k.breach,
          severity: k.severity,
          previousSeverity: k.previousSeverity,
          actor: 'rule',
        })),
        clear: clears.map((c) => ({ id: c.id, value: c.value, readingTs: c.ts, at: c.ts, actor: `rule:${c.rule.id}` })),
      });
      events.push(...written.events);
      for (const a of written.raised) {
        const n = perRule.get(a.ruleId ?? '');
        if (n) n.raised++;
      }
      // a clear is the clearing rule's (rules sharing an alarm type share the alarm)
      const clearedBy = new Map(clears.map((c) => [c.id, c.rule]));
      for (const a of written.cleared) {
        const rule = clearedBy.get(a.id);
        const n = perRule.get(rule?.id ?? '');
        if (n) n.cleared++;
      }
      summary.raised += written.raised.length;
      summary.cleared += written.cleared.length;
      const fired = firedActions(written, ruleById, clearedBy);
      if (fired.length) dispatch = (await this.actions.run(tx, orgId, fired)).deviceIds;

      const executions = [...perRule].filter(([, n]) => n.raised + n.cleared > 0);
      if (executions.length) {
        await tx
          .insertInto('rule_executions')
          .values(executions.map(([ruleId, n]) => ({ org_id: orgId, rule_id: ruleId, ...n })))
          .execute();
      }
    });

    this.wait.remember(waitWritten);
    readingsTotal.inc(summary.readings);
    if (summary.raised) alarmsTotal.inc({ change: 'raised' }, summary.raised);
    if (summary.cleared) alarmsTotal.inc({ change: 'cleared' }, summary.cleared);
    await this.afterCommit(orgId, [...waitOut.events, ...events], devices, perRule);
    await this.actions.dispatch(orgId, waitOut.dispatch.length ? [...new Set([...waitOut.dispatch, ...dispatch])] : dispatch);
    jobsTotal.inc({ outcome: candidates ? 'evaluated' : 'no_rules' });
    return summary;
  }

  /**
   * What the decisions need per device and alarm type: the open alarm (the partial unique index on
   * open alarms), and only for breaching pairs without one, the newest cleared alarm's reading time
   * (one index probe per pair). The cost does not grow with the devices' alarm history.
   */
  private async latestAlarms(tx: Tx, orgId: string, pairs: Pair[], read: Map<string, OpenAlarm> | null): Promise<Map<string, LatestAlarm>> {
    const open =
      read ?? (await openAlarms(tx, orgId, [...new Set(pairs.map((p) => p.deviceId))], [...new Set(pairs.map((p) => p.rule.alarmType))]));
    const out = new Map<string, LatestAlarm>();
    for (const [k, a] of open) out.set(k, { id: a.id, open: true, readingTs: a.readingTs, severity: a.severity });
    const probe = new Map<string, [string, string]>();
    for (const p of pairs) {
      const k = alarmKey(p.deviceId, p.rule.alarmType);
      if (!out.has(k) && p.breach) probe.set(k, [p.deviceId, p.rule.alarmType]);
    }
    if (probe.size) {
      const list = [...probe.values()];
      const { rows } = await sql<{ id: string; device_id: string; type: string; reading_ts: number | null }>`
        select p.device_id, p.type, a.id, a.reading_ts
        from unnest(${list.map((x) => x[0])}::uuid[], ${list.map((x) => x[1])}::text[]) as p(device_id, type)
        cross join lateral (
          select id, reading_ts from alarms a
          where a.org_id = ${orgId} and a.device_id = p.device_id and a.type = p.type
          order by a.raised_at desc, a.id desc
          limit 1
        ) a`.execute(tx);
      for (const r of rows) out.set(alarmKey(r.device_id, r.type), { id: r.id, open: false, readingTs: r.reading_ts });
    }
    return out;
  }

  /**
   * Events and counters once the transaction committed. A failure here is logged, not thrown: the
   * alarms are stored, and retrying the job would find them already applied.
   */
  private async afterCommit(
    orgId: string,
    events: AlarmEvent[],
    devices: Map<string, DeviceScope>,
    perRule: Map<string, RuleCount>,
  ): Promise<void> {
    const p = this.o.redis.pipeline();
    const now = Date.now();
    queueAlarmEvents(p, this.o.prefix, orgId, events, devices, now);
    addRuleStatsBatch(p, this.o.prefix, perRule, now);
    try {
      await p.exec();
    } catch (e) {
      this.o.logger.warn({ orgId, err: (e as Error).message }, 'rule-eval: publishing alarm events failed');
    }
  }

  /** The organization's enabled rules, most severe first, cached until its version key changes. */
  private async rulesFor(orgId: string, version: string | null): Promise<EvalRule[]> {
    const hit = this.rules.get(orgId);
    if (hit && hit.version === version && Date.now() - hit.at < RULES_TTL_MS) return hit.rules;
    const rows = await withTenant(this.o.db, orgId, async (tx) => {
      const { rows } = await sql<{
        id: string;
        metric: string;
        operator: Operator;
        threshold: number;
        clear_threshold: number | null;
        severity: Severity;
        alarm_type: string;
        auto_clear: boolean;
        actions: unknown;
        site_path: string | null;
        profile_id: string | null;
      }>`
        select r.id, r.metric, r.operator, r.threshold, r.clear_threshold, r.severity, r.alarm_type, r.auto_clear, r.actions,
               s.path::text as site_path, r.profile_id
        from rules r left join sites s on s.id = r.site_id and s.org_id = ${orgId}
        where r.org_id = ${orgId} and r.enabled and r.deleted_at is null
          and r.kind = 'threshold' and r.for_seconds is null and r.repeat_count is null
        order by r.created_at, r.id`.execute(tx);
      return rows;
    });
    const rules: EvalRule[] = rows
      .map((r) => ({
        id: r.id,
        metric: r.metric,
        operator: r.operator,
        threshold: r.threshold,
        clearThreshold: r.clear_threshold,
        severity: r.severity,
        alarmType: r.alarm_type,
        autoClear: r.auto_clear,
        actions: safeActions(r.actions),
        sitePath: r.site_path,
        profileId: r.profile_id,
      }))
      .sort((a, b) => (SEVERITY_RANK.get(a.severity) ?? 9) - (SEVERITY_RANK.get(b.severity) ?? 9));
    this.rules.set(orgId, { version, rules, at: Date.now() });
    return rules;
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.actions.close();
  }
}
