import { type Kysely, sql } from 'kysely';

/**
 * People managed in the product (issue 13): platform operators, invitations into an organization,
 * single-use password resets, and when each person last signed in. Sessions and refresh tokens live
 * in Redis (lib/contracts/sessions.ts), lockout counters too.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table users
      add column platform_operator boolean not null default false,
      add column last_login_at timestamptz,
      add column password_changed_at timestamptz;

    create table invitations (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      email text not null check (email ~ '^[^@\\s]+@[^@\\s]+$' and length(email) <= 320),
      role text not null check (role in ('admin', 'operator', 'viewer')),
      token_hash text not null unique,
      invited_by text not null,
      created_at timestamptz not null default now(),
      expires_at timestamptz not null,
      accepted_at timestamptz,
      accepted_by uuid references users(id) on delete set null,
      revoked_at timestamptz
    );
    create index invitations_org_idx on invitations (org_id, created_at desc);
    create unique index invitations_open_email_key on invitations (org_id, lower(email))
      where accepted_at is null and revoked_at is null;

    create table password_resets (
      id uuid primary key default gen_random_uuid(),
      user_id uuid not null references users(id) on delete cascade,
      token_hash text not null unique,
      created_at timestamptz not null default now(),
      expires_at timestamptz not null,
      used_at timestamptz
    );
    create index password_resets_user_idx on password_resets (user_id) where used_at is null;
  `.execute(db);

  await sql`
    alter table invitations enable row level security;
    alter table invitations force row level security;
    create policy tenant_isolation on invitations using (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid)
      with check (org_id = nullif(current_setting('rulr.org_id', true), '')::uuid);
    create policy system_access on invitations to public using (current_user <> 'rulr_app') with check (current_user <> 'rulr_app');
  `.execute(db);
  // Resets belong to no tenant and only system paths (no tenant yet) use them: out of tenant transactions' reach.
  await sql`revoke all on password_resets from rulr_app`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop table if exists password_resets;
    drop table if exists invitations;
    alter table users drop column if exists platform_operator, drop column if exists last_login_at,
      drop column if exists password_changed_at;
  `.execute(db);
}
