import { sql } from 'kysely';
import { audit } from './audit.js';
import { sealHandoff } from './contracts/broker-handoff.js';
import type { Tx } from './db.js';
import { credentialUsername, generateDeviceSecret, hashDeviceSecret } from './device-credentials.js';

/**
 * The credential writes two roles make: the devices subgraph (rotation, revocation, certificates)
 * and ingest (a provisioning claim). Each runs inside the caller's tenant transaction, with its
 * audit row. Readers of `device_credentials` treat a credential as valid while `revoked_at` is null
 * and `expires_at` is null or in the future.
 */

/** A secret credential just issued; `secret` exists only in this object (shown once). */
export interface IssuedSecret {
  credentialId: string;
  deviceId: string;
  username: string;
  /** the MQTT client id the device must connect with: its id */
  clientId: string;
  secret: string;
  createdAt: Date;
}

export interface IssueOptions {
  orgId: string;
  deviceId: string;
  /** how `audit_logs.actor` names who asked */
  actor: string;
  action: string;
  /** seconds the device's other secrets keep working (0: revoked now) */
  graceSeconds: number;
  /** when set (Mosquitto dynamic security on), the secret is sealed for the broker sync */
  handoffKey?: Buffer | undefined;
}

/**
 * Issues a new secret credential for a device and sets the end of its other valid secrets
 * (`expires_at` = now + grace, never later than it already was; or revoked with a grace of 0).
 */
export async function issueSecret(tx: Tx, o: IssueOptions, secret = generateDeviceSecret()): Promise<IssuedSecret> {
  const username = credentialUsername(o.deviceId);
  const hash = await hashDeviceSecret(secret);
  const previous =
    o.graceSeconds > 0
      ? await tx
          .updateTable('device_credentials')
          .set({
            expires_at: sql`least(coalesce(expires_at, 'infinity'::timestamptz), now() + make_interval(secs => ${o.graceSeconds}))`,
          })
          .where('org_id', '=', o.orgId)
          .where('device_id', '=', o.deviceId)
          .where('kind', '=', 'secret')
          .where('revoked_at', 'is', null)
          .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', sql<Date>`now()`)]))
          .returning(['username', 'expires_at'])
          .execute()
      : await revokeCredentials(tx, o.orgId, o.deviceId, 'secret');
  const row = await tx
    .insertInto('device_credentials')
    .values({
      org_id: o.orgId,
      device_id: o.deviceId,
      username,
      kind: 'secret',
      hash_scheme: 'argon2id',
      secret_hash: hash,
      broker_handoff: o.handoffKey ? sealHandoff(o.handoffKey, username, secret) : null,
    })
    .returning(['id', 'created_at'])
    .executeTakeFirstOrThrow();
  await audit(tx, o.orgId, o.actor, o.action, 'device', o.deviceId, null, {
    credentialId: row.id,
    username,
    previous: previous.map((p) => ({ username: p.username, expiresAt: p.expires_at })),
  });
  return { credentialId: row.id, deviceId: o.deviceId, username, clientId: o.deviceId, secret, createdAt: row.created_at };
}

/**
 * Revokes a device's valid credentials (of one kind, or all) now and drops any secret still waiting
 * for the broker sync; returns what it revoked.
 */
export async function revokeCredentials(
  tx: Tx,
  orgId: string,
  deviceId: string,
  kind?: 'secret' | 'certificate',
): Promise<{ username: string; expires_at: Date | null }[]> {
  let q = tx
    .updateTable('device_credentials')
    .set({ revoked_at: sql`now()`, broker_handoff: null })
    .where('org_id', '=', orgId)
    .where('device_id', '=', deviceId)
    .where('revoked_at', 'is', null);
  if (kind) q = q.where('kind', '=', kind);
  return q.returning(['username', 'expires_at']).execute();
}
