import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { reject } from './contract.js';

/**
 * The hand-off of a new device secret to the Mosquitto dynamic-security sync: Mosquitto's control
 * API takes a client's password in clear (`createClient`), and the platform stores only a slow
 * hash. So the producer of a secret (the devices subgraph's rotation, ingest's provisioning claim)
 * seals it into `device_credentials.broker_handoff`, in the transaction that creates the
 * credential, and the sync in workers opens it, creates the broker client and clears the column.
 * Written only when `DYNSEC_ENABLED` is on; a hand-off the sync has not taken is wiped with the
 * credential's revocation.
 *
 * Format: AES-256-GCM, `iv (12) ‖ ciphertext ‖ tag (16)`, with the credential's username as
 * associated data (a hand-off copied to another row does not open), under a key derived from
 * `RULR_SECRET` (HKDF-SHA256, info `rulr/broker-handoff`).
 */

const CONTRACT = 'broker-handoff';
const IV = 12;
const TAG = 16;

/** The hand-off key of a deployment (every role derives the same one from `RULR_SECRET`). */
export const handoffKey = (rulrSecret: string): Buffer =>
  Buffer.from(hkdfSync('sha256', rulrSecret, Buffer.alloc(0), 'rulr/broker-handoff', 32));

/** Seals `secret` for the credential `username`. */
export function sealHandoff(key: Buffer, username: string, secret: string): Buffer {
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(username, 'utf8'));
  const body = Buffer.concat([c.update(secret, 'utf8'), c.final()]);
  return Buffer.concat([iv, body, c.getAuthTag()]);
}

/**
 * The secret sealed for `username`; throws a counted ContractError when the blob is too short,
 * was sealed for another username or under another key, or was altered.
 */
export function openHandoff(key: Buffer, username: string, blob: Buffer): string {
  if (blob.length <= IV + TAG) return reject(CONTRACT, 'too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, blob.subarray(0, IV));
    d.setAAD(Buffer.from(username, 'utf8'));
    d.setAuthTag(blob.subarray(blob.length - TAG));
    return Buffer.concat([d.update(blob.subarray(IV, blob.length - TAG)), d.final()]).toString('utf8');
  } catch {
    return reject(CONTRACT, 'does not open with this key and username');
  }
}
