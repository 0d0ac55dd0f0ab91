import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MqttClient } from 'mqtt';
import { audit } from '../lib/audit.js';
import { ContractError } from '../lib/contracts/contract.js';
import { type DeviceChange, publishDeviceChange } from '../lib/contracts/device-changes.js';
import {
  encodeProvisionAnswer,
  type ProvisionAnswer,
  type ProvisionRequest,
  parseProvisionRequest,
  provisionClientIdOf,
  provisionResponseTopic,
} from '../lib/contracts/provisioning.js';
import { issueSecret } from '../lib/credential-store.js';
import { type Db, isUniqueViolation, withTenant } from '../lib/db.js';
import { verifyDeviceSecret } from '../lib/device-credentials.js';
import { BodyTooLargeError, readBody, sendJson } from '../lib/http.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';
import type { AttemptLimiter } from './broker-auth/attempts.js';

export interface ProvisioningOptions {
  db: Db;
  redis: Redis;
  prefix: string;
  /** per source (the MQTT client id or the HTTP client address) */
  bySource: AttemptLimiter;
  /** per provisioning key (guessing one profile's secret from many sources) */
  byKey: AttemptLimiter;
  /** seals new secrets for the Mosquitto dynamic-security sync (DYNSEC_ENABLED) */
  handoffKey?: Buffer | undefined;
  logger: Logger;
}

/** The HTTP path of provisioning on the ingest role. */
export const PROVISION_PATH = '/provision';

/** Why a claim was refused: what the device is told (no detail that helps guessing). */
type Refusal = 'rate limited' | 'refused' | 'already provisioned' | 'busy';

const claims = counter('rulr_provisioning_claims_total', 'Provisioning claims by outcome', ['outcome']);

interface Profile {
  id: string;
  org_id: string;
  provision_mode: 'disabled' | 'pre_registered' | 'create_new';
  provision_secret_hash: string | null;
}

class Refused extends Error {
  constructor(
    readonly answer: Refusal,
    readonly reason: string,
  ) {
    super(reason);
  }
}

/**
 * Provisioning by a profile's key and secret (lib/contracts/provisioning.ts): a new device claims
 * its own credentials once, over MQTT (`provision/{clientId}/request`, answered on `/response`) or
 * over HTTP (`POST /provision`). The serial must be a device registered beforehand with that
 * profile and not claimed yet, or, when the profile's mode is CREATE_NEW, a serial the organization
 * does not have (the device is created). A claim is one transaction (the device row locked, its
 * `provisioned_at` set, the secret issued), so exactly one of two concurrent claims wins; every
 * success and every refusal of a known profile is audited; attempts are limited per source and per
 * key before anything is looked up.
 */
export class Provisioning {
  private hashing = 0;

  constructor(private readonly o: ProvisioningOptions) {}

  /** Claims credentials for `r` from `source`. */
  async claim(r: ProvisionRequest, source: string): Promise<ProvisionAnswer> {
    try {
      const answer = await this.tryClaim(r, source);
      claims.inc({ outcome: 'success' });
      return answer;
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
      claims.inc({ outcome: e.reason });
      return { status: 'FAILURE', error: e.answer };
    }
  }

  private async tryClaim(r: ProvisionRequest, source: string): Promise<ProvisionAnswer> {
    const [okSource, okKey] = await Promise.all([this.o.bySource.consume(source), this.o.byKey.consume(r.provisionKey)]);
    if (!okSource || !okKey) throw new Refused('rate limited', 'rate_limited');
    const profile = (await this.o.db
      .selectFrom('device_profiles')
      .select(['id', 'org_id', 'provision_mode', 'provision_secret_hash'])
      .where('provision_key', '=', r.provisionKey)
      .executeTakeFirst()) as Profile | undefined;
    if (!profile || profile.provision_mode === 'disabled' || !profile.provision_secret_hash) throw new Refused('refused', 'unknown_key');
    if (this.hashing >= 8) throw new Refused('busy', 'busy');
    this.hashing++;
    let ok: boolean;
    try {
      ok = await verifyDeviceSecret('argon2id', profile.provision_secret_hash, r.provisionSecret);
    } finally {
      this.hashing--;
    }
    if (!ok) return this.refuse(profile, r, source, new Refused('refused', 'wrong_secret'));
    try {
      const { answer, changes } = await this.claimIn(profile, r);
      for (const c of changes) {
        await publishDeviceChange(this.o.redis, this.o.prefix, c).catch((e) =>
          this.o.logger.warn({ err: (e as Error).message }, 'provisioning: device-change notice not published'),
        );
      }
      return answer;
    } catch (e) {
      if (e instanceof Refused) return this.refuse(profile, r, source, e);
      throw e;
    }
  }

  private async claimIn(profile: Profile, r: ProvisionRequest): Promise<{ answer: ProvisionAnswer; changes: DeviceChange[] }> {
    const orgId = profile.org_id;
    const actor = `provision:${profile.id}`;
    return withTenant(this.o.db, orgId, async (tx) => {
      let device = await tx
        .selectFrom('devices')
        .select(['id', 'profile_id', 'provisioned_at', 'decommissioned_at'])
        .where('org_id', '=', orgId)
        .where('serial', '=', r.serial)
        .forUpdate()
        .executeTakeFirst();
      let created = false;
      if (!device) {
        if (profile.provision_mode !== 'create_new') throw new Refused('refused', 'unknown_serial');
        try {
          device = await tx
            .insertInto('devices')
            .values({ org_id: orgId, serial: r.serial, name: r.name ?? r.serial, profile_id: profile.id })
            .returning(['id', 'profile_id', 'provisioned_at', 'decommissioned_at'])
            .executeTakeFirstOrThrow();
        } catch (e) {
          // a concurrent claim created it first: that claim won
          if (isUniqueViolation(e)) throw new Refused('already provisioned', 'already_provisioned');
          throw e;
        }
        created = true;
        await audit(tx, orgId, actor, 'device.create', 'device', device.id, null, { serial: r.serial, profileId: profile.id });
      } else {
        if (device.profile_id !== profile.id) throw new Refused('refused', 'other_profile');
        if (device.decommissioned_at) throw new Refused('refused', 'decommissioned');
        if (device.provisioned_at) throw new Refused('already provisioned', 'already_provisioned');
      }
      await tx.updateTable('devices').set({ provisioned_at: new Date() }).where('id', '=', device.id).execute();
      const issued = await issueSecret(tx, {
        orgId,
        deviceId: device.id,
        actor,
        action: 'device.provisioned',
        graceSeconds: 0,
        handoffKey: this.o.handoffKey,
      });
      const changes: DeviceChange[] = [{ orgId, kind: 'credentials-rotated', deviceIds: [device.id] }];
      if (created) changes.unshift({ orgId, kind: 'created', deviceIds: [device.id] });
      return {
        answer: { status: 'SUCCESS', deviceId: device.id, clientId: issued.clientId, username: issued.username, secret: issued.secret },
        changes,
      };
    });
  }

  /** Audits a refused claim of a known profile, then answers with the refusal. */
  private async refuse(profile: Profile, r: ProvisionRequest, source: string, e: Refused): Promise<never> {
    await withTenant(this.o.db, profile.org_id, (tx) =>
      audit(tx, profile.org_id, `provision:${profile.id}`, 'device.provision_refused', 'device_profile', profile.id, null, {
        serial: r.serial,
        reason: e.reason,
        source,
      }),
    ).catch((err) => this.o.logger.warn({ err: (err as Error).message }, 'provisioning: refusal not audited'));
    throw e;
  }

  /** An MQTT request (`provision/{clientId}/request`); answers on the client's response topic. Never throws. */
  async onMqtt(client: MqttClient, topic: string, payload: Buffer): Promise<void> {
    const clientId = provisionClientIdOf(topic);
    if (!clientId) return;
    let answer: ProvisionAnswer;
    try {
      answer = await this.claim(parseProvisionRequest(payload), `mqtt:${clientId}`);
    } catch (e) {
      if (!(e instanceof ContractError)) this.o.logger.warn({ err: (e as Error).message }, 'provisioning: claim failed');
      answer = { status: 'FAILURE', error: e instanceof ContractError ? e.reason : 'internal error' };
    }
    await client
      .publishAsync(provisionResponseTopic(clientId), encodeProvisionAnswer(answer), { qos: 1 })
      .catch((e) => this.o.logger.warn({ err: (e as Error).message }, 'provisioning: answer not published'));
  }

  /** `POST /provision`: 200 with the credentials, 400 malformed, 403 refused, 429 limited. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    if ((req.url ?? '').split('?')[0] !== PROVISION_PATH) return false;
    if (req.method !== 'POST') {
      sendJson(res, 405, { status: 'FAILURE', error: 'use POST' });
      return true;
    }
    let r: ProvisionRequest;
    try {
      r = parseProvisionRequest(await readBody(req, 8192));
    } catch (e) {
      if (!(e instanceof ContractError) && !(e instanceof BodyTooLargeError)) throw e;
      sendJson(res, 400, { status: 'FAILURE', error: e instanceof ContractError ? e.reason : 'request too large' });
      return true;
    }
    const answer = await this.claim(r, `http:${req.socket.remoteAddress ?? 'unknown'}`);
    const status = answer.status === 'SUCCESS' ? 200 : answer.error === 'rate limited' || answer.error === 'busy' ? 429 : 403;
    sendJson(res, status, answer, { 'cache-control': 'no-store' });
    return true;
  }
}
