import { type Kysely, sql } from 'kysely';

/**
 * Versioned waiting-rule states (docs/alarms-rules.md, "State in memory"): the workers keep
 * `rule_device_state` rows in memory between jobs and write back only with `where version = <cached>`,
 * so a state another process (a second workers replica, the timer sweep) changed since is detected and
 * read again instead of overwritten.
 * - `version`: drawn from one sequence on insert and by a trigger on every update, whoever the writer:
 *   never reused (a state deleted and created again never matches an old cached copy).
 * - `fillfactor = 70`: free room on each page, so the per-job rewrite of a state is a HOT update (no index
 *   entry, pruned on the page) instead of a new tuple in every index.
 * - `rule_device_state_org_idx` (org_id, rule_id) dropped: the primary key (rule_id, device_id) serves a
 *   rule's rows, and with the org index the planner answered the per-job batch of (rule, device) keys
 *   with a BitmapAnd over every state row of the organization, once per key (5.8 s for 1,200 keys of a
 *   bloated table, 30 ms by the primary key). An organization's deletion scans the table (rare).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create sequence rule_device_state_version_seq as bigint;
    grant usage on sequence rule_device_state_version_seq to rulr_app;
    alter table rule_device_state add column version bigint not null default nextval('rule_device_state_version_seq');
    alter table rule_device_state set (fillfactor = 70);
    drop index rule_device_state_org_idx;
    create function rule_device_state_bump() returns trigger language plpgsql as $$
    begin
      new.version := nextval('rule_device_state_version_seq');
      return new;
    end $$;
    create trigger rule_device_state_version before update on rule_device_state
      for each row execute function rule_device_state_bump();
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop trigger rule_device_state_version on rule_device_state;
    drop function rule_device_state_bump();
    create index rule_device_state_org_idx on rule_device_state (org_id, rule_id);
    alter table rule_device_state reset (fillfactor);
    alter table rule_device_state drop column version;
    drop sequence rule_device_state_version_seq;
  `.execute(db);
}
