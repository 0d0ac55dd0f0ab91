import { type EmqxAclRule, emqxAcl, type Principal } from '../../lib/mqtt-policy.js';

/**
 * EMQX 5's HTTP authentication and authorization exchange, as EMQX sends and reads it
 * (docs: access-control/authn/http, authz/http; source: emqx_authn_http.erl, emqx_authz_http.erl).
 * EMQX renders the configured body template (deploy/emqx/emqx.conf) with the client's values, all
 * strings (`${qos}` and `${retain}` too; an unset value is ""), as JSON for POST or a query string
 * for GET; it reads `{"result": "allow" | "deny" | "ignore"}` from a 200 answer with a JSON
 * content type, plus for authentication `is_superuser`, and from 5.8 `acl` and `expire_at` (Unix
 * seconds, in the future). Any other status means "ignore" to EMQX, so every answer here is a 200.
 */

export interface AuthnRequest {
  username: string;
  password: string;
  clientid: string;
  peerhost: string;
  /** base64 of the client certificate's DER bytes (`${cert_pem}`, EMQX 5.8+), or "" */
  certPem: string;
}

export interface AuthzRequest {
  username: string;
  clientid: string;
  peerhost: string;
  action: 'publish' | 'subscribe';
  topic: string;
}

export type AuthnAnswer =
  | { result: 'allow'; is_superuser: false; acl: EmqxAclRule[]; expire_at?: number }
  | { result: 'deny' }
  | { result: 'ignore' };

export type AuthzAnswer = { result: 'allow' | 'deny' | 'ignore' };

/** The fields of a request body or query string, or undefined when it is neither a JSON object nor a query. */
function fieldsOf(body: Buffer, contentType: string | undefined, query: string): Record<string, unknown> | undefined {
  if (body.length === 0) return Object.fromEntries(new URLSearchParams(query));
  if (contentType?.startsWith('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(body.toString('utf8')));
  try {
    const doc = JSON.parse(body.toString('utf8'));
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? doc : undefined;
  } catch {
    return undefined;
  }
}

const text = (v: unknown, max: number): string | undefined => (typeof v === 'string' && v.length <= max ? v : undefined);

/** An authentication request, or undefined when malformed (not an object, fields missing or not strings). */
export function parseAuthnRequest(body: Buffer, contentType: string | undefined, query = ''): AuthnRequest | undefined {
  const f = fieldsOf(body, contentType, query);
  if (!f) return undefined;
  const username = text(f.username, 1024);
  const password = text(f.password ?? '', 1024);
  const clientid = text(f.clientid, 1024);
  const peerhost = text(f.peerhost ?? '', 64);
  const certPem = text(f.cert_pem ?? '', 16_384);
  if (username === undefined || password === undefined || clientid === undefined || peerhost === undefined || certPem === undefined) {
    return undefined;
  }
  return { username, password, clientid, peerhost, certPem };
}

/** An authorization request, or undefined when malformed (an action other than publish or subscribe, no topic …). */
export function parseAuthzRequest(body: Buffer, contentType: string | undefined, query = ''): AuthzRequest | undefined {
  const f = fieldsOf(body, contentType, query);
  if (!f) return undefined;
  const username = text(f.username ?? '', 1024);
  const clientid = text(f.clientid, 1024);
  const peerhost = text(f.peerhost ?? '', 64);
  const topic = text(f.topic, 65_535);
  const action = f.action;
  if (
    username === undefined ||
    clientid === undefined ||
    peerhost === undefined ||
    !topic ||
    (action !== 'publish' && action !== 'subscribe')
  ) {
    return undefined;
  }
  return { username, clientid, peerhost, action, topic };
}

export const ALLOW = (acl: EmqxAclRule[], expiresAtMs: number | null): AuthnAnswer => ({
  result: 'allow',
  is_superuser: false,
  acl,
  ...(expiresAtMs !== null ? { expire_at: Math.floor(expiresAtMs / 1000) } : {}),
});
export const DENY = { result: 'deny' } as const;
export const IGNORE = { result: 'ignore' } as const;

/** An answer ready to send: its result (the metric's label) and its JSON body. */
export interface Answer {
  result: 'allow' | 'deny' | 'ignore';
  body: string;
}

const ready = (a: AuthnAnswer | AuthzAnswer): Answer => ({ result: a.result, body: JSON.stringify(a) });
export const DENIED = ready(DENY);
export const IGNORED = ready(IGNORE);
export const ALLOWED = ready({ result: 'allow' });

/** Stands for the device id in the answer templates: letters only, so JSON leaves it as it is. */
const MARK = 'RULRDEVICEIDMARK';
/** A device's and a concentrator's `allow` answer, cut where its id goes (its ACL is the policy's, for that id). */
const TEMPLATES = {
  device: JSON.stringify(ALLOW(emqxAcl({ kind: 'device', deviceId: MARK }), null)).split(MARK),
  gateway: JSON.stringify(ALLOW(emqxAcl({ kind: 'gateway', deviceId: MARK }), null)).split(MARK),
};

/**
 * The `allow` answer of an authentication, with the principal's whole ACL and `expire_at` when
 * the secret ends: `JSON.stringify(ALLOW(emqxAcl(p), expiresAtMs))`, which for a device or a
 * concentrator is its template joined on its id (the id is a uuid: nothing in it needs escaping),
 * not rebuilt and serialized at every connection.
 */
export function allowAnswer(p: Principal, expiresAtMs: number | null): Answer {
  const body = p.kind === 'device' || p.kind === 'gateway' ? TEMPLATES[p.kind].join(p.deviceId) : JSON.stringify(ALLOW(emqxAcl(p), null));
  return {
    result: 'allow',
    body: expiresAtMs === null ? body : `${body.slice(0, -1)},"expire_at":${Math.floor(expiresAtMs / 1000)}}`,
  };
}
