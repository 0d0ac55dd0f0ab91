import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { hash as argonHash, verify as argonVerify } from '@node-rs/argon2';
import { BadInputError } from './errors.js';

/**
 * Device credentials as every role sees them: how a secret is made, stored (argon2id, salted) and
 * checked, how a credential's MQTT username looks, and certificate fingerprints. SQL lives with
 * its callers (the devices subgraph's credential repository, ingest's provisioning and
 * authentication); this module has no I/O.
 */

/** How a stored secret was hashed: argon2id, or the unsalted SHA-256 of releases before issue 13. */
export type HashScheme = 'argon2id' | 'sha256';

/**
 * argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane): about 11 ms per verification on one
 * core. Device secrets are 192 random bits, so the slow hash guards a stolen table, not a weak
 * secret; the broker-facing path keeps it off the hot path with a verification cache
 * (docs/decisions.md, "Device authentication at 5,000 requests/s").
 */
// algorithm 2 = Argon2id (a const enum in the typings, not importable with verbatimModuleSyntax)
const ARGON2 = { algorithm: 2, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

/** A new device secret: 24 random bytes, base64url (32 characters). */
export const generateDeviceSecret = (): string => randomBytes(24).toString('base64url');

/**
 * The MQTT username of a new credential: the device id and a random suffix. Each credential has its
 * own username, so an old secret and its replacement can both be valid during a rotation's grace
 * period (Mosquitto's dynamic security holds one password per client).
 */
export const credentialUsername = (deviceId: string): string => `${deviceId}.${randomBytes(4).toString('hex')}`;

/** A credential username (`<device uuid>` for credentials from before issue 13, else `<uuid>.<8 hex>`). */
export const CREDENTIAL_USERNAME = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.[0-9a-f]{8})?$/;

export const hashDeviceSecret = (secret: string): Promise<string> => argonHash(secret, ARGON2);

/** The unsalted SHA-256 (hex) older releases stored; only read, to migrate on first use. */
export const legacySha256 = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** Whether `secret` matches what is stored; never throws (a corrupt hash does not match). */
export async function verifyDeviceSecret(scheme: HashScheme, stored: string, secret: string): Promise<boolean> {
  if (scheme === 'sha256') {
    const a = Buffer.from(legacySha256(secret), 'hex');
    const b = Buffer.from(stored, 'hex');
    return a.length === b.length && timingSafeEqual(a, b);
  }
  return argonVerify(stored, secret).catch(() => false);
}

/** SHA-256 of a certificate's DER bytes, lower-case hex: how a certificate credential is stored. */
export const fingerprintOfDer = (der: Buffer): string => createHash('sha256').update(der).digest('hex');

/**
 * A certificate fingerprint from what an operator pastes: 64 hex digits (colons and spaces
 * allowed, any case) or a PEM certificate. Throws BadInputError otherwise.
 */
export function normalizeFingerprint(input: string): string {
  const text = input.trim();
  if (text.startsWith('-----BEGIN CERTIFICATE-----')) {
    try {
      return fingerprintOfDer(new X509Certificate(text).raw);
    } catch {
      throw new BadInputError('certificate is not a valid PEM certificate', { field: 'certificate' });
    }
  }
  const hex = text.replace(/[:\s]/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new BadInputError('fingerprint must be a SHA-256 fingerprint (64 hex digits) or a PEM certificate', { field: 'fingerprint' });
  }
  return hex;
}
