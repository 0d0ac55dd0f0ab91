import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { hash as argonHash, verify as argonVerify } from '@node-rs/argon2';
import { createRemoteJWKSet, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { LRUCache } from 'lru-cache';
import { UnauthenticatedError } from './errors.js';
import { type Identity, isRole, type Role } from './identity.js';

/** Password hashing: argon2id via @node-rs/argon2 (maintained, no hand-rolled crypto). */
export const hashPassword = (password: string) => argonHash(password);
export const verifyPassword = (hashed: string, password: string) => argonVerify(hashed, password).catch(() => false);

export interface TokenClaims {
  userId: string;
  orgId: string;
  role: Role;
  /** The session the token belongs to (claim `sid`): the gateway refuses it once the session ends. */
  sessionId?: string | undefined;
  /** A platform operator (claim `plat`). */
  platform?: boolean | undefined;
}

export interface JwtOptions {
  /** signs, and verifies */
  secret: string;
  /** Verify only: tokens signed before RULR_SECRET was rotated (RULR_SECRET_PREVIOUS), until they expire. */
  previousSecrets?: readonly string[] | undefined;
  issuer: string;
  ttlSeconds: number;
  jwksUrl?: string | undefined;
}

const key = (secret: string) => new TextEncoder().encode(secret);

export async function issueToken(c: TokenClaims, o: JwtOptions, now = Math.floor(Date.now() / 1000)): Promise<string> {
  return new SignJWT({ org: c.orgId, role: c.role, ...(c.sessionId ? { sid: c.sessionId } : {}), ...(c.platform ? { plat: true } : {}) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(c.userId)
    .setIssuer(o.issuer)
    .setIssuedAt(now)
    .setExpirationTime(now + o.ttlSeconds)
    .sign(key(o.secret));
}

/** Verifies bearer JWTs (ours, or an external issuer's via JWKS) with a cache keyed by token. */
export class TokenVerifier {
  private readonly cache = new LRUCache<string, { id: Identity; exp: number }>({ max: 50_000 });
  private readonly jwks;
  constructor(private readonly o: JwtOptions) {
    this.jwks = o.jwksUrl ? createRemoteJWKSet(new URL(o.jwksUrl)) : undefined;
  }

  /** HS256 with RULR_SECRET, then each previous secret: only a bad signature moves on to the next one. */
  private async verifyOwn(token: string) {
    const opts = { issuer: this.o.issuer, algorithms: ['HS256'] };
    const previous = this.o.previousSecrets ?? [];
    for (let i = 0; ; i++) {
      try {
        return await jwtVerify(token, key(i === 0 ? this.o.secret : (previous[i - 1] as string)), opts);
      } catch (e) {
        if ((e as { code?: string }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' || i >= previous.length) throw e;
      }
    }
  }

  async verify(token: string): Promise<Identity & { exp: number }> {
    const hit = this.cache.get(token);
    const nowS = Date.now() / 1000;
    if (hit) {
      if (hit.exp <= nowS) {
        this.cache.delete(token);
        throw new UnauthenticatedError('token expired');
      }
      return { ...hit.id, exp: hit.exp };
    }
    let payload: JWTPayload;
    let alg: unknown;
    try {
      alg = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()).alg;
      if (alg === 'HS256' || !this.jwks) {
        ({ payload } = await this.verifyOwn(token));
      } else {
        ({ payload } = await jwtVerify(token, this.jwks));
      }
    } catch (e) {
      const code = (e as { code?: string }).code;
      throw new UnauthenticatedError(code === 'ERR_JWT_EXPIRED' ? 'token expired' : 'invalid token');
    }
    const org = payload.org;
    const role = payload.role;
    if (typeof payload.sub !== 'string' || typeof org !== 'string' || !isRole(role) || typeof payload.exp !== 'number') {
      throw new UnauthenticatedError('token lacks sub, org, role or exp');
    }
    if ((payload.sid !== undefined && typeof payload.sid !== 'string') || (payload.plat !== undefined && payload.plat !== true)) {
      throw new UnauthenticatedError('token has a malformed sid or plat claim');
    }
    const id: Identity = { kind: 'user', subject: payload.sub, orgId: org, role, scopes: [] };
    // Sessions and platform operators are RULR's own: an external issuer's `sid` names its session, not ours.
    const own = alg === 'HS256' && payload.iss === this.o.issuer;
    if (own && typeof payload.sid === 'string') id.sessionId = payload.sid;
    if (own && payload.plat === true) id.platform = true;
    this.cache.set(token, { id, exp: payload.exp });
    return { ...id, exp: payload.exp };
  }
}

/** API keys look like `rulr_<prefix>_<secret>`; only the prefix and a SHA-256 of the whole key are stored. */
export function generateApiKey(): { key: string; prefix: string; hash: string } {
  const prefix = randomBytes(6).toString('hex');
  const secret = randomBytes(24).toString('base64url');
  const key = `rulr_${prefix}_${secret}`;
  return { key, prefix, hash: hashApiKey(key) };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function parseApiKey(key: string): { prefix: string } | null {
  const m = /^rulr_([0-9a-f]{12})_[A-Za-z0-9_-]{32}$/.exec(key);
  return m?.[1] ? { prefix: m[1] } : null;
}

export function apiKeyMatches(key: string, storedHash: string): boolean {
  const a = Buffer.from(hashApiKey(key), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** API-key scopes known to the platform. */
export const API_SCOPES = [
  '*',
  'devices:read',
  'devices:write',
  'telemetry:read',
  'alarms:read',
  'alarms:write',
  'rules:read',
  'rules:write',
  'commands:read',
  'commands:write',
] as const;

/**
 * A single-use secret for a link or a refresh (`<kind>_<43 base64url characters>`, 256 bits) and
 * the SHA-256 hex it is stored as: high-entropy tokens need no slow hash, and a stored hash cannot
 * be used as the token.
 */
export function generateSecretToken(kind: string): { token: string; hash: string } {
  const token = `${kind}_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashToken(token) };
}

export const hashToken = (token: string): string => createHash('sha256').update(token).digest('hex');

/** Constant-time comparison of two SHA-256 hex digests. */
export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === 32 && x.length === y.length && timingSafeEqual(x, y);
}
