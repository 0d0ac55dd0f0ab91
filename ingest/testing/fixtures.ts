import { randomBytes, randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { type Config, loadConfig } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import { RoleContext } from '../../lib/role.js';

/** A test organization with one profile and `devices` devices (rows inserted directly). */
export interface Fleet {
  orgId: string;
  profileId: string;
  deviceIds: string[];
  serials: string[];
}

export const DEMO_METRICS = [
  { name: 'power', type: 'number', unit: 'W', min: 0, max: 250 },
  { name: 'on', type: 'boolean' },
  { name: 'mode', type: 'string' },
  { name: 'energy', type: 'number', unit: 'kWh', counter: true },
  { name: 'temp', type: 'number' },
];

export async function seedFleet(
  url: string,
  o: { devices: number; metrics?: unknown[]; isGateway?: boolean; autoCreateChildren?: boolean; silenceTimeoutS?: number },
): Promise<Fleet> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const tag = randomBytes(4).toString('hex');
    const org = await c.query<{ id: string }>('insert into organizations (slug, name) values ($1, $1) returning id', [`org-${tag}`]);
    const orgId = org.rows[0]?.id as string;
    const prof = await c.query<{ id: string }>(
      `insert into device_profiles (org_id, name, metrics, is_gateway, auto_create_children, silence_timeout_s)
       values ($1, $2, $3, $4, $5, $6) returning id`,
      [
        orgId,
        `p-${tag}`,
        JSON.stringify(o.metrics ?? DEMO_METRICS),
        o.isGateway ?? false,
        o.autoCreateChildren ?? false,
        o.silenceTimeoutS ?? 900,
      ],
    );
    const profileId = prof.rows[0]?.id as string;
    const serials = Array.from({ length: o.devices }, (_, i) => `SN-${tag}-${i}`);
    const ids = await c.query<{ id: string; serial: string }>(
      `insert into devices (org_id, serial, name, profile_id) select $1, s, s, $2 from unnest($3::text[]) s returning id, serial`,
      [orgId, profileId, serials],
    );
    const bySerial = new Map(ids.rows.map((r) => [r.serial, r.id]));
    return { orgId, profileId, serials, deviceIds: serials.map((s) => bySerial.get(s) as string) };
  } finally {
    await c.end();
  }
}

/** Environment for an ingest under test: its own database, broker, Redis prefix and group. */
export function ingestEnv(o: {
  dbUrl: string;
  mqttUrl: string;
  prefix?: string;
  group?: string;
  extra?: Record<string, string>;
}): Record<string, string> {
  return {
    DATABASE_URL: o.dbUrl,
    MQTT_URL: o.mqttUrl,
    REDIS_PREFIX: o.prefix ?? `t${randomBytes(4).toString('hex')}:`,
    INGEST_GROUP: o.group ?? `g${randomBytes(4).toString('hex')}`,
    INGEST_CLIENT_ID: `ingest-${randomUUID()}`,
    INGEST_BATCH_MS: '20',
    LOG_LEVEL: 'silent',
    ...o.extra,
  };
}

export function contextFor(env: Record<string, string>): { ctx: RoleContext; cfg: Config } {
  const cfg = loadConfig({ ...process.env, ...env });
  return { ctx: new RoleContext(cfg, createLogger(cfg.LOG_LEVEL)), cfg };
}

export async function publisher(url: string): Promise<MqttClient> {
  const c = mqtt.connect(url, { clientId: `pub-${randomUUID()}`, protocolVersion: 5, reconnectPeriod: 0 });
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

export async function until(cond: () => Promise<boolean> | boolean, ms = 20_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
