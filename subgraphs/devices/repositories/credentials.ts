import { createHash, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, withTenant } from '../../../lib/db.js';
import { ConflictError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import { deviceIn } from './devices.js';
import { revokeDeviceCredentials } from './shared.js';

/** Device MQTT secrets are random 192-bit strings, so a fast hash is enough (as for API keys). */
export const hashDeviceSecret = (secret: string) => createHash('sha256').update(secret).digest('hex');

/** Devices' MQTT credentials (a device's decommissioning revokes them too, in `DeviceRepository`). */
export class CredentialRepository {
  constructor(readonly db: Db) {}

  /**
   * Issues a new MQTT secret (username = device id) and revokes the previous one: the credential
   * row is replaced in place, so only the newest secret verifies.
   */
  rotateCredentials(identity: Identity, id: string): Promise<{ deviceId: string; username: string; secret: string; createdAt: Date }> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const device = await deviceIn(tx, orgId, id, true);
      if (device.decommissioned_at) throw new ConflictError(`device ${device.serial} is decommissioned`);
      const secret = randomBytes(24).toString('base64url');
      await revokeDeviceCredentials(tx, orgId, id);
      const row = await tx
        .insertInto('device_credentials')
        .values({ org_id: orgId, device_id: id, username: id, secret_hash: hashDeviceSecret(secret) })
        .onConflict((oc) =>
          oc
            .column('username')
            .doUpdateSet({ secret_hash: (eb) => eb.ref('excluded.secret_hash'), created_at: sql`now()`, revoked_at: null }),
        )
        .returning(['username', 'created_at'])
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'device.rotate_credentials', 'device', id, null, { username: row.username });
      return { deviceId: id, username: row.username, secret, createdAt: row.created_at };
    });
  }
}
