import type { Config } from '../lib/config.js';
import { handoffKey } from '../lib/contracts/broker-handoff.js';
import { MAX_NOTICE_DEVICES, publishDeviceChange } from '../lib/contracts/device-changes.js';
import { issueSecret } from '../lib/credential-store.js';
import { createDb, type Db, withTenant } from '../lib/db.js';
import { createRedis, type Redis } from '../lib/redis.js';
import { type CredentialsFile, readCredentialsFile, writeCredentialsFile } from './credentials-file.js';
import { loadSimulatedDevices, speakersOf } from './simulate.js';

/**
 * `rulr credentials issue`: an operator's way to give a demo (or test) fleet its MQTT credentials
 * in one go, for `rulr simulate --credentials`. The platform keeps only hashes, so it cannot export
 * secrets it already issued: this issues new ones (what `rotateDeviceCredentials` does, audited as
 * `device.rotate_credentials` by `cli:credentials`, sealed for the Mosquitto sync when
 * `DYNSEC_ENABLED`, announced by device-change notices so EMQX's directory and the sync act at once)
 * and writes them to a 0600 file, the only place they are shown. Devices already in the file keep
 * theirs unless `rotate`.
 */

export interface IssueCredentialsOptions {
  org: string;
  /** the first N street lights by serial, as `rulr simulate --devices N` takes them, and their concentrators */
  devices: number;
  /** the credentials file (created, or completed) */
  out: string;
  /** issue new secrets also for devices the file has @default false */
  rotate?: boolean;
  /** seconds the devices' previous secrets keep working @default DEVICE_AUTH_ROTATION_GRACE_S */
  graceSeconds?: number;
  db?: Db;
  redis?: Redis;
  log?: (line: string) => void;
}

/** Secrets issued per transaction (and per device-change notice, which holds at most MAX_NOTICE_DEVICES). */
const CHUNK = Math.min(100, MAX_NOTICE_DEVICES);

export async function issueCredentials(
  cfg: Config,
  o: IssueCredentialsOptions,
): Promise<{ issued: number; kept: number; file: CredentialsFile }> {
  if (!Number.isInteger(o.devices) || o.devices < 1) throw new Error('--devices must be a positive integer');
  const grace = o.graceSeconds ?? cfg.DEVICE_AUTH_ROTATION_GRACE_S;
  if (!Number.isInteger(grace) || grace < 0 || grace > 2_592_000) throw new Error('--grace must be 0 to 2592000 seconds');
  const log = o.log ?? ((l: string) => console.log(l));
  const file = readCredentialsFile(o.out, o.org, log);
  const db = o.db ?? createDb({ url: cfg.DATABASE_URL, poolSize: 2 });
  const redis = o.redis ?? createRedis(cfg.REDIS_URL);
  const key = cfg.DYNSEC_ENABLED ? handoffKey(cfg.RULR_SECRET) : undefined;
  if (!key)
    log(
      'credentials: DYNSEC_ENABLED is off, so the secrets are not handed to the Mosquitto sync (right for EMQX; for Mosquitto set it as the platform has it)',
    );
  try {
    const org = await db.selectFrom('organizations').select('id').where('slug', '=', o.org).executeTakeFirst();
    if (!org) throw new Error(`no organization with slug "${o.org}"`);
    const speakers = await speakersOf(db, await loadSimulatedDevices(db, o.org, o.devices));
    const todo = speakers.filter((s) => o.rotate || !file.devices.has(s.id));
    let issued = 0;
    for (let i = 0; i < todo.length; i += CHUNK) {
      const chunk = todo.slice(i, i + CHUNK);
      // argon2 hashing runs on libuv's pool, so the chunk's secrets are hashed in parallel
      const secrets = await withTenant(db, org.id, (tx) =>
        Promise.all(
          chunk.map((s) =>
            issueSecret(tx, {
              orgId: org.id,
              deviceId: s.id,
              actor: 'cli:credentials',
              action: 'device.rotate_credentials',
              graceSeconds: grace,
              handoffKey: key,
            }),
          ),
        ),
      );
      chunk.forEach((s, k) => {
        const c = secrets[k];
        if (c) file.devices.set(s.id, { deviceId: s.id, serial: s.serial, username: c.username, secret: c.secret });
      });
      // written as soon as committed (a crash before this loses the chunk's secrets: issue again with --rotate),
      // and before the notice makes the broker accept them
      writeCredentialsFile(o.out, file);
      issued += chunk.length;
      await publishDeviceChange(redis, cfg.REDIS_PREFIX, {
        orgId: org.id,
        kind: 'credentials-rotated',
        deviceIds: chunk.map((s) => s.id),
      }).catch((e: unknown) =>
        log(`credentials: device-change notice not published (${(e as Error).message}); the broker picks them up at its next reconcile`),
      );
    }
    if (!todo.length) writeCredentialsFile(o.out, file);
    log(
      `credentials: ${issued} issued, ${speakers.length - todo.length} kept, written to ${o.out} (mode 0600; the secrets are shown nowhere else)`,
    );
    return { issued, kept: speakers.length - todo.length, file };
  } finally {
    if (!o.redis) redis.disconnect();
    if (!o.db) await db.destroy();
  }
}

/** `rulr credentials issue` as commander hands its options over. */
export async function issueCredentialsCli(
  cfg: Config,
  o: { org: string; devices: string; out: string; rotate?: boolean; grace?: string },
): Promise<void> {
  await issueCredentials(cfg, {
    org: o.org,
    devices: Number(o.devices),
    out: o.out,
    rotate: o.rotate === true,
    ...(o.grace !== undefined ? { graceSeconds: Number(o.grace) } : {}),
  });
}
