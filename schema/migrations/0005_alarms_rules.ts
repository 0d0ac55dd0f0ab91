import { type Kysely, sql } from 'kysely';

/** Tenant tables of this migration: RLS keyed on `rulr.org_id`, as in 0001. */
const TABLES = ['rules', 'alarms', 'alarm_events', 'rule_executions'];

/**
 * Threshold rules and the alarms they raise (see docs/alarms-rules.md).
 * - `rules`: one metric compared with a threshold, scoped to a site subtree and/or a device profile;
 *   `clear_threshold` gives hysteresis. Deleted rules are kept (`deleted_at`) so alarms keep their rule.
 * - `alarms`: at most one open (not cleared) alarm per device and type; `reading_ts` is the time of the
 *   newest reading applied to it, so a late evaluation never undoes a newer one.
 * - `alarm_events`: the history of each alarm (raised, acknowledged, cleared, commented).
 * - `rule_executions`: evaluations that raised or cleared something (the rest are counted in Redis).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table rules (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      description text not null default '',
      enabled boolean not null default true,
      metric text not null check (length(metric) between 1 and 64),
      operator text not null check (operator in ('gt', 'gte', 'lt', 'lte', 'eq', 'neq')),
      threshold double precision not null,
      clear_threshold double precision,
      severity text not null check (severity in ('critical', 'major', 'minor', 'warning', 'indeterminate')),
      alarm_type text not null check (length(alarm_type) between 1 and 200),
      auto_clear boolean not null default true,
      site_id uuid references sites(id) on delete restrict,
      profile_id uuid references device_profiles(id) on delete restrict,
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      deleted_at timestamptz
    );
    create unique index rules_name_key on rules (org_id, lower(name)) where deleted_at is null;
    create index rules_active_idx on rules (org_id, metric) where enabled and deleted_at is null;
    create index rules_list_idx on rules (org_id, created_at desc, id desc) where deleted_at is null;

    create table alarms (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      device_id uuid not null references devices(id) on delete cascade,
      rule_id uuid references rules(id) on delete set null,
      type text not null check (length(type) between 1 and 200),
      severity text not null check (severity in ('critical', 'major', 'minor', 'warning', 'indeterminate')),
      message text not null default '' check (length(message) <= 2000),
      value double precision,
      reading_ts bigint,
      occurrences integer not null default 1,
      raised_at timestamptz not null default now(),
      last_at timestamptz not null default now(),
      raised_by text not null,
      acknowledged_at timestamptz,
      acknowledged_by text,
      cleared_at timestamptz,
      cleared_by text
    );
    create unique index alarms_open_key on alarms (org_id, device_id, type) where cleared_at is null;
    create index alarms_list_idx on alarms (org_id, raised_at desc, id desc);
    create index alarms_device_idx on alarms (device_id, type, raised_at desc, id desc);
    create index alarms_device_time_idx on alarms (device_id, raised_at desc, id desc);
    create index alarms_open_idx on alarms (org_id, severity) where cleared_at is null;
    create index alarms_rule_idx on alarms (rule_id) where rule_id is not null;

    create table alarm_events (
      id bigint generated always as identity primary key,
      org_id uuid not null references organizations(id) on delete cascade,
      alarm_id uuid not null references alarms(id) on delete cascade,
      at timestamptz not null default now(),
      kind text not null check (kind in ('raised', 'acknowledged', 'cleared', 'commented')),
      actor text not null,
      value double precision,
      note text check (length(note) <= 2000)
    );
    create index alarm_events_alarm_idx on alarm_events (alarm_id, id);

    create table rule_executions (
      id bigint generated always as identity primary key,
      org_id uuid not null references organizations(id) on delete cascade,
      rule_id uuid not null references rules(id) on delete cascade,
      at timestamptz not null default now(),
      readings integer not null,
      matched integer not null,
      raised integer not null,
      cleared integer not null
    );
    create index rule_executions_rule_idx on rule_executions (rule_id, id desc);
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
    drop table if exists rule_executions;
    drop table if exists alarm_events;
    drop table if exists alarms;
    drop table if exists rules;
  `.execute(db);
}
