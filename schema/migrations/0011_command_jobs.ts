import { type Kysely, sql } from 'kysely';

/** Tenant tables of this migration: RLS keyed on `rulr.org_id`, as in 0001, 0005, 0010 and 0040. */
const TABLES = ['command_jobs', 'command_job_targets'];

/**
 * Fleet jobs (docs/commands.md, "Fleet jobs"): one command for every device of a site subtree.
 * - `command_jobs`: the job, its rollout and abort rule, and all the runner's state, so a workers
 *   restart resumes where it was: `released` devices so far, `release_cursor` (the last device id released,
 *   targets go in device-id order), `rollout_credit`/`rollout_at` (the token bucket of
 *   `rollout_per_minute`), `progress` (the last counts the runner published), `settled_at` (no
 *   command of the job can change any more).
 * - `command_job_targets`: the devices the job was created for (a snapshot: a device added to the
 *   site later is not included), released in slices as ordinary `commands` rows with `job_id`;
 *   `commands_job_device_idx` makes one command per device per job a property of the table.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table command_jobs (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      site_id uuid not null references sites(id) on delete cascade,
      profile_id uuid references device_profiles(id) on delete set null,
      name text not null check (length(name) between 1 and 64),
      params jsonb not null default '{}' check (jsonb_typeof(params) = 'object'),
      timeout_s integer not null check (timeout_s between 1 and 86400),
      expiry_s integer not null check (expiry_s between 1 and 2592000),
      rollout_per_minute integer check (rollout_per_minute between 1 and 100000),
      rollout_increase_factor double precision check (rollout_increase_factor > 1 and rollout_increase_factor <= 10),
      rollout_increase_every integer check (rollout_increase_every >= 1),
      abort_failed_percent double precision check (abort_failed_percent > 0 and abort_failed_percent <= 100),
      abort_min_devices integer check (abort_min_devices >= 1),
      status text not null default 'RUNNING' check (status in ('RUNNING', 'PAUSED', 'CANCELED', 'ABORTED', 'COMPLETED')),
      abort_reason text,
      total integer not null default 0,
      released integer not null default 0,
      release_cursor uuid,
      rollout_credit double precision not null default 1,
      rollout_at timestamptz not null default now(),
      progress jsonb not null default '{}' check (jsonb_typeof(progress) = 'object'),
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      completed_at timestamptz,
      settled_at timestamptz,
      check ((abort_failed_percent is null) = (abort_min_devices is null)),
      check ((rollout_increase_factor is null) = (rollout_increase_every is null))
    );
    create index command_jobs_list_idx on command_jobs (org_id, created_at desc, id desc);
    create index command_jobs_live_idx on command_jobs (updated_at) where settled_at is null;

    create table command_job_targets (
      job_id uuid not null references command_jobs(id) on delete cascade,
      device_id uuid not null references devices(id) on delete cascade,
      org_id uuid not null references organizations(id) on delete cascade,
      primary key (job_id, device_id)
    );
    create unique index commands_job_device_idx on commands (job_id, device_id) where job_id is not null;
    alter table commands add constraint commands_job_fk foreign key (job_id) references command_jobs(id) on delete set null;
  `.execute(db);
  for (const t of TABLES) {
    await sql
      .raw(`alter table ${t} enable row level security; alter table ${t} force row level security;
      create policy tenant_isolation on ${t} using (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid)
        with check (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid);
      create policy system_access on ${t} to public using (current_user <> 'rulr_app') with check (current_user <> 'rulr_app');
      grant select, insert, update, delete on ${t} to rulr_app;`)
      .execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table commands drop constraint if exists commands_job_fk;
    drop index if exists commands_job_device_idx;
    drop table if exists command_job_targets;
    drop table if exists command_jobs;
  `.execute(db);
}
