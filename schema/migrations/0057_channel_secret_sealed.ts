import { type Kysely, sql } from 'kysely';

/**
 * Notification channel secrets are stored sealed (lib/contracts/channel-secret.ts), never in clear:
 * `secret_sealed`. The clear `secret` column stays only for rows written before this migration; the
 * workers' notifier seals them when it starts (a migration cannot: the key derives from
 * `RULR_SECRET`, which the database never sees) and a row never holds both.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table notification_channels add column secret_sealed bytea;
    alter table notification_channels add constraint notification_channels_one_secret
      check (secret is null or secret_sealed is null);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table notification_channels drop constraint notification_channels_one_secret;
    alter table notification_channels drop column secret_sealed;
  `.execute(db);
}
