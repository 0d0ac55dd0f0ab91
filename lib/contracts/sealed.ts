import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { reject } from './contract.js';

/**
 * Secrets one role writes and another must read back in clear (the broker hand-off of a new device
 * secret, a notification channel's signing secret) are stored sealed, never in clear: AES-256-GCM,
 * `iv (12) ‖ ciphertext ‖ tag (16)`, under a key derived from `RULR_SECRET` per purpose
 * (HKDF-SHA256, info `rulr/<purpose>`), with associated data naming the row the secret belongs to,
 * so a sealed value copied to another row, or read under another deployment's key, does not open.
 */

const IV = 12;
const TAG = 16;

/** The key of one purpose (every role derives the same one from `RULR_SECRET`). */
export const sealingKey = (rulrSecret: string, purpose: string): Buffer =>
  Buffer.from(hkdfSync('sha256', rulrSecret, Buffer.alloc(0), `rulr/${purpose}`, 32));

/** Seals `secret` for the row named by `aad`. */
export function seal(key: Buffer, aad: string, secret: string): Buffer {
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(secret, 'utf8'), c.final()]);
  return Buffer.concat([iv, body, c.getAuthTag()]);
}

/**
 * The secret sealed for `aad` (what it names: `aadName`, for the error); throws a counted
 * ContractError of `contract` when the blob is too short, was sealed for another row or under
 * another key, or was altered.
 */
export function unseal(contract: string, key: Buffer, aadName: string, aad: string, blob: Buffer): string {
  if (blob.length <= IV + TAG) return reject(contract, 'too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, blob.subarray(0, IV));
    d.setAAD(Buffer.from(aad, 'utf8'));
    d.setAuthTag(blob.subarray(blob.length - TAG));
    return Buffer.concat([d.update(blob.subarray(IV, blob.length - TAG)), d.final()]).toString('utf8');
  } catch {
    return reject(contract, `does not open with this key and ${aadName}`);
  }
}
