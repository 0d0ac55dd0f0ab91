import { type Kysely, sql } from 'kysely';

/** Tenant tables of this migration: RLS keyed on `rulr.org_id`, as in 0001, 0005 and 0040. */
const TABLES = ['rule_device_state', 'rule_timer_firings', 'schedules', 'schedule_runs'];

/**
 * Rules that wait, durable timers, cron schedules, alarms finished (docs/alarms-rules.md).
 * - `rules.kind`: `threshold` (0005), `expression` (a compound condition, lib/rule-expr.ts) or
 *   `no_data` (no reading of `metric` for `no_data_seconds`); `for_seconds` (duration) and
 *   `repeat_count`/`window_seconds` (N times in a window) make a threshold or expression rule wait;
 *   `clear_on_disable` clears its open alarms when it is disabled or deleted; `notify` (JSON, checked by
 *   lib/rule-notify.ts) asks for a notification when the rule raises (or clears) an alarm.
 * - `rule_device_state`: what a waiting rule remembers per device, and its durable timer (`due_at`,
 *   `due_action`) that the workers claim with `for update skip locked` when it comes due.
 * - `rule_timer_firings`: every timer that fired, unique per rule, device, due time and action (exactly once).
 * - `schedules`: a cron pattern in a time zone and the action it runs; `next_at` is its next occurrence.
 * - `schedule_runs`: one row per occurrence run, unique per schedule and occurrence (exactly once).
 * - `alarms.assigned_to`/`assigned_at` (`assignAlarm`) and the history kinds `assigned` and `updated`.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table rules
      add column kind text not null default 'threshold' check (kind in ('threshold', 'expression', 'no_data')),
      add column expression text check (length(expression) between 1 and 1000),
      add column for_seconds integer check (for_seconds between 1 and 604800),
      add column repeat_count integer check (repeat_count between 2 and 1000),
      add column window_seconds integer check (window_seconds between 1 and 604800),
      add column no_data_seconds integer check (no_data_seconds between 60 and 2592000),
      add column clear_on_disable boolean not null default false,
      add column notify jsonb,
      alter column operator drop not null,
      alter column threshold drop not null,
      add constraint rules_kind_fields check (
        (kind = 'threshold' and operator is not null and threshold is not null and expression is null and no_data_seconds is null)
        or (kind = 'expression' and expression is not null and no_data_seconds is null)
        or (kind = 'no_data' and no_data_seconds is not null and expression is null and for_seconds is null and repeat_count is null)),
      add constraint rules_repeat_window check ((repeat_count is null) = (window_seconds is null)),
      add constraint rules_wait_one check (for_seconds is null or repeat_count is null);

    create table rule_device_state (
      rule_id uuid not null references rules(id) on delete cascade,
      device_id uuid not null references devices(id) on delete cascade,
      org_id uuid not null references organizations(id) on delete cascade,
      state jsonb not null,
      due_at timestamptz,
      due_action text check (due_action in ('raise', 'clear')),
      updated_at timestamptz not null default now(),
      primary key (rule_id, device_id),
      check ((due_at is null) = (due_action is null))
    );
    create index rule_device_state_due on rule_device_state (due_at) where due_at is not null;
    create index rule_device_state_org_idx on rule_device_state (org_id, rule_id);

    create table rule_timer_firings (
      id bigint generated always as identity primary key,
      org_id uuid not null references organizations(id) on delete cascade,
      rule_id uuid not null references rules(id) on delete cascade,
      device_id uuid not null references devices(id) on delete cascade,
      due_at timestamptz not null,
      action text not null check (action in ('raise', 'clear')),
      outcome text not null check (outcome in ('raised', 'cleared', 'none')),
      fired_at timestamptz not null default now(),
      worker text not null,
      unique (rule_id, device_id, due_at, action)
    );
    create index rule_timer_firings_org_idx on rule_timer_firings (org_id, fired_at desc);

    create table schedules (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      description text not null default '' check (length(description) <= 2000),
      enabled boolean not null default true,
      cron text not null check (length(cron) between 1 and 200),
      time_zone text not null check (length(time_zone) between 1 and 64),
      action jsonb not null,
      next_at timestamptz,
      last_at timestamptz,
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create unique index schedules_name_key on schedules (org_id, lower(name));
    create index schedules_due on schedules (next_at) where enabled and next_at is not null;
    create index schedules_list_idx on schedules (org_id, created_at desc, id desc);

    create table schedule_runs (
      id bigint generated always as identity primary key,
      org_id uuid not null references organizations(id) on delete cascade,
      schedule_id uuid not null references schedules(id) on delete cascade,
      occurrence timestamptz not null,
      started_at timestamptz not null default now(),
      status text not null check (status in ('succeeded', 'failed', 'skipped')),
      result jsonb,
      error text check (length(error) <= 2000),
      worker text not null,
      unique (schedule_id, occurrence)
    );
    create index schedule_runs_schedule_idx on schedule_runs (schedule_id, occurrence desc);

    alter table alarms add column assigned_to text check (length(assigned_to) <= 200), add column assigned_at timestamptz;
    alter table alarm_events drop constraint alarm_events_kind_check;
    alter table alarm_events add constraint alarm_events_kind_check
      check (kind in ('raised', 'acknowledged', 'cleared', 'commented', 'assigned', 'updated'));
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
    drop table if exists schedule_runs;
    drop table if exists schedules;
    drop table if exists rule_timer_firings;
    drop table if exists rule_device_state;
    alter table alarm_events drop constraint alarm_events_kind_check;
    delete from alarm_events where kind in ('assigned', 'updated');
    alter table alarm_events add constraint alarm_events_kind_check check (kind in ('raised', 'acknowledged', 'cleared', 'commented'));
    alter table alarms drop column assigned_to, drop column assigned_at;
    delete from rules where kind <> 'threshold';
    alter table rules drop constraint rules_kind_fields, drop constraint rules_repeat_window, drop constraint rules_wait_one,
      drop column kind, drop column expression, drop column for_seconds, drop column repeat_count, drop column window_seconds,
      drop column no_data_seconds, drop column clear_on_disable, drop column notify,
      alter column operator set not null, alter column threshold set not null;
  `.execute(db);
}
