import { seal, sealingKey, sealingKeys, unseal, unsealWith } from './sealed.js';

/**
 * The hand-off of a new device secret to the Mosquitto dynamic-security sync: Mosquitto's control
 * API takes a client's password in clear (`createClient`), and the platform stores only a slow
 * hash. So the producer of a secret (the devices subgraph's rotation, ingest's provisioning claim)
 * seals it into `device_credentials.broker_handoff`, in the transaction that creates the
 * credential, and the sync in workers opens it, creates the broker client and clears the column.
 * Written only when `DYNSEC_ENABLED` is on; a hand-off the sync has not taken is wiped with the
 * credential's revocation.
 *
 * Format: lib/contracts/sealed.ts (AES-256-GCM), with the credential's username as associated data
 * (a hand-off copied to another row does not open), under the key of purpose `broker-handoff`
 * (HKDF-SHA256 of `RULR_SECRET`, info `rulr/broker-handoff`).
 */

const CONTRACT = 'broker-handoff';

/** The hand-off key of a deployment (every role derives the same one from `RULR_SECRET`). */
export const handoffKey = (rulrSecret: string): Buffer => sealingKey(rulrSecret, 'broker-handoff');

/** The hand-off keys a deployment opens with, newest first (`acceptedSecrets(config)`). */
export const handoffKeys = (rulrSecrets: readonly string[]): Buffer[] => sealingKeys(rulrSecrets, 'broker-handoff');

/** Seals `secret` for the credential `username`. */
export const sealHandoff = (key: Buffer, username: string, secret: string): Buffer => seal(key, username, secret);

/**
 * The secret sealed for `username`; throws a counted ContractError when the blob is too short,
 * was sealed for another username or under another key, or was altered.
 */
export const openHandoff = (keys: Buffer | readonly Buffer[], username: string, blob: Buffer): string =>
  unseal(CONTRACT, keys, 'username', username, blob);

/** {@link openHandoff}, and which of `keys` opened it (0: the current one). */
export const openHandoffWith = (keys: readonly Buffer[], username: string, blob: Buffer) =>
  unsealWith(CONTRACT, keys, 'username', username, blob);
