import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../../lib/config.js';
import { PROVISION_CLIENT_ID } from '../../lib/contracts/provisioning.js';
import { isUuid } from '../../lib/db.js';
import { CREDENTIAL_USERNAME, fingerprintOfDer } from '../../lib/device-credentials.js';
import { pathOf, readBody } from '../../lib/http.js';
import type { Logger } from '../../lib/logger.js';
import { counter } from '../../lib/metrics.js';
import { allows, type Principal } from '../../lib/mqtt-policy.js';
import type { AttemptLimiter } from './attempts.js';
import { type CredentialDirectory, type CredentialInfo, isCredentialValid } from './credentials.js';
import {
  ALLOWED,
  type Answer,
  type AuthnRequest,
  type AuthzRequest,
  allowAnswer,
  DENIED,
  IGNORED,
  parseAuthnRequest,
  parseAuthzRequest,
} from './emqx.js';
import type { SecretVerifier } from './verifier.js';

export type BrokerAuthConfig = Pick<
  Config,
  | 'INGEST_GROUP'
  | 'MQTT_INGEST_USERNAME'
  | 'MQTT_INGEST_PASSWORD'
  | 'MQTT_WORKERS_USERNAME'
  | 'MQTT_WORKERS_PASSWORD'
  | 'MQTT_PROVISION_USERNAME'
  | 'MQTT_PROVISION_PASSWORD'
  | 'EMQX_AUTH_TOKEN'
>;

export interface BrokerAuthDeps {
  config: BrokerAuthConfig;
  credentials: CredentialDirectory;
  verifier: SecretVerifier;
  /** failed authentications per username */
  failures: AttemptLimiter;
  /** failed authentications per source address (a higher limit: many devices share a NAT) */
  peerFailures: AttemptLimiter;
  logger: Logger;
}

/** The HTTP paths EMQX is configured with (deploy/emqx/emqx.conf). */
export const AUTHN_PATH = '/mqtt/auth';
export const AUTHZ_PATH = '/mqtt/acl';

const answers = counter(
  'rulr_broker_auth_answers_total',
  'Answers of the EMQX authentication/authorization endpoints by endpoint, result and reason',
  ['endpoint', 'result', 'reason'],
);

/** The answer counter of one endpoint, result and reason (a label set resolved once, not at every answer). */
const counted = new Map<string, { inc(): void }>();
function count(endpoint: string, result: string, reason: string): void {
  const key = `${endpoint} ${result} ${reason}`;
  let c = counted.get(key);
  if (!c) {
    c = answers.labels(endpoint, result, reason);
    counted.set(key, c);
  }
  c.inc();
}

const CONTENT_TYPE = 'application/json; charset=utf-8';

/** An answer and why (the metric's reason); a promise only when it had to wait (the database, Redis, argon2id). */
type Result = [Answer, string];
type Pending = Result | Promise<Result>;

/** A secret credential that lets its device connect now. */
const usableSecret = (c: CredentialInfo | undefined): c is CredentialInfo => c?.kind === 'secret' && isCredentialValid(c);

const sameText = (a: string, b: string) => {
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y);
};

/** The principal of a device's valid secret credential, if it is this client's. */
function deviceOf(r: AuthzRequest, cred: CredentialInfo | undefined): Principal | null {
  if (!usableSecret(cred) || cred.deviceId !== r.clientid) return null;
  return { kind: cred.isGateway ? 'gateway' : 'device', deviceId: cred.deviceId };
}

/** Sends an answer (always a 200: EMQX reads any other status as "ignore") and counts it. */
function answer(res: ServerResponse, endpoint: 'authn' | 'authz', a: Answer, reason: string): true {
  count(endpoint, a.result, reason);
  // a flat header list: no object to spread and walk per answer; the body string goes out with the head in one write
  res.writeHead(200, ['content-type', CONTENT_TYPE, 'content-length', String(Buffer.byteLength(a.body))]).end(a.body);
  return true;
}

/**
 * EMQX's HTTP authentication and authorization, answered by the platform's policy
 * (lib/mqtt-policy.ts): a device's username and secret (or its client certificate's fingerprint)
 * and its client id must be its own, service accounts their configured passwords. An allowed
 * connection gets its whole ACL (EMQX 5.8+) and, for a secret in its grace period, `expire_at`, so
 * EMQX disconnects it when the secret stops being valid. Fails closed: anything malformed,
 * unknown, revoked, rate-limited, overloaded or failing inside is denied; only a username that is
 * none of the platform's is ignored (left to other authenticators; EMQX denies when none allows).
 */
export class BrokerAuth {
  constructor(private readonly d: BrokerAuthDeps) {}

  /**
   * The route handler for ingest's ServiceServer; true when it answered. A warm request (its
   * credential and verified secret in memory) is answered in the turn its body arrives: one promise
   * (the body's), no database, Redis or further awaits.
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean | Promise<boolean> {
    const url = req.url ?? '/';
    const path = pathOf(url);
    if (path !== AUTHN_PATH && path !== AUTHZ_PATH) return false;
    const endpoint = path === AUTHN_PATH ? 'authn' : 'authz';
    if (req.method !== 'POST' && req.method !== 'GET') return answer(res, endpoint, DENIED, 'method');
    const token = this.d.config.EMQX_AUTH_TOKEN;
    if (token && !sameText(req.headers.authorization ?? '', `Bearer ${token}`)) {
      req.resume();
      return answer(res, endpoint, DENIED, 'token');
    }
    const query = url.slice(path.length + 1);
    return readBody(req, 32_768).then(
      (body) => {
        let pending: Pending;
        try {
          pending = this.decide(endpoint, body, req.headers['content-type'], query);
        } catch (e) {
          return this.failedInside(res, endpoint, e);
        }
        if (Array.isArray(pending)) return answer(res, endpoint, pending[0], pending[1]);
        return pending.then(
          (r) => answer(res, endpoint, r[0], r[1]),
          (e) => this.failedInside(res, endpoint, e),
        );
      },
      (e) => this.failedInside(res, endpoint, e),
    );
  }

  private decide(endpoint: 'authn' | 'authz', body: Buffer, contentType: string | undefined, query: string): Pending {
    if (endpoint === 'authn') {
      const r = parseAuthnRequest(body, contentType, query);
      return r ? this.authenticate(r) : [DENIED, 'malformed'];
    }
    const r = parseAuthzRequest(body, contentType, query);
    return r ? this.authorize(r) : [DENIED, 'malformed'];
  }

  private failedInside(res: ServerResponse, endpoint: 'authn' | 'authz', e: unknown): true {
    this.d.logger.warn({ err: (e as Error).message, endpoint }, 'broker-auth: request failed; denied');
    return answer(res, endpoint, DENIED, 'error');
  }

  /** An authentication answer and why (the metric's reason). */
  authenticate(r: AuthnRequest): Pending {
    const c = this.d.config;
    if (r.username === c.MQTT_INGEST_USERNAME) return this.service(r, { kind: 'ingest', group: c.INGEST_GROUP }, c.MQTT_INGEST_PASSWORD);
    if (r.username === c.MQTT_WORKERS_USERNAME) return this.service(r, { kind: 'workers' }, c.MQTT_WORKERS_PASSWORD);
    if (r.username === c.MQTT_PROVISION_USERNAME) {
      if (!PROVISION_CLIENT_ID.test(r.clientid) || isUuid(r.clientid)) return [DENIED, 'client_id'];
      return this.service(r, { kind: 'provisioner', clientId: r.clientid }, c.MQTT_PROVISION_PASSWORD);
    }
    if (r.certPem && !r.password) return this.certificate(r);
    if (!CREDENTIAL_USERNAME.test(r.username)) return [IGNORED, 'not_ours'];
    if (!r.password) return [DENIED, 'no_secret'];
    const held = this.d.credentials.heldUsername(r.username);
    if (held !== undefined) return this.withSecret(r, held ?? undefined);
    return this.d.credentials.byUsername(r.username).then((cred) => this.withSecret(r, cred));
  }

  /** A device's secret checked against its credential (from memory when this process verified it before). */
  private withSecret(r: AuthnRequest, cred: CredentialInfo | undefined): Pending {
    if (!usableSecret(cred)) return this.failed(r, 'unknown');
    if (r.clientid !== cred.deviceId) return this.failed(r, 'client_id');
    if (this.d.verifier.cached(cred, r.password)) return this.allowDevice(cred, 'cached');
    return this.verified(r, cred);
  }

  private async verified(r: AuthnRequest, cred: CredentialInfo): Promise<Result> {
    const verdict = await this.d.verifier.verify(cred, r.password, () => this.mayTry(r));
    if (verdict === 'limited') return [DENIED, 'rate_limited'];
    if (verdict === 'overloaded') return [DENIED, 'overloaded'];
    if (verdict === 'wrong') return this.failed(r, 'wrong_secret');
    return this.allowDevice(cred, verdict);
  }

  private async certificate(r: AuthnRequest): Promise<[Answer, string]> {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(r.certPem)) return [DENIED, 'malformed'];
    const cred = await this.d.credentials.byFingerprint(fingerprintOfDer(Buffer.from(r.certPem, 'base64')));
    if (!cred || !isCredentialValid(cred)) return [DENIED, 'unknown_certificate'];
    if (r.clientid !== cred.deviceId) return [DENIED, 'client_id'];
    return this.allowDevice(cred, 'certificate');
  }

  private allowDevice(cred: CredentialInfo, reason: string): [Answer, string] {
    // EMQX refuses an `expire_at` in the past; a secret ending within the second is refused here
    if (cred.expiresAt !== null && cred.expiresAt - Date.now() < 1000) return [DENIED, 'expired'];
    const p: Principal = { kind: cred.isGateway ? 'gateway' : 'device', deviceId: cred.deviceId };
    return [allowAnswer(p, cred.expiresAt), reason];
  }

  private async service(r: AuthnRequest, p: Principal, password: string | undefined): Promise<[Answer, string]> {
    if (!password) return [DENIED, 'account_disabled'];
    if (isUuid(r.clientid)) return [DENIED, 'client_id'];
    if (!(await this.mayTry(r))) return [DENIED, 'rate_limited'];
    if (!sameText(r.password, password)) return this.failed(r, 'wrong_secret');
    return [allowAnswer(p, null), 'service'];
  }

  /** Whether this username and source may still try a secret (their failures are under the limits). */
  private async mayTry(r: AuthnRequest): Promise<boolean> {
    const [user, peer] = await Promise.all([
      this.d.failures.exhausted(r.username),
      r.peerhost ? this.d.peerFailures.exhausted(r.peerhost) : false,
    ]);
    return !user && !peer;
  }

  private async failed(r: AuthnRequest, reason: string): Promise<[Answer, string]> {
    await Promise.all([this.d.failures.consume(r.username), r.peerhost ? this.d.peerFailures.consume(r.peerhost) : undefined]);
    return [DENIED, reason];
  }

  /** An authorization answer and why (for EMQX before 5.8, or a client without an ACL). */
  authorize(r: AuthzRequest): Pending {
    const p = this.principalOf(r);
    return p instanceof Promise ? p.then((x) => this.authorized(r, x)) : this.authorized(r, p);
  }

  private authorized(r: AuthzRequest, p: Principal | null | undefined): Result {
    if (p === undefined) return [IGNORED, 'not_ours'];
    if (p === null) return [DENIED, 'unknown'];
    return allows(p, r.action, r.topic) ? [ALLOWED, p.kind] : [DENIED, 'policy'];
  }

  /**
   * Who a connected client is: undefined when not one of the platform's, null when it no longer may
   * be; a promise only when its credential is not in memory.
   */
  private principalOf(r: AuthzRequest): Principal | null | undefined | Promise<Principal | null | undefined> {
    const c = this.d.config;
    const service = !isUuid(r.clientid);
    if (r.username === c.MQTT_INGEST_USERNAME) return service && c.MQTT_INGEST_PASSWORD ? { kind: 'ingest', group: c.INGEST_GROUP } : null;
    if (r.username === c.MQTT_WORKERS_USERNAME) return service && c.MQTT_WORKERS_PASSWORD ? { kind: 'workers' } : null;
    if (r.username === c.MQTT_PROVISION_USERNAME) {
      return service && c.MQTT_PROVISION_PASSWORD && PROVISION_CLIENT_ID.test(r.clientid)
        ? { kind: 'provisioner', clientId: r.clientid }
        : null;
    }
    // a device authenticated by its secret: the username is its id, or its id and a suffix, and still valid
    if (!isUuid(r.clientid) || !CREDENTIAL_USERNAME.test(r.username) || !r.username.startsWith(r.clientid)) return undefined;
    const held = this.d.credentials.heldUsername(r.username);
    if (held !== undefined) return deviceOf(r, held ?? undefined);
    return this.d.credentials.byUsername(r.username).then((cred) => deviceOf(r, cred));
  }
}
