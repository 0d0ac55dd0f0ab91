import { type Kysely, sql } from 'kysely';

/**
 * Fewer index entries per command (docs/commands.md, "Row versions per command"; bench:commands).
 * Every update of a `commands` row that changes no indexed column (nor a column of an index predicate) can be a HOT
 * update: the new row version goes on the same page and no index gets an entry. Before, no update of a command was:
 * - `commands_lease_idx (lease_until) where status = 'QUEUED' and lease_until is not null` put `lease_until` in an
 *   index, so the dispatcher's claim (lease, attempts) wrote an entry into each of the table's nine indexes. It only
 *   served the sweep's search for lapsed claims (a worker killed between claim and PUBACK), which now reads the
 *   QUEUED commands through `commands_active_idx` every few seconds instead (workers/commands.ts, `lapsedClaims`).
 *   The claim no longer touches an indexed column and is HOT where its page has room.
 * - `commands_job_idx (job_id, status) where job_id is not null` duplicated `commands_job_device_idx (job_id,
 *   device_id)` for a fleet job's counts, and put `status` in one more index: every status change wrote one entry
 *   more. The counts read the job's rows through `commands_job_device_idx` (an index-only count was seldom possible
 *   anyway: the job's rows change all the time, so their pages are not all-visible).
 * - `fillfactor 50`: new rows leave half of each page free, so the claim's new version fits beside the old one even
 *   when a fleet job inserts thousands of commands at once (every row of a page is then claimed within a second; at 80
 *   only a quarter of the claims were HOT in bench:commands, at 50 nearly all). The price is a heap up to twice as
 *   large for commands that are never updated again; the later versions (SENT, DELIVERED, the result) change `status`
 *   and `due_at` and are not HOT anyway. Only pages written from now on get the room.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop index if exists commands_lease_idx;
    drop index if exists commands_job_idx;
    alter table commands set (fillfactor = 50);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table commands reset (fillfactor);
    create index if not exists commands_job_idx on commands (job_id, status) where job_id is not null;
    create index if not exists commands_lease_idx on commands (lease_until) where status = 'QUEUED' and lease_until is not null;
  `.execute(db);
}
