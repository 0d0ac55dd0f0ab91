import { type Kysely, sql } from 'kysely';

/** Tenant tables of this migration: RLS keyed on `rulr.org_id`, as in 0001, 0005 and 0040. */
const TABLES = ['commands', 'device_states'];

/**
 * Device commands and desired state (docs/commands.md).
 * - `device_profiles.commands`: what a profile's devices accept, `[{name, params (JSON Schema), timeoutSeconds}]`.
 * - `commands`: one row per command, written before anything is sent (the outbox). `status` moves
 *   QUEUED → SENT (broker PUBACK) → DELIVERED (device `received`) → SUCCEEDED/FAILED (device result),
 *   or to EXPIRED / CANCELED / FAILED (timeout); every move is a conditional UPDATE and appends
 *   `{status, at, evidence}` to `history`. `lease_until` marks a claim for publishing (one in flight
 *   per device); `due_at` is the next timeout or expiry, swept with `for update skip locked`.
 *   `job_id` is the fleet job it belongs to (issue 12 item 6). `idempotency_key` is unique per organization.
 * - `device_states`: desired and reported state with a version (optimistic concurrency); `in_sync`
 *   is whether every desired key has that value in the reported state; `pending_dispatch` asks the
 *   workers' sweep to look at the device's queue (set with every new command, in its transaction).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table device_profiles add column commands jsonb not null default '[]' check (jsonb_typeof(commands) = 'array');

    create table commands (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      device_id uuid not null references devices(id) on delete cascade,
      job_id uuid,
      name text not null check (length(name) between 1 and 64),
      params jsonb not null default '{}' check (jsonb_typeof(params) = 'object'),
      status text not null default 'QUEUED'
        check (status in ('QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELED')),
      attempts integer not null default 0,
      timeout_s integer not null check (timeout_s between 1 and 86400),
      idempotency_key text check (length(idempotency_key) between 1 and 200),
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      expires_at timestamptz not null,
      lease_until timestamptz,
      sent_at timestamptz,
      delivered_at timestamptz,
      completed_at timestamptz,
      due_at timestamptz,
      result jsonb,
      error text,
      history jsonb not null default '[]' check (jsonb_typeof(history) = 'array')
    );
    create unique index commands_idempotency_key on commands (org_id, idempotency_key) where idempotency_key is not null;
    create index commands_active_idx on commands (device_id, created_at, id) where status in ('QUEUED', 'SENT', 'DELIVERED');
    create index commands_due_idx on commands (due_at) where due_at is not null;
    create index commands_list_idx on commands (org_id, created_at desc, id desc);
    create index commands_device_idx on commands (device_id, created_at desc, id desc);
    create index commands_job_idx on commands (job_id, status) where job_id is not null;

    create table device_states (
      device_id uuid primary key references devices(id) on delete cascade,
      org_id uuid not null references organizations(id) on delete cascade,
      desired jsonb not null default '{}' check (jsonb_typeof(desired) = 'object'),
      reported jsonb not null default '{}' check (jsonb_typeof(reported) = 'object'),
      version integer not null default 0,
      pending_dispatch boolean not null default false,
      in_sync boolean generated always as (desired <@ reported) stored,
      desired_at timestamptz,
      reported_at timestamptz,
      updated_at timestamptz not null default now()
    );
    create index device_states_org_idx on device_states (org_id) where not in_sync;
    create index device_states_pending_idx on device_states (device_id) where pending_dispatch;
    create index commands_lease_idx on commands (lease_until) where status = 'QUEUED' and lease_until is not null;
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
    drop table if exists device_states;
    drop table if exists commands;
    alter table device_profiles drop column if exists commands;
  `.execute(db);
}
