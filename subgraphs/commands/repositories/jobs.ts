import { type RawBuilder, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { cancelQueuedCommands, MAX_JOB_DEVICES, progressOf } from '../../../lib/command-jobs.js';
import { type CommandChange, checkCommand, storedSpecs } from '../../../lib/commands.js';
import { type Db, type Tx, tenantReadRows, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { CommandCursor, JobFilterInput, SendSiteCommandInput } from '../validation.js';

/** One `command_jobs` row as the resolvers read it, with its commands counted by status. */
export interface JobRow {
  id: string;
  org_id: string;
  site_id: string;
  profile_id: string | null;
  name: string;
  params: Record<string, unknown>;
  timeout_s: number;
  rollout_per_minute: number | null;
  rollout_increase_factor: number | null;
  rollout_increase_every: number | null;
  abort_failed_percent: number | null;
  abort_min_devices: number | null;
  status: string;
  abort_reason: string | null;
  total: number;
  released: number;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  completed_at: Date | null;
  /** commands of the job by status */
  counts: Record<string, number>;
  /** `created_at` as text at full precision (the page cursor) */
  created_at_text: string;
}

/** What a job mutation did: the job, and what to announce or wake after the commit. */
export interface JobWrite {
  row: JobRow;
  /** false: nothing changed (a repeated pause, resume or cancel) */
  changed: boolean;
  /** commands whose status changed (cancel) */
  changes: CommandChange[];
  /** devices whose job commands may go now (resume) */
  dispatch: string[];
}

const JOB = sql.raw(`j.id, j.org_id, j.site_id, j.profile_id, j.name, j.params, j.timeout_s, j.rollout_per_minute,
  j.rollout_increase_factor, j.rollout_increase_every, j.abort_failed_percent, j.abort_min_devices, j.status, j.abort_reason,
  j.total, j.released, j.created_by, j.created_at, j.updated_at, j.completed_at, j.created_at::text as created_at_text,
  (select coalesce(jsonb_object_agg(x.status, x.n), '{}'::jsonb)
     from (select c.status, count(*)::int as n from commands c where c.job_id = j.id group by c.status) x) as counts`);

/** The devices of a site subtree a job may target: this organization's, not decommissioned, whose profile declares `name`. */
const targetDevices = (orgId: string, path: string, name: string, profileId: string | null | undefined) =>
  sql`select d.id from devices d join sites s on s.id = d.site_id join device_profiles p on p.id = d.profile_id
      where d.org_id = ${orgId} and s.org_id = ${orgId} and s.path <@ ${path}::ltree and d.decommissioned_at is null
        and p.commands @> jsonb_build_array(jsonb_build_object('name', ${name}::text))
        ${profileId ? sql`and d.profile_id = ${profileId}` : sql``}`;

/** Fleet jobs (docs/commands.md, "Fleet jobs"): reads through `tenantReadRows`, writes in `withTenant` with their audit row. */
export class CommandJobsRepository {
  constructor(private readonly db: Db) {}

  private read<T>(orgId: string, q: RawBuilder<T>): Promise<T[]> {
    return tenantReadRows<T>(this.db, orgId, q.compile(this.db));
  }

  async byIds(orgId: string, ids: readonly string[]): Promise<JobRow[]> {
    return this.read(orgId, sql<JobRow>`select ${JOB} from command_jobs j where j.org_id = ${orgId} and j.id = any(${ids}::uuid[])`);
  }

  /** A page of jobs, newest first. */
  async list(orgId: string, o: { limit: number; after?: CommandCursor | undefined; filter: JobFilterInput }): Promise<JobRow[]> {
    const f = o.filter;
    const where = [sql`j.org_id = ${orgId}`];
    if (f.siteId)
      where.push(sql`j.site_id in (select s.id from sites s where s.org_id = ${orgId}
        and s.path <@ (select path from sites where id = ${f.siteId} and org_id = ${orgId}))`);
    if (f.status?.length) where.push(sql`j.status = any(${f.status}::text[])`);
    if (f.from) where.push(sql`j.created_at >= ${f.from}`);
    if (f.to) where.push(sql`j.created_at < ${f.to}`);
    if (o.after) where.push(sql`(j.created_at, j.id) < (${o.after[0]}::timestamptz, ${o.after[1]}::uuid)`);
    return this.read(
      orgId,
      sql<JobRow>`select ${JOB} from command_jobs j where ${sql.join(where, sql` and `)}
        order by j.created_at desc, j.id desc limit ${o.limit}`,
    );
  }

  /**
   * Creates a job over the site's subtree: the site (and profile) must be this organization's, every
   * profile concerned must declare `name` and accept `params`; the targets are snapshot in one
   * INSERT … SELECT. The workers' runner releases them.
   */
  async create(identity: Identity, input: SendSiteCommandInput, o: { expiryS: number }, now = new Date()): Promise<JobRow> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    const params = input.params ?? {};
    const id = await withTenant(this.db, orgId, async (tx) => {
      const { rows: sites } = await sql<{ path: string }>`
        select path::text as path from sites where id = ${input.siteId} and org_id = ${orgId}`.execute(tx);
      const site = sites[0];
      if (!site) throw new NotFoundError('site');
      await this.checkProfiles(tx, orgId, site.path, input, params);
      const { rows: created } = await sql<{ id: string }>`
        insert into command_jobs (org_id, site_id, profile_id, name, params, timeout_s, expiry_s, rollout_per_minute,
          rollout_increase_factor, rollout_increase_every, abort_failed_percent, abort_min_devices, created_by,
          created_at, updated_at, rollout_at)
        values (${orgId}, ${input.siteId}, ${input.profileId ?? null}, ${input.name}, ${JSON.stringify(params)}::jsonb,
          ${input.timeoutSeconds}, ${o.expiryS}, ${input.rolloutPerMinute ?? null}, ${input.rolloutIncrease?.factor ?? null},
          ${input.rolloutIncrease?.everySucceeded ?? null}, ${input.abortWhen?.failedPercent ?? null},
          ${input.abortWhen?.minDevices ?? null}, ${actor}, ${now}, ${now}, ${now})
        returning id`.execute(tx);
      const jobId = (created[0] as { id: string }).id;
      const r = await sql`
        insert into command_job_targets (job_id, device_id, org_id)
        select ${jobId}::uuid, t.id, ${orgId}::uuid from (${targetDevices(orgId, site.path, input.name, input.profileId)}) t`.execute(tx);
      const total = Number(r.numAffectedRows ?? 0);
      if (!total)
        throw new BadInputError(`input.siteId: no device of the site or below it accepts ${input.name}`, { field: 'input.siteId' });
      if (total > MAX_JOB_DEVICES)
        throw new BadInputError(`input.siteId: ${total} devices; one job covers at most ${MAX_JOB_DEVICES}`, { field: 'input.siteId' });
      await sql`update command_jobs set total = ${total} where id = ${jobId}`.execute(tx);
      await audit(tx, orgId, actor, 'command-job.send', 'command_job', jobId, null, { ...input, params, total });
      return jobId;
    });
    return (await this.byIds(orgId, [id]))[0] as JobRow;
  }

  /** Every profile the job concerns declares `name` and accepts `params` (BAD_USER_INPUT naming the field, as `sendCommand`). */
  private async checkProfiles(tx: Tx, orgId: string, path: string, input: SendSiteCommandInput, params: Record<string, unknown>) {
    if (input.profileId) {
      const { rows } = await sql<{ commands: unknown }>`
        select commands from device_profiles where id = ${input.profileId} and org_id = ${orgId}`.execute(tx);
      if (!rows[0]) throw new NotFoundError('device profile');
      checkCommand(storedSpecs(rows[0].commands), input.name, params, 'input');
      return;
    }
    const { rows } = await sql<{ commands: unknown }>`
      select p.commands from device_profiles p
      where p.org_id = ${orgId} and p.commands @> jsonb_build_array(jsonb_build_object('name', ${input.name}::text))
        and exists (select 1 from devices d join sites s on s.id = d.site_id
                    where d.profile_id = p.id and s.path <@ ${path}::ltree and d.decommissioned_at is null)`.execute(tx);
    if (!rows.length)
      throw new BadInputError(`input.name: no device profile of the site or below it declares a command ${input.name.slice(0, 64)}`, {
        field: 'input.name',
      });
    for (const r of rows) checkCommand(storedSpecs(r.commands), input.name, params, 'input');
  }

  private async current(tx: Tx, orgId: string, id: string): Promise<JobRow> {
    const { rows } = await sql<JobRow>`select ${JOB} from command_jobs j where j.id = ${id} and j.org_id = ${orgId}`.execute(tx);
    if (!rows[0]) throw new NotFoundError('command job');
    return rows[0];
  }

  /**
   * Moves the job from one of `from` to `to` (audited), or returns it unchanged when it is already
   * `to` (or, for cancel, already ended); CONFLICT from any other status.
   */
  private async transition(
    identity: Identity,
    id: string,
    action: 'pause' | 'resume' | 'cancel',
    now: Date,
    extra: (tx: Tx, row: JobRow) => Promise<Partial<JobWrite>>,
  ): Promise<JobWrite> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    const [from, to] = { pause: [['RUNNING'], 'PAUSED'], resume: [['PAUSED'], 'RUNNING'], cancel: [['RUNNING', 'PAUSED'], 'CANCELED'] }[
      action
    ] as [string[], string];
    const done = await withTenant(this.db, orgId, async (tx) => {
      const { rows } = await sql<{ before: string }>`
        update command_jobs j set status = ${to}, updated_at = ${now}, settled_at = null,
          rollout_at = case when ${to} = 'RUNNING' then ${now}::timestamptz else j.rollout_at end,
          completed_at = case when ${to} = 'CANCELED' then ${now}::timestamptz else j.completed_at end
        from command_jobs b where b.id = j.id and j.id = ${id} and j.org_id = ${orgId} and j.status = any(${from}::text[])
        returning b.status as before`.execute(tx);
      if (!rows[0]) {
        const cur = await this.current(tx, orgId, id);
        if (cur.status === to || (action === 'cancel' && cur.status !== 'RUNNING' && cur.status !== 'PAUSED'))
          return { row: cur, changed: false, changes: [], dispatch: [] };
        throw new ConflictError(`the job is ${cur.status}: it cannot be ${action === 'pause' ? 'paused' : 'resumed'}`);
      }
      const row = await this.current(tx, orgId, id);
      const more = await extra(tx, row);
      await audit(tx, orgId, actor, `command-job.${action}`, 'command_job', id, { status: rows[0].before }, { status: to });
      return { row, changed: true, changes: more.changes ?? [], dispatch: more.dispatch ?? [] };
    });
    if (!done.changed || (!done.changes.length && !done.dispatch.length)) return done;
    return { ...done, row: (await this.byIds(orgId, [id]))[0] as JobRow };
  }

  pause(identity: Identity, id: string, now = new Date()): Promise<JobWrite> {
    return this.transition(identity, id, 'pause', now, async () => ({}));
  }

  /** Continues the rollout from now (the paused time earns no burst) and marks the devices of its waiting commands for dispatch. */
  resume(identity: Identity, id: string, now = new Date()): Promise<JobWrite> {
    return this.transition(identity, id, 'resume', now, async (tx) => {
      const { rows } = await sql<{ device_id: string }>`
        update device_states set pending_dispatch = true
        where device_id in (select device_id from commands where job_id = ${id} and status = 'QUEUED')
        returning device_id`.execute(tx);
      return { dispatch: rows.map((r) => r.device_id) };
    });
  }

  cancel(identity: Identity, id: string, now = new Date()): Promise<JobWrite> {
    const actor = actorOf(identity);
    return this.transition(identity, id, 'cancel', now, async (tx) => ({
      changes: await cancelQueuedCommands(tx, identity.orgId, id, { actor, why: `job canceled by ${actor}`, now }),
    }));
  }
}

/** The progress of a job row (unreleased targets as queued or canceled). */
export const jobProgress = (j: JobRow) => progressOf(j.counts, j);
