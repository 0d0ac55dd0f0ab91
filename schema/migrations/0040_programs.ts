import { type Kysely, sql } from 'kysely';

/** Tenant tables of this migration: RLS keyed on `rulr.org_id`, as in 0001 and 0005. */
const TABLES = [
  'programs',
  'program_calendars',
  'program_assignments',
  'program_overrides',
  'program_clusters',
  'program_firings',
  'program_device_levels',
];

/**
 * Lighting programs (docs/programs.md).
 * - `sites.time_zone` (IANA name; inherited from the nearest ancestor that has one) and
 *   `sites.location` (used for devices without coordinates of their own).
 * - `programs`: switch points as JSON (validated by lib/programs.ts); soft-deleted like rules.
 * - `program_calendars`: ordered rules choosing a program per local date, and a default.
 * - `program_assignments`: a program or a calendar for a site subtree, a profile, both, or a device;
 *   one assignment per scope (the most specific scope wins, lib/programs-assign.ts).
 * - `program_overrides`: a level for a site subtree or a device from `starts_at` to `expires_at`;
 *   `started_at`/`ended_at` record that the scheduler applied its start and its end.
 * - `program_clusters`: the durable schedule, one row per (assignment, time zone, location cell)
 *   with its next switch event, claimed with `for update skip locked`.
 * - `program_firings`: every event fired, unique per source and instant (exactly once).
 * - `program_device_levels`: the level each device was last set to by its program or an override
 *   (what the detectors expect), written in the firing's transaction; `pushed_at` is null until the
 *   level reached the device's desired state (an outbox: a crash between the two loses nothing).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table sites add column time_zone text check (time_zone is null or length(time_zone) between 1 and 64);
    alter table sites add column location geography(Point, 4326);

    create table programs (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      description text not null default '' check (length(description) <= 2000),
      switch_points jsonb not null check (jsonb_typeof(switch_points) = 'array'),
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      deleted_at timestamptz
    );
    create unique index programs_name_key on programs (org_id, lower(name)) where deleted_at is null;
    create index programs_list_idx on programs (org_id, created_at desc, id desc) where deleted_at is null;

    create table program_calendars (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      description text not null default '' check (length(description) <= 2000),
      default_program_id uuid not null references programs(id) on delete restrict,
      rules jsonb not null default '[]' check (jsonb_typeof(rules) = 'array'),
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      deleted_at timestamptz
    );
    create unique index program_calendars_name_key on program_calendars (org_id, lower(name)) where deleted_at is null;

    create table program_assignments (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      program_id uuid references programs(id) on delete restrict,
      calendar_id uuid references program_calendars(id) on delete restrict,
      site_id uuid references sites(id) on delete cascade,
      profile_id uuid references device_profiles(id) on delete cascade,
      device_id uuid references devices(id) on delete cascade,
      created_by text not null,
      created_at timestamptz not null default now(),
      check (num_nonnulls(program_id, calendar_id) = 1),
      check (num_nonnulls(site_id, profile_id, device_id) >= 1),
      check (device_id is null or (site_id is null and profile_id is null))
    );
    create unique index program_assignments_scope_key on program_assignments (
      org_id,
      coalesce(site_id, '00000000-0000-0000-0000-000000000000'),
      coalesce(profile_id, '00000000-0000-0000-0000-000000000000'),
      coalesce(device_id, '00000000-0000-0000-0000-000000000000')
    );
    create index program_assignments_program_idx on program_assignments (program_id) where program_id is not null;
    create index program_assignments_calendar_idx on program_assignments (calendar_id) where calendar_id is not null;

    create table program_overrides (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      site_id uuid references sites(id) on delete cascade,
      device_id uuid references devices(id) on delete cascade,
      level integer not null check (level between 0 and 100),
      starts_at timestamptz not null,
      expires_at timestamptz not null,
      reason text not null default '' check (length(reason) <= 2000),
      created_by text not null,
      created_at timestamptz not null default clock_timestamp(),
      canceled_at timestamptz,
      canceled_by text,
      started_at timestamptz,
      ended_at timestamptz,
      check (num_nonnulls(site_id, device_id) = 1),
      check (expires_at > starts_at)
    );
    create index program_overrides_org_idx on program_overrides (org_id, expires_at desc);
    create index program_overrides_start_due on program_overrides (starts_at) where started_at is null and ended_at is null;
    create index program_overrides_end_due on program_overrides (least(expires_at, canceled_at)) where ended_at is null;

    create table program_clusters (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      assignment_id uuid not null references program_assignments(id) on delete cascade,
      time_zone text not null,
      cell_lat double precision not null,
      cell_lng double precision not null,
      devices integer not null default 0,
      next_at timestamptz,
      next_event jsonb,
      last_fired_at timestamptz,
      schedule_hash text,
      updated_at timestamptz not null default now(),
      unique (org_id, assignment_id, time_zone, cell_lat, cell_lng)
    );
    create index program_clusters_due on program_clusters (next_at) where next_at is not null;

    create table program_firings (
      id bigint generated always as identity primary key,
      org_id uuid not null references organizations(id) on delete cascade,
      source text not null check (source in ('program', 'override-start', 'override-end')),
      ref_id uuid not null,
      at timestamptz not null,
      fired_at timestamptz not null default now(),
      level integer,
      devices integer not null,
      program_id uuid,
      switch_point integer,
      unique (source, ref_id, at)
    );
    create index program_firings_org_idx on program_firings (org_id, at desc);

    create table program_device_levels (
      device_id uuid primary key references devices(id) on delete cascade,
      org_id uuid not null references organizations(id) on delete cascade,
      level integer not null check (level between 0 and 100),
      ramp_seconds integer not null default 0,
      source text not null check (source in ('program', 'override-start', 'override-end')),
      ref_id uuid not null,
      firing_id bigint not null,
      event_at timestamptz not null,
      set_at timestamptz not null default now(),
      writes integer not null default 1,
      pushed_at timestamptz
    );
    create index program_device_levels_push_idx on program_device_levels (org_id, set_at) where pushed_at is null;
    create index program_device_levels_org_idx on program_device_levels (org_id);
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
    drop table if exists program_device_levels;
    drop table if exists program_firings;
    drop table if exists program_clusters;
    drop table if exists program_overrides;
    drop table if exists program_assignments;
    drop table if exists program_calendars;
    drop table if exists programs;
    alter table sites drop column if exists location;
    alter table sites drop column if exists time_zone;
  `.execute(db);
}
