import { sql } from 'kysely';
import { audit } from '../lib/audit.js';
import { rulesVersionKey } from '../lib/contracts/rule-state.js';
import type { Db, Tx } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import { type AlarmReport, parseScheduleAction, type ScheduleAction } from '../lib/schedule-actions.js';
import { nextOccurrence } from '../lib/schedules.js';
import { WORKER_ID } from './rule-wait.js';

const runsTotal = counter('rulr_schedule_runs_total', 'Cron schedule occurrences run, by status', ['status']);

export interface ScheduleRunnerOptions {
  db: Db;
  redis: Redis;
  /** `REDIS_PREFIX` */
  prefix: string;
  logger: Logger;
  /** How often due occurrences are looked for. @default 1000 */
  tickMs?: number;
  /**
   * An occurrence missed by more than this (no workers ran) is recorded as skipped, not run, and the
   * schedule moves to its next occurrence after now.
   * @default 900000 (15 minutes)
   */
  catchUpMs?: number;
  /** test hook: runs inside the claiming transaction, before the action */
  onClaim?: (scheduleId: string, occurrence: Date) => Promise<void>;
}

interface DueRow {
  id: string;
  org_id: string;
  cron: string;
  time_zone: string;
  action: unknown;
  next_at: Date;
}

/**
 * Runs cron schedules (lib/schedules.ts) exactly once per occurrence across workers processes: the
 * due schedule is claimed with `for update skip locked`, its run is recorded under the unique
 * `(schedule_id, occurrence)`, the action runs and `next_at` moves on, all in one transaction. A
 * process killed while holding a claim rolls all of it back, and the next process runs it. See
 * docs/alarms-rules.md.
 */
export class ScheduleRunner {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private closed = false;

  constructor(private readonly o: ScheduleRunnerOptions) {}

  start(): this {
    const loop = () => {
      if (this.closed) return;
      this.running = this.tick()
        .catch((e: unknown) => this.o.logger.warn({ err: (e as Error).message }, 'schedules: tick failed; retried'))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(loop, this.o.tickMs ?? 1000);
        });
    };
    loop();
    return this;
  }

  /** Runs due occurrences until none is left (at most 100 per round); returns how many ran. */
  async tick(): Promise<number> {
    let n = 0;
    while (n < 100 && !this.closed && (await this.runNext())) n++;
    return n;
  }

  /** Claims and runs the most overdue occurrence; false when none is due. */
  async runNext(): Promise<boolean> {
    const bumps: string[] = [];
    const ran = await this.o.db.transaction().execute(async (tx) => {
      const { rows } = await sql<DueRow>`
        select id, org_id, cron, time_zone, action, next_at from schedules
        where enabled and next_at <= now() order by next_at limit 1 for update skip locked`.execute(tx);
      const row = rows[0];
      if (!row) return false;
      await this.o.onClaim?.(row.id, row.next_at);
      await sql`select set_config('role', 'rulr_app', true), set_config('rulr.org_id', ${row.org_id}, true)`.execute(tx);
      const now = Date.now();
      const spec = { cron: row.cron, timeZone: row.time_zone };
      const missed = now - row.next_at.getTime() > (this.o.catchUpMs ?? 900_000);
      let status: 'succeeded' | 'failed' | 'skipped' = 'skipped';
      let result: unknown = null;
      let error: string | null = missed ? 'missed: no workers process ran at the time' : null;
      if (!missed) {
        try {
          const action = parseScheduleAction(row.action);
          const r = await this.runAction(tx, row, action);
          ({ status, result, error } = r);
          if (r.bump) bumps.push(row.org_id);
        } catch (e) {
          // a corrupt action: recorded as failed, the schedule goes on
          status = 'failed';
          error = (e as Error).message.slice(0, 2000);
        }
      }
      const inserted = await sql<{ id: string }>`
        insert into schedule_runs (org_id, schedule_id, occurrence, status, result, error, worker)
        values (${row.org_id}, ${row.id}, ${row.next_at}, ${status}, ${result === null ? null : JSON.stringify(result)}::jsonb, ${error}, ${WORKER_ID})
        on conflict (schedule_id, occurrence) do nothing returning id`.execute(tx);
      if (!inserted.rows.length) throw new Error('schedule occurrence already ran');
      const next = nextOccurrence(spec, missed ? now : row.next_at.getTime());
      await sql`update schedules set next_at = ${next === null ? null : new Date(next)}, last_at = ${row.next_at}
        where id = ${row.id} and org_id = ${row.org_id}`.execute(tx);
      runsTotal.inc({ status });
      return true;
    });
    for (const orgId of bumps) {
      await this.o.redis.incr(rulesVersionKey(this.o.prefix, orgId)).catch((e: unknown) => {
        this.o.logger.warn({ orgId, err: (e as Error).message }, 'schedules: could not bump the rules version');
      });
    }
    return ran;
  }

  private async runAction(
    tx: Tx,
    row: DueRow,
    action: ScheduleAction,
  ): Promise<{ status: 'succeeded' | 'failed'; result: unknown; error: string | null; bump?: boolean }> {
    const orgId = row.org_id;
    if (action.kind === 'alarm_report') {
      const site = action.siteId
        ? sql`and a.device_id in (select d.id from devices d join sites s on s.id = d.site_id and s.org_id = ${orgId}
              where d.org_id = ${orgId} and s.path <@ (select path from sites where id = ${action.siteId} and org_id = ${orgId}))`
        : sql``;
      const { rows } = await sql<{ severity: string; n: number; unack: number }>`
        select a.severity, count(*)::int as n, count(*) filter (where a.acknowledged_at is null)::int as unack
        from alarms a where a.org_id = ${orgId} and a.cleared_at is null ${site} group by a.severity`.execute(tx);
      const report: AlarmReport = {
        siteId: action.siteId,
        active: rows.reduce((s, r) => s + r.n, 0),
        unacknowledged: rows.reduce((s, r) => s + r.unack, 0),
        bySeverity: Object.fromEntries(rows.map((r) => [r.severity, r.n])),
      };
      return { status: 'succeeded', result: report, error: null };
    }
    const enabled = action.kind === 'enable_rule';
    const { rows } = await sql<{ id: string; was: boolean }>`
      update rules r set enabled = ${enabled}, updated_at = now()
      from (select id, enabled as was from rules where org_id = ${orgId} and id = ${action.ruleId} and deleted_at is null for update) old
      where r.id = old.id and r.org_id = ${orgId}
      returning r.id, old.was`.execute(tx);
    const rule = rows[0];
    if (!rule) return { status: 'failed', result: null, error: 'rule not found (deleted?)' };
    if (rule.was !== enabled) {
      await audit(tx, orgId, `schedule:${row.id}`, 'rule.update', 'rule', rule.id, { enabled: rule.was }, { enabled });
    }
    return { status: 'succeeded', result: { ruleId: rule.id, enabled, changed: rule.was !== enabled }, error: null, bump: true };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
