import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { type IssuedSecret, issueSecret } from '../../../lib/credential-store.js';
import { type Db, isUniqueViolation, withTenant } from '../../../lib/db.js';
import { credentialUsername } from '../../../lib/device-credentials.js';
import { ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import { deviceIn } from './devices.js';
import { readAll } from './shared.js';

/** A credential as the API lists it (never its hash). */
export interface CredentialRow {
  id: string;
  device_id: string;
  kind: 'secret' | 'certificate';
  username: string;
  fingerprint: string | null;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
}

const columns = ['id', 'device_id', 'kind', 'username', 'fingerprint', 'created_at', 'expires_at', 'revoked_at'] as const;

export interface CredentialOptions {
  /** seals new secrets for the Mosquitto dynamic-security sync (DYNSEC_ENABLED) */
  handoffKey?: Buffer | undefined;
}

/**
 * Devices' MQTT credentials: secrets (argon2id, shown once, rotated with a grace period for the old
 * one) and client-certificate fingerprints. A device's decommissioning revokes them too, in
 * `DeviceRepository`. Every change is audited in its transaction.
 */
export class CredentialRepository {
  constructor(
    readonly db: Db,
    private readonly o: CredentialOptions = {},
  ) {}

  /**
   * Issues a new secret (its own username; client id = the device id); the device's other secrets
   * keep working for `graceSeconds`, or stop now when it is 0.
   */
  rotateCredentials(identity: Identity, id: string, graceSeconds: number): Promise<IssuedSecret> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const device = await deviceIn(tx, orgId, id, true);
      if (device.decommissioned_at) throw new ConflictError(`device ${device.serial} is decommissioned`);
      return issueSecret(tx, {
        orgId,
        deviceId: id,
        actor: actorOf(identity),
        action: 'device.rotate_credentials',
        graceSeconds,
        handoffKey: this.o.handoffKey,
      });
    });
  }

  /** Revokes one credential now (repeating it changes nothing); NOT_FOUND when it is not this tenant's. */
  revokeCredential(identity: Identity, credentialId: string): Promise<CredentialRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = (await tx
        .selectFrom('device_credentials')
        .select(columns)
        .where('org_id', '=', orgId)
        .where('id', '=', credentialId)
        .forUpdate()
        .executeTakeFirst()) as CredentialRow | undefined;
      if (!before) throw new NotFoundError(`credential ${credentialId}`);
      if (before.revoked_at) return before;
      const after = (await tx
        .updateTable('device_credentials')
        .set({ revoked_at: sql`now()`, broker_handoff: null })
        .where('org_id', '=', orgId)
        .where('id', '=', credentialId)
        .returning(columns)
        .executeTakeFirstOrThrow()) as CredentialRow;
      await audit(tx, orgId, actorOf(identity), 'device.revoke_credential', 'device', before.device_id, before, after);
      return after;
    });
  }

  /** Registers a client certificate by its SHA-256 fingerprint; CONFLICT when a valid credential has it. */
  registerCertificate(identity: Identity, id: string, fingerprint: string): Promise<CredentialRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const device = await deviceIn(tx, orgId, id, true);
      if (device.decommissioned_at) throw new ConflictError(`device ${device.serial} is decommissioned`);
      try {
        const row = (await tx
          .insertInto('device_credentials')
          .values({
            org_id: orgId,
            device_id: id,
            username: credentialUsername(id),
            kind: 'certificate',
            hash_scheme: null,
            secret_hash: null,
            fingerprint,
          })
          .returning(columns)
          .executeTakeFirstOrThrow()) as CredentialRow;
        await audit(tx, orgId, actorOf(identity), 'device.register_certificate', 'device', id, null, row);
        return row;
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError('a valid credential already has this certificate fingerprint');
        throw e;
      }
    });
  }

  /** The credentials of several devices (newest first), revoked ones included. */
  async credentialsOf(orgId: string, deviceIds: readonly string[]): Promise<CredentialRow[]> {
    const [rows] = await readAll(
      this.db,
      orgId,
      this.db
        .selectFrom('device_credentials')
        .select(columns)
        .where('org_id', '=', orgId)
        .where('device_id', 'in', deviceIds)
        .orderBy('created_at', 'desc'),
    );
    return rows as unknown as CredentialRow[];
  }
}
