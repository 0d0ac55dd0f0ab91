import { type Kysely, sql } from 'kysely';

/** Tenant tables of this migration: RLS keyed on `rulr.org_id`, as in 0001. */
const TABLES = [
  'notification_channels',
  'notification_templates',
  'notification_rules',
  'notification_preferences',
  'escalation_policies',
  'notification_escalations',
  'notification_digests',
  'notifications',
  'notification_deliveries',
  'notification_attempts',
];

const SEVERITY = `('critical', 'major', 'minor', 'warning', 'indeterminate')`;

/**
 * Notifications (docs/notifications.md).
 * - `notification_channels`: an organization's destinations: `webhook` (signed JSON POST), `email`
 *   (fixed addresses over SMTP), `sms` and `chat` (a provider webhook with a body template). `secret`
 *   is write-only (never selected by the API).
 * - `notification_templates`: an organization's own template per key (else the built-in one).
 * - `notification_rules`: recipients by role and site subtree (and channels), per event and minimum severity.
 * - `notification_preferences`: a member's own channels (email, sms), minimum severity and quiet hours.
 * - `escalation_policies` and `notification_escalations` (the due-time table the workers claim).
 * - `notification_digests`: open grouping windows per site and rule.
 * - `notifications` (one per request, unique dedup key), `notification_deliveries` (one per channel
 *   and recipient) and `notification_attempts` (every attempt: the delivery log).
 * - `notification_feed`: the workers' cursor over `alarm_events` (system table, not tenant data).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql
    .raw(`
    create table notification_channels (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      kind text not null check (kind in ('webhook', 'email', 'sms', 'chat')),
      url text,
      addresses text[] not null default '{}',
      body_template text,
      secret text,
      enabled boolean not null default true,
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create unique index notification_channels_name_key on notification_channels (org_id, lower(name));

    create table notification_templates (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      key text not null check (length(key) between 1 and 100),
      subject text not null check (length(subject) <= 500),
      body text not null check (length(body) <= 20000),
      html text check (length(html) <= 50000),
      updated_by text not null,
      updated_at timestamptz not null default now(),
      unique (org_id, key)
    );

    create table notification_rules (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      enabled boolean not null default true,
      events text[] not null,
      min_severity text not null check (min_severity in ${SEVERITY}),
      site_id uuid references sites(id) on delete cascade,
      roles text[] not null default '{}',
      user_ids uuid[] not null default '{}',
      channel_ids uuid[] not null default '{}',
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index notification_rules_org_idx on notification_rules (org_id) where enabled;

    create table notification_preferences (
      org_id uuid not null references organizations(id) on delete cascade,
      user_id uuid not null references users(id) on delete cascade,
      channels text[] not null default '{email}',
      min_severity text not null default 'indeterminate' check (min_severity in ${SEVERITY}),
      phone text check (phone is null or length(phone) between 3 and 32),
      site_id uuid references sites(id) on delete set null,
      time_zone text not null default 'UTC',
      quiet_start integer check (quiet_start between 0 and 1439),
      quiet_end integer check (quiet_end between 0 and 1439),
      updated_at timestamptz not null default now(),
      primary key (org_id, user_id),
      check ((quiet_start is null) = (quiet_end is null))
    );

    create table escalation_policies (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      name text not null check (length(name) between 1 and 200),
      enabled boolean not null default true,
      min_severity text not null check (min_severity in ${SEVERITY}),
      site_id uuid references sites(id) on delete cascade,
      levels jsonb not null,
      created_by text not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    create index escalation_policies_org_idx on escalation_policies (org_id) where enabled;

    create table notification_escalations (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      alarm_id uuid not null references alarms(id) on delete cascade,
      policy_id uuid not null references escalation_policies(id) on delete cascade,
      level integer not null default 0,
      due_at timestamptz,
      status text not null default 'waiting' check (status in ('waiting', 'done', 'stopped')),
      stopped_reason text,
      updated_at timestamptz not null default now(),
      unique (alarm_id, policy_id)
    );
    create index notification_escalations_due on notification_escalations (due_at) where status = 'waiting';

    create table notification_digests (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      group_key text not null,
      first_request jsonb not null,
      count integer not null default 1,
      items jsonb not null default '[]',
      max_severity text not null check (max_severity in ${SEVERITY}),
      opened_at timestamptz not null default now(),
      due_at timestamptz not null,
      flushed_at timestamptz
    );
    create unique index notification_digests_open_key on notification_digests (org_id, group_key) where flushed_at is null;
    create index notification_digests_due on notification_digests (due_at) where flushed_at is null;

    create table notifications (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      dedup_key text not null,
      source_kind text not null check (source_kind in ('alarm', 'rule')),
      source_id uuid not null,
      event text not null,
      site_id uuid,
      severity text not null check (severity in ${SEVERITY}),
      template_key text not null,
      digest_id uuid references notification_digests(id) on delete set null,
      grouped boolean not null default false,
      count integer not null default 1,
      subject text not null default '',
      created_at timestamptz not null default now(),
      unique (org_id, dedup_key)
    );
    create index notifications_source_idx on notifications (org_id, source_id);

    create table notification_deliveries (
      id uuid primary key default gen_random_uuid(),
      org_id uuid not null references organizations(id) on delete cascade,
      notification_id uuid not null references notifications(id) on delete cascade,
      channel_id uuid references notification_channels(id) on delete set null,
      kind text not null check (kind in ('webhook', 'email', 'sms', 'chat')),
      user_id uuid references users(id) on delete set null,
      address text not null,
      status text not null check (status in ('pending', 'deferred', 'sent', 'failed')),
      not_before timestamptz,
      attempts integer not null default 0,
      last_error text,
      sent_at timestamptz,
      created_at timestamptz not null default now(),
      payload jsonb not null,
      unique (notification_id, kind, address)
    );
    create index notification_deliveries_list_idx on notification_deliveries (org_id, created_at desc, id desc);

    create table notification_attempts (
      id bigint generated always as identity primary key,
      org_id uuid not null references organizations(id) on delete cascade,
      delivery_id uuid not null references notification_deliveries(id) on delete cascade,
      at timestamptz not null default now(),
      ok boolean not null,
      http_status integer,
      response text,
      error text,
      duration_ms integer not null
    );
    create index notification_attempts_delivery_idx on notification_attempts (delivery_id, id);

    create table notification_feed (
      name text primary key,
      last_id bigint not null
    );
    insert into notification_feed (name, last_id) select 'alarm_events', coalesce(max(id), 0) from alarm_events;
    revoke all on notification_feed from rulr_app;
  `)
    .execute(db);
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
    drop table if exists notification_feed;
    drop table if exists notification_attempts;
    drop table if exists notification_deliveries;
    drop table if exists notifications;
    drop table if exists notification_digests;
    drop table if exists notification_escalations;
    drop table if exists escalation_policies;
    drop table if exists notification_preferences;
    drop table if exists notification_rules;
    drop table if exists notification_templates;
    drop table if exists notification_channels;
  `.execute(db);
}
