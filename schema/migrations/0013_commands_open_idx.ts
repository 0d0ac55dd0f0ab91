import { type Kysely, sql } from 'kysely';

/**
 * A device's open commands by `completed_at is null` instead of by `status` (docs/commands.md, "Row versions per
 * command"). `commands_active_idx (device_id, created_at, id) where status in ('QUEUED', 'SENT', 'DELIVERED')` put
 * `status` in an index predicate, so no status change could be a HOT update. `commands_open_idx` holds the same rows
 * (every final status, and only a final one, sets `completed_at`), so DELIVERED, which changes `status` and writes
 * `due_at` with the value it already has (SENT's timeout, when the command did not expire first), changes no
 * indexed column and is HOT where its page has room (`fillfactor 50`, 0012). The queries that read a device's
 * open commands say `completed_at is null` besides their status condition, so they use this index.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create index commands_open_idx on commands (device_id, created_at, id) where completed_at is null;
    drop index if exists commands_active_idx;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    create index if not exists commands_active_idx on commands (device_id, created_at, id) where status in ('QUEUED', 'SENT', 'DELIVERED');
    drop index if exists commands_open_idx;
  `.execute(db);
}
