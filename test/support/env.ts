/** Base URLs of the real services the tests use (override with TEST_PG_URL / TEST_REDIS_URL / TEST_MQTT_URL). */
export const PG_BASE = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const MQTT_URL = process.env.TEST_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
export const adminUrl = () => `${PG_BASE}/postgres`;
export const dbUrl = (name: string) => `${PG_BASE}/${name}`;
