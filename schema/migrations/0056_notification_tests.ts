import { type Kysely, sql } from 'kysely';

/**
 * `testNotificationChannel` (docs/notifications.md): a notification may be about a channel being
 * tested (`source_kind = 'channel'`, event `channel.test`), so the check of `notifications.source_kind`
 * widens. The delivery log's filters get their indexes. `lease_until`: a delivery attempt holds
 * its row so a second attempt (a job BullMQ took for stalled) waits instead of sending twice.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table notifications drop constraint notifications_source_kind_check;
    alter table notifications add constraint notifications_source_kind_check check (source_kind in ('alarm', 'rule', 'channel'));
    create index notifications_digest_idx on notifications (digest_id) where digest_id is not null;
    create index notification_deliveries_channel_idx on notification_deliveries (org_id, channel_id, created_at desc);
    create index notification_deliveries_notification_idx on notification_deliveries (notification_id);
    alter table notification_deliveries add column lease_until timestamptz;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table notification_deliveries drop column if exists lease_until;
    drop index if exists notification_deliveries_notification_idx;
    drop index if exists notification_deliveries_channel_idx;
    drop index if exists notifications_digest_idx;
    delete from notifications where source_kind = 'channel';
    alter table notifications drop constraint notifications_source_kind_check;
    alter table notifications add constraint notifications_source_kind_check check (source_kind in ('alarm', 'rule'));
  `.execute(db);
}
