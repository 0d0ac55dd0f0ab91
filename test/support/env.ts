/** Base URLs of the real services the tests use (override with TEST_PG_URL / TEST_REDIS_URL / TEST_MQTT_URL). */
export const PG_BASE = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
/**
 * PgBouncer in transaction mode in front of `PG_BASE` (the `pgbouncer` vitest project sets
 * TEST_PG_POOLER_URL): when set, the URLs handed to the application and the tests' own queries go
 * through it, while creating, cloning, migrating and dropping databases stays direct.
 */
export const POOLER_BASE = process.env.TEST_PG_POOLER_URL || undefined;
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const MQTT_URL = process.env.TEST_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
export const adminUrl = () => `${PG_BASE}/postgres`;
/** A database's URL straight to PostgreSQL (migrations, session-level locks, LISTEN). */
export const dbUrl = (name: string) => `${PG_BASE}/${name}`;
/** A database's URL as the application gets it: through PgBouncer in the `pgbouncer` project, else direct. */
export const appDbUrl = (name: string) => `${POOLER_BASE ?? PG_BASE}/${name}`;
