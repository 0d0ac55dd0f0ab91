import { type Kysely, sql } from 'kysely';

/**
 * Rule device actions (docs/alarms-rules.md, "Actions"): `rules.actions` is a JSON list of
 * `{kind: "command", name, params, trigger}` and `{kind: "setDesiredState", patch, trigger}` (checked by
 * lib/rule-actions.ts), run by the workers in the transaction that raises (or clears) the rule's alarm.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table rules add column actions jsonb check (actions is null or (jsonb_typeof(actions) = 'array' and jsonb_array_length(actions) <= 5));
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table rules drop column actions;`.execute(db);
}
