import { createHmac, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { ForbiddenError, UnauthenticatedError } from './errors.js';

export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Who is asking, as verified by the gateway and forwarded to subgraphs. */
export interface Identity {
  /** `anonymous`: no credentials; only `login` accepts it. */
  kind: 'user' | 'apikey' | 'system' | 'anonymous';
  /** user id, api key id, or a system component name */
  subject: string;
  orgId: string;
  role: Role;
  /** API key scopes (`devices:read`, `devices:write`, `*` …); empty for users. */
  scopes: string[];
}

export const IDENTITY_HEADER = 'x-rulr-identity';
/** How long a signed identity header stays valid (clock skew between replicas included). */
const MAX_AGE_MS = 5 * 60_000;

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');

export function signIdentity(identity: Identity, secret: string, now = Date.now()): string {
  const body = b64(JSON.stringify({ ...identity, iat: now }));
  const mac = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${mac}`;
}

const verified = new LRUCache<string, Identity & { iat: number }>({ max: 10_000 });

/** Verifies the gateway's signed header; throws UNAUTHENTICATED when missing, forged or stale. */
export function verifyIdentity(header: string | undefined, secret: string, now = Date.now()): Identity {
  if (!header) throw new UnauthenticatedError('missing gateway identity: subgraphs only answer the gateway');
  const cached = verified.get(header);
  const id = cached ?? parseSigned(header, secret);
  if (now - id.iat > MAX_AGE_MS || id.iat - now > 60_000) throw new UnauthenticatedError('gateway identity expired');
  if (!cached) verified.set(header, id);
  const { iat: _iat, ...identity } = id;
  return identity;
}

function parseSigned(header: string, secret: string): Identity & { iat: number } {
  const dot = header.indexOf('.');
  if (dot < 1) throw new UnauthenticatedError('malformed gateway identity');
  const body = header.slice(0, dot);
  const mac = Buffer.from(header.slice(dot + 1), 'base64url');
  const expected = createHmac('sha256', secret).update(body).digest();
  if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) {
    throw new UnauthenticatedError('invalid gateway identity signature');
  }
  const parsed = JSON.parse(Buffer.from(body, 'base64url').toString()) as Identity & { iat: number };
  if (!ROLES.includes(parsed.role) || typeof parsed.orgId !== 'string') throw new UnauthenticatedError('malformed gateway identity');
  return parsed;
}

/** API-key scopes implied by each role; a key's scopes are checked the same way. */
const ROLE_RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

export interface Requirement {
  /** minimum role of a person */
  role: Role;
  /** scope an API key must hold (`*` grants all) */
  scope: string;
}

/** Role check for people, scope check for API keys; throws FORBIDDEN. */
export function authorize(identity: Identity | undefined, req: Requirement): Identity {
  if (!identity || identity.kind === 'anonymous') throw new UnauthenticatedError();
  if (identity.kind === 'system') return identity;
  if (ROLE_RANK[identity.role] < ROLE_RANK[req.role]) {
    throw new ForbiddenError(`requires role ${req.role} (you are ${identity.role})`);
  }
  if (identity.kind === 'apikey' && !identity.scopes.includes('*') && !identity.scopes.includes(req.scope)) {
    throw new ForbiddenError(`API key lacks scope ${req.scope}`);
  }
  return identity;
}

export const NIL_ORG = '00000000-0000-0000-0000-000000000000';
export const ANONYMOUS: Identity = { kind: 'anonymous', subject: 'anonymous', orgId: NIL_ORG, role: 'viewer', scopes: [] };

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}
