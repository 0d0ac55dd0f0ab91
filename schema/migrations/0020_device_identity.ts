import { type Kysely, sql } from 'kysely';

/**
 * Device identity (issue 13): several credentials per device (a rotated secret keeps working until
 * `expires_at`, its grace period), client-certificate fingerprints beside secrets, salted slow hashes
 * (argon2id) with the unsalted SHA-256 of older releases kept as `hash_scheme = 'sha256'` until
 * first use rehashes it, the short-lived encrypted hand-off of a new secret to the Mosquitto
 * dynamic-security sync, and provisioning by a profile's key and secret (single-use claims,
 * `devices.provisioned_at`).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table device_credentials
      add column kind text not null default 'secret' check (kind in ('secret', 'certificate')),
      add column hash_scheme text default 'sha256' check (hash_scheme in ('argon2id', 'sha256')),
      add column fingerprint text check (fingerprint ~ '^[0-9a-f]{64}$'),
      add column expires_at timestamptz,
      add column broker_handoff bytea,
      alter column secret_hash drop not null;
    alter table device_credentials alter column hash_scheme set default 'argon2id';
    alter table device_credentials add constraint device_credentials_secret_or_certificate check (
      (kind = 'secret' and secret_hash is not null and hash_scheme is not null and fingerprint is null)
      or (kind = 'certificate' and fingerprint is not null and secret_hash is null and hash_scheme is null)
    );
    create unique index device_credentials_fingerprint_key on device_credentials (fingerprint) where revoked_at is null;
    create index device_credentials_expiry_idx on device_credentials (expires_at) where expires_at is not null and revoked_at is null;
    create index device_credentials_handoff_idx on device_credentials (created_at) where broker_handoff is not null;

    alter table device_profiles
      add column provision_key text unique check (provision_key ~ '^[A-Za-z0-9_-]{16,64}$'),
      add column provision_secret_hash text,
      add column provision_mode text not null default 'disabled' check (provision_mode in ('disabled', 'pre_registered', 'create_new')),
      add constraint device_profiles_provisioning_check check (
        provision_mode = 'disabled' or (provision_key is not null and provision_secret_hash is not null)
      );
    alter table devices add column provisioned_at timestamptz;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table devices drop column if exists provisioned_at;
    alter table device_profiles
      drop constraint if exists device_profiles_provisioning_check,
      drop column if exists provision_mode,
      drop column if exists provision_secret_hash,
      drop column if exists provision_key;
    delete from device_credentials where kind = 'certificate';
    drop index if exists device_credentials_handoff_idx;
    drop index if exists device_credentials_expiry_idx;
    drop index if exists device_credentials_fingerprint_key;
    alter table device_credentials
      drop constraint if exists device_credentials_secret_or_certificate,
      drop column if exists broker_handoff,
      drop column if exists expires_at,
      drop column if exists fingerprint,
      drop column if exists hash_scheme,
      drop column if exists kind,
      alter column secret_hash set not null;
  `.execute(db);
}
