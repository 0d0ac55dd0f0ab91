import { type Kysely, sql } from 'kysely';

/** Tenant-owned tables get `org_id`, RLS keyed on `rulr.org_id`, and grants for the `rulr_app` role. */
export const TENANT_TABLES = ['memberships', 'api_keys', 'sites', 'device_profiles', 'devices', 'device_credentials', 'audit_logs'];

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create extension if not exists ltree`.execute(db);
  await sql`create extension if not exists postgis`.execute(db);
  await sql`create extension if not exists pg_trgm`.execute(db);
  await sql`create extension if not exists pgcrypto`.execute(db);
  // Roles are cluster-wide: several databases (tests, replicas) may race to create it.
  await sql`
    do $$ begin
      create role rulr_app nologin;
    exception when duplicate_object or unique_violation then null;
    end $$`.execute(db);
  await sql`
    do $$ begin
      execute format('grant rulr_app to %I', current_user);
    exception when others then null;
    end $$`.execute(db);

  await sql`
    create table organizations (
      id uuid primary key default gen_random_uuid(),
      slug text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
      name text not null,
      created_at timestamptz not null default now()
    );
    create table users (
      id uuid primary key default gen_random_uuid(),
      email text not null check (email ~ '^[^@\\s]+@[^@\\s]+$'),
      name text not null default '',
      password_hash text not null,
      created_at timestamptz not null default now(),
      disabled_at timestamptz
    );
    create unique index users_email_key on users (lower(email));
    create table memberships (
      org_id uuid not null references organizations(id) on delete cascade,
      user_id uuid not null references users(id) on delete cascade,
      role text not null check (role in ('admin', 'operator', 'viewer')),
      created_at timestamptz not null default now(),
      primary key (org_id, user_id)
    );
    create index memberships_user_idx on memberships (user_id);
    create table api_keys (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null,
      prefix text not null unique,
      key_hash text not null,
      scopes text[] not null default '{}',
      created_by uuid references users(id) on delete set null,
      created_at timestamptz not null default now(),
      last_used_at timestamptz,
      expires_at timestamptz,
      revoked_at timestamptz
    );
    create index api_keys_org_idx on api_keys (org_id);
    create table sites (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      parent_id uuid references sites(id) on delete restrict,
      name text not null check (length(name) between 1 and 200),
      path ltree not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index sites_path_gist on sites using gist (path);
    create index sites_org_idx on sites (org_id, name);
    create table device_profiles (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null,
      description text not null default '',
      metrics jsonb not null default '[]',
      silence_timeout_s integer not null default 900 check (silence_timeout_s > 0),
      is_gateway boolean not null default false,
      auto_create_children boolean not null default false,
      created_at timestamptz not null default now(),
      unique (org_id, name)
    );
    create table devices (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      serial text not null check (length(serial) between 1 and 128),
      name text not null check (length(name) between 1 and 200),
      site_id uuid references sites(id) on delete set null,
      profile_id uuid references device_profiles(id) on delete set null,
      parent_id uuid references devices(id) on delete set null,
      location geography(Point, 4326),
      attributes jsonb not null default '{}',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      decommissioned_at timestamptz,
      unique (org_id, serial)
    );
    create index devices_site_idx on devices (site_id);
    create index devices_profile_idx on devices (profile_id);
    create index devices_parent_idx on devices (parent_id) where parent_id is not null;
    create index devices_location_gist on devices using gist (location);
    create index devices_search_trgm on devices using gin ((serial || ' ' || name) gin_trgm_ops);
    create table device_credentials (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      device_id uuid not null references devices(id) on delete cascade,
      username text not null unique,
      secret_hash text not null,
      created_at timestamptz not null default now(),
      revoked_at timestamptz
    );
    create index device_credentials_device_idx on device_credentials (device_id);
    create table audit_logs (
      at timestamptz not null default now(),
      org_id uuid not null,
      actor text not null,
      action text not null,
      entity_type text not null,
      entity_id text,
      before jsonb,
      after jsonb
    ) partition by range (at);
    create index audit_logs_org_at_idx on audit_logs (org_id, at desc);
    create table audit_logs_default partition of audit_logs default;
  `.execute(db);

  // Monthly audit partitions, created ahead by the maintenance worker; the first ones now.
  await sql`
    create or replace function rulr_ensure_monthly_partitions(parent text, months_ahead int) returns void
    language plpgsql as $$
    declare
      m date := date_trunc('month', now())::date;
      i int;
      part text;
    begin
      for i in 0..months_ahead loop
        part := format('%s_%s', parent, to_char(m, 'YYYYMM'));
        if to_regclass(part) is null then
          begin
            execute format('create table %I partition of %I for values from (%L) to (%L)',
              part, parent, m, (m + interval '1 month')::date);
          exception when duplicate_table then null;
          end;
        end if;
        m := (m + interval '1 month')::date;
      end loop;
    end $$;
    select rulr_ensure_monthly_partitions('audit_logs', 2);
  `.execute(db);

  await sql`grant usage on schema public to rulr_app`.execute(db);
  await sql`grant select, insert, update, delete on all tables in schema public to rulr_app`.execute(db);
  await sql`alter default privileges in schema public grant select, insert, update, delete on tables to rulr_app`.execute(db);

  await sql`alter table organizations enable row level security`.execute(db);
  await sql`alter table organizations force row level security`.execute(db);
  await sql`create policy tenant_isolation on organizations using (id = nullif(current_setting('rulr.org_id', true), '')::uuid)`.execute(
    db,
  );
  for (const t of TENANT_TABLES) {
    await sql
      .raw(`alter table ${t} enable row level security; alter table ${t} force row level security;
      create policy tenant_isolation on ${t} using (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid)
        with check (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid);`)
      .execute(db);
  }
  // Owners (migrations, system jobs) bypass RLS only when they are not `rulr_app`; FORCE keeps a
  // non-superuser owner subject to it too, so system paths use a dedicated bypass policy.
  for (const t of ['organizations', ...TENANT_TABLES]) {
    await sql
      .raw(`create policy system_access on ${t} to public using (current_user <> 'rulr_app') with check (current_user <> 'rulr_app');`)
      .execute(db);
  }
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop table if exists audit_logs cascade;
    drop table if exists device_credentials cascade;
    drop table if exists devices cascade;
    drop table if exists device_profiles cascade;
    drop table if exists sites cascade;
    drop table if exists api_keys cascade;
    drop table if exists memberships cascade;
    drop table if exists users cascade;
    drop table if exists organizations cascade;
    drop function if exists rulr_ensure_monthly_partitions(text, int);
  `.execute(db);
}
