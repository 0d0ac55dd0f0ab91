import { sql } from 'kysely';
import { request } from 'undici';
import type { DeviceChange } from '../../lib/contracts/device-changes.js';
import type { Db } from '../../lib/db.js';
import type { Logger } from '../../lib/logger.js';
import { counter } from '../../lib/metrics.js';

export interface EmqxKickOptions {
  db: Db;
  /** EMQX's REST API base, e.g. `http://emqx:18083/api/v5` */
  apiUrl: string;
  apiKey: string;
  apiSecret: string;
  logger: Logger;
}

const kicks = counter('rulr_emqx_kicks_total', 'Devices the workers asked EMQX to disconnect, by outcome', ['outcome']);

/**
 * Disconnects devices from EMQX through its REST API (`DELETE /clients/{clientid}`, basic
 * authentication with an API key) when a credential of theirs was revoked or the device was
 * decommissioned: EMQX keeps a connected client's ACL from its authentication until it reconnects,
 * and the reconnection then meets the platform's refusal. A secret ending its grace period needs no
 * kick (its authentication answer carried `expire_at`). A sweep repeats the kick for credentials
 * revoked since the previous sweep, for a notice that was lost.
 */
export class EmqxKick {
  private lastSweep = new Date();

  constructor(private readonly o: EmqxKickOptions) {}

  async apply(change: DeviceChange): Promise<void> {
    if (change.kind === 'decommissioned') return this.kick(change.deviceIds);
    if (change.kind !== 'credentials-rotated') return;
    const revoked = await this.o.db
      .selectFrom('device_credentials')
      .select('device_id')
      .distinct()
      .where('device_id', 'in', change.deviceIds)
      .where('revoked_at', '>', sql<Date>`now() - interval '1 minute'`)
      .execute();
    await this.kick(revoked.map((r) => r.device_id));
  }

  /** Kicks the devices whose credentials were revoked since the last sweep. */
  async sweep(): Promise<void> {
    const since = this.lastSweep;
    this.lastSweep = new Date();
    const rows = await this.o.db
      .selectFrom('device_credentials')
      .select('device_id')
      .distinct()
      .where('revoked_at', '>', new Date(since.getTime() - 5000))
      .execute();
    await this.kick(rows.map((r) => r.device_id));
  }

  /** One DELETE per device; 404 (not connected) counts as done. */
  async kick(deviceIds: string[]): Promise<void> {
    const auth = `Basic ${Buffer.from(`${this.o.apiKey}:${this.o.apiSecret}`).toString('base64')}`;
    for (const id of deviceIds) {
      try {
        const r = await request(`${this.o.apiUrl.replace(/\/$/, '')}/clients/${encodeURIComponent(id)}`, {
          method: 'DELETE',
          headers: { authorization: auth },
          headersTimeout: 10_000,
          bodyTimeout: 10_000,
        });
        await r.body.dump();
        const outcome = r.statusCode === 204 ? 'kicked' : r.statusCode === 404 ? 'not_connected' : 'error';
        kicks.inc({ outcome });
        if (outcome === 'error') this.o.logger.warn({ deviceId: id, status: r.statusCode }, 'emqx: kick refused');
      } catch (e) {
        kicks.inc({ outcome: 'error' });
        this.o.logger.warn({ deviceId: id, err: (e as Error).message }, 'emqx: kick failed');
      }
    }
  }
}
