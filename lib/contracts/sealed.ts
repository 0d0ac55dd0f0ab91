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
 * The keys one purpose accepts, newest first (lib/config.ts `acceptedSecrets`: RULR_SECRET, then
 * RULR_SECRET_PREVIOUS while it is rotated): values are sealed with the first, opened with any.
 */
export const sealingKeys = (rulrSecrets: readonly string[], purpose: string): Buffer[] => rulrSecrets.map((s) => sealingKey(s, purpose));

function open(key: Buffer, aad: string, blob: Buffer): string | undefined {
  try {
    const d = createDecipheriv('aes-256-gcm', key, blob.subarray(0, IV));
    d.setAAD(Buffer.from(aad, 'utf8'));
    d.setAuthTag(blob.subarray(blob.length - TAG));
    return Buffer.concat([d.update(blob.subarray(IV, blob.length - TAG)), d.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

/**
 * The secret sealed for `aad` under one of `keys` (tried in order), and which one opened it (0: the
 * current key; more: a previous one, so the value should be sealed again: `rulr secrets reseal`);
 * throws a counted ContractError of `contract` when the blob is too short, was sealed for another
 * row or under no key given, or was altered. `aadName` names what `aad` is, for the error.
 */
export function unsealWith(contract: string, keys: Buffer | readonly Buffer[], aadName: string, aad: string, blob: Buffer) {
  if (blob.length <= IV + TAG) return reject(contract, 'too short');
  const list = Buffer.isBuffer(keys) ? [keys] : keys;
  for (let keyIndex = 0; keyIndex < list.length; keyIndex++) {
    const secret = open(list[keyIndex] as Buffer, aad, blob);
    if (secret !== undefined) return { secret, keyIndex };
  }
  return reject(contract, `does not open with ${list.length > 1 ? 'these keys' : 'this key'} and ${aadName}`);
}

/** {@link unsealWith}'s secret alone. */
export const unseal = (contract: string, keys: Buffer | readonly Buffer[], aadName: string, aad: string, blob: Buffer): string =>
  unsealWith(contract, keys, aadName, aad, blob).secret;
