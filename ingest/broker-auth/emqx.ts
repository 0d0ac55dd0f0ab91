import type { EmqxAclRule } from '../../lib/mqtt-policy.js';

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
