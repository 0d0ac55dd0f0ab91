import { type Kysely, sql } from 'kysely';

/**
 * Partitions carry no row-level security of their own (policies apply when a query goes through
 * the parent), so `rulr_app` must not reach them directly. Telemetry partitions were made without
 * its privileges from the start (0002); audit-log partitions were granted through the schema's
 * default privileges. This revokes them and makes the monthly partition function revoke on every
 * partition it creates.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await monthlyPartitions(db, true);
  await auditPartitions(db, 'revoke all on %s from rulr_app');
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await monthlyPartitions(db, false);
  await auditPartitions(db, 'grant select, insert, update, delete on %s to rulr_app');
}

/** Runs `statement` (a format string taking the partition) on every existing audit-log partition. */
async function auditPartitions(db: Kysely<unknown>, statement: string): Promise<void> {
  await sql`
    do $$
    declare p regclass;
    begin
      for p in select inhrelid::regclass from pg_inherits where inhparent = 'audit_logs'::regclass loop
        execute format(${sql.lit(statement)}, p);
      end loop;
    end $$`.execute(db);
}

/** `rulr_ensure_monthly_partitions` as in 0001, revoking `rulr_app` on what it creates when `revoke`. */
async function monthlyPartitions(db: Kysely<unknown>, revoke: boolean): Promise<void> {
  const revokeStmt = revoke ? sql.raw(`execute format('revoke all on %I from rulr_app', part);`) : sql.raw('');
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
            ${revokeStmt}
          exception when duplicate_table then null;
          end;
        end if;
        m := (m + interval '1 month')::date;
      end loop;
    end $$`.execute(db);
}
