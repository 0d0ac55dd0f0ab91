import { createHmac, createSecretKey, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
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
  /** The sign-in session a person's token belongs to (tokens from `login`, `refreshSession`, …). */
  sessionId?: string;
  /** A platform operator (`users.platform_operator`): may create organizations. */
  platform?: boolean;
}

export const IDENTITY_HEADER = 'x-rulr-identity';

/** How long a signed identity header is accepted, by default (clock skew between hosts included). */
export const DEFAULT_IDENTITY_MAX_AGE_MS = 30_000;

/** What an identity header is bound to besides the identity: one HTTP request, its exact body bytes. */
export interface BoundRequest {
  /** @default 'POST' */
  method?: string;
  /** The URL path (no query). @default '/graphql' */
  path?: string;
  body: string | Uint8Array;
}

/** The header's format version, its first field: a header of another format is refused, never guessed at. */
const VERSION = 'v2';

const keys = new Map<string, KeyObject>();
/** HMAC keys by secret, prepared once (a process signs with one secret, tests with a few). */
function keyOf(secret: string): KeyObject {
  let k = keys.get(secret);
  if (!k) {
    k = createSecretKey(Buffer.from(secret, 'utf8'));
    if (keys.size > 16) keys.clear();
    keys.set(secret, k);
  }
  return k;
}

/** `<version>.<identity>.<issued at, ms base 36>.<nonce>` then method, path and body, as the MAC covers them. */
function mac(secret: string, head: string, r: BoundRequest): Buffer {
  return createHmac('sha256', keyOf(secret))
    .update(`${head}\n${r.method ?? 'POST'}\n${r.path ?? '/graphql'}\n`)
    .update(r.body)
    .digest();
}

/** The identity's part of the header: base64url JSON of exactly the fields a subgraph receives. */
export function encodeIdentity(identity: Identity): string {
  const wire: Identity = {
    kind: identity.kind,
    subject: identity.subject,
    orgId: identity.orgId,
    role: identity.role,
    scopes: identity.scopes,
  };
  if (identity.sessionId !== undefined) wire.sessionId = identity.sessionId;
  if (identity.platform) wire.platform = true;
  return Buffer.from(JSON.stringify(wire)).toString('base64url');
}

/** Nonces: a random prefix per process and a counter, unique without a random draw per request. */
const noncePrefix = randomBytes(9).toString('base64url');
let nonceCounter = 0;
export const nextNonce = (): string => `${noncePrefix}${(nonceCounter++).toString(36)}`;

/**
 * The `x-rulr-identity` header for one request: the encoded identity (`encodeIdentity`), when it was
 * signed, a nonce, and an HMAC-SHA256 over those and the request's method, path and body, so a
 * captured header is good for that request only, for `maxAgeMs`, and (mutations) once.
 */
export function signRequest(encoded: string, request: BoundRequest, secret: string, now = Date.now(), nonce = nextNonce()): string {
  const head = `${VERSION}.${encoded}.${now.toString(36)}.${nonce}`;
  return `${head}.${mac(secret, head, request).toString('base64url')}`;
}

/** `signRequest` of an identity not yet encoded (tests, the CLI, benchmarks). */
export function signIdentity(identity: Identity, secret: string, request: BoundRequest, o: { now?: number; nonce?: string } = {}): string {
  return signRequest(encodeIdentity(identity), request, secret, o.now, o.nonce);
}

/** A verified header: who is asking, and the nonce that makes this request single-use when it must be. */
export interface VerifiedIdentity {
  identity: Identity;
  nonce: string;
  issuedAt: number;
}

const decoded = new LRUCache<string, Identity>({ max: 10_000 });

const bad = (why: string) => new UnauthenticatedError(why);

/**
 * Verifies the gateway's header against the request it came with; throws UNAUTHENTICATED when it
 * is missing, malformed, signed with none of `secrets` (RULR_SECRET, then RULR_SECRET_PREVIOUS
 * while it is rotated) or for another request (method, path, body), or older (or newer) than
 * `maxAgeMs`. A replayed nonce is the caller's check (`VerifiedIdentity.nonce`).
 */
export function verifyRequest(
  header: string | undefined,
  request: BoundRequest,
  secrets: string | readonly string[],
  o: { maxAgeMs?: number; now?: number } = {},
): VerifiedIdentity {
  if (!header) throw bad('missing gateway identity: subgraphs only answer the gateway');
  const parts = header.split('.');
  if (parts.length !== 5 || parts[0] !== VERSION) throw bad('malformed gateway identity');
  const [, encoded, at, nonce, signature] = parts as [string, string, string, string, string];
  const issuedAt = Number.parseInt(at, 36);
  const now = o.now ?? Date.now();
  const maxAge = o.maxAgeMs ?? DEFAULT_IDENTITY_MAX_AGE_MS;
  if (!Number.isSafeInteger(issuedAt) || !nonce) throw bad('malformed gateway identity');
  if (Math.abs(now - issuedAt) > maxAge) throw bad('gateway identity expired');
  const given = Buffer.from(signature, 'base64url');
  const head = header.slice(0, header.length - signature.length - 1);
  const matches = (secret: string) => {
    const expected = mac(secret, head, request);
    return given.length === expected.length && timingSafeEqual(given, expected);
  };
  if (typeof secrets === 'string' ? !matches(secrets) : !secrets.some(matches)) {
    throw bad('invalid gateway identity signature (another secret, or another request)');
  }
  let identity = decoded.get(encoded);
  if (!identity) {
    identity = decodeIdentity(encoded);
    decoded.set(encoded, identity);
  }
  return { identity, nonce, issuedAt };
}

const KINDS: readonly string[] = ['user', 'apikey', 'system', 'anonymous'];

/** The identity part of a header whose signature was verified; fields checked, nothing else kept. */
function decodeIdentity(encoded: string): Identity {
  let p: Record<string, unknown>;
  try {
    p = JSON.parse(Buffer.from(encoded, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    throw bad('malformed gateway identity');
  }
  const scopes = p.scopes;
  if (
    typeof p.kind !== 'string' ||
    !KINDS.includes(p.kind) ||
    typeof p.subject !== 'string' ||
    typeof p.orgId !== 'string' ||
    !isRole(p.role) ||
    !Array.isArray(scopes) ||
    !scopes.every((x) => typeof x === 'string') ||
    (p.sessionId !== undefined && typeof p.sessionId !== 'string') ||
    (p.platform !== undefined && p.platform !== true)
  ) {
    throw bad('malformed gateway identity');
  }
  const identity: Identity = { kind: p.kind as Identity['kind'], subject: p.subject, orgId: p.orgId, role: p.role, scopes };
  if (typeof p.sessionId === 'string') identity.sessionId = p.sessionId;
  if (p.platform === true) identity.platform = true;
  return identity;
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
