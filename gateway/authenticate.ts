import type { IncomingHttpHeaders } from 'node:http';
import { LRUCache } from 'lru-cache';
import { apiKeyMatches, hashApiKey, parseApiKey, type TokenVerifier } from '../lib/auth.js';
import type { Db } from '../lib/db.js';
import { UnauthenticatedError } from '../lib/errors.js';
import { ANONYMOUS, type Identity } from '../lib/identity.js';
import type { Logger } from '../lib/logger.js';
import type { SessionGuard } from './sessions.js';

export interface AuthenticatorOptions {
  /**
   * How long an API-key lookup is cached. This is also the revocation delay: a revoked or expired
   * key keeps working for at most this long on a gateway that saw it recently.
   * @default 30000
   */
  apiKeyCacheMs?: number;
  /** `last_used_at` is written at most this often per key. @default 60000 */
  lastUsedEveryMs?: number;
  /** Refuses tokens whose sign-in session ended (tokens without a session, such as `rulr token`'s, pass). */
  sessions?: Pick<SessionGuard, 'isKnownLive' | 'check'>;
}

interface KeyEntry {
  identity: Identity | null;
  expiresAt: number | null;
  reason?: string;
}

/**
 * Turns request credentials into an Identity: `Authorization: Bearer <jwt>`, or an API key as
 * `Bearer rulr_…` / `x-api-key: rulr_…`. No credentials → ANONYMOUS; bad ones, or a token whose
 * sign-in session ended → UnauthenticatedError.
 * API keys act with exactly their scopes (their role is `admin`, so scopes are the only bound).
 */
export class Authenticator {
  private readonly keys: LRUCache<string, KeyEntry>;
  private readonly lastUsed = new Map<string, number>();
  private readonly lastUsedEveryMs: number;
  private readonly sessions: AuthenticatorOptions['sessions'];

  constructor(
    private readonly db: Db,
    private readonly tokens: TokenVerifier,
    private readonly logger: Logger,
    o: AuthenticatorOptions = {},
  ) {
    this.keys = new LRUCache({ max: 10_000, ttl: o.apiKeyCacheMs ?? 30_000 });
    this.lastUsedEveryMs = o.lastUsedEveryMs ?? 60_000;
    this.sessions = o.sessions;
  }

  async identify(headers: IncomingHttpHeaders): Promise<Identity> {
    return (await this.identifyWithExpiry(headers)).identity;
  }

  /** Like `identify`, plus when the credential stops being valid (ms), for long-lived WebSocket connections. */
  async identifyWithExpiry(headers: IncomingHttpHeaders): Promise<{ identity: Identity; expiresAt?: number }> {
    const auth = headers.authorization;
    const apiKeyHeader = headers['x-api-key'];
    if (typeof auth === 'string' && auth.length > 0) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
      if (!m?.[1]) throw new UnauthenticatedError('Authorization must be "Bearer <token>"');
      const credential = m[1];
      if (credential.startsWith('rulr_')) return this.apiKey(credential);
      const { exp, ...identity } = await this.tokens.verify(credential);
      const sid = identity.sessionId;
      if (sid !== undefined && this.sessions && !this.sessions.isKnownLive(sid, identity.subject)) {
        await this.sessions.check(sid, identity.subject);
      }
      return { identity, expiresAt: exp * 1000 };
    }
    if (typeof apiKeyHeader === 'string' && apiKeyHeader.length > 0) return this.apiKey(apiKeyHeader.trim());
    return { identity: ANONYMOUS };
  }

  private async apiKey(key: string): Promise<{ identity: Identity; expiresAt?: number }> {
    const parsed = parseApiKey(key);
    if (!parsed) throw new UnauthenticatedError('invalid API key');
    const cacheKey = hashApiKey(key);
    let entry = this.keys.get(cacheKey);
    if (!entry) {
      entry = await this.lookup(key, parsed.prefix);
      this.keys.set(cacheKey, entry);
    }
    if (!entry.identity) throw new UnauthenticatedError(entry.reason ?? 'invalid API key');
    if (entry.expiresAt !== null && entry.expiresAt <= Date.now()) throw new UnauthenticatedError('API key expired');
    this.touch(entry.identity.subject);
    return entry.expiresAt === null ? { identity: entry.identity } : { identity: entry.identity, expiresAt: entry.expiresAt };
  }

  private async lookup(key: string, prefix: string): Promise<KeyEntry> {
    const row = await this.db
      .selectFrom('api_keys')
      .select(['id', 'org_id', 'key_hash', 'scopes', 'expires_at', 'revoked_at'])
      .where('prefix', '=', prefix)
      .executeTakeFirst();
    if (!row || !apiKeyMatches(key, row.key_hash)) return { identity: null, expiresAt: null, reason: 'invalid API key' };
    if (row.revoked_at) return { identity: null, expiresAt: null, reason: 'API key revoked' };
    const expiresAt = row.expires_at ? new Date(row.expires_at as unknown as string).getTime() : null;
    return {
      identity: { kind: 'apikey', subject: row.id, orgId: row.org_id, role: 'admin', scopes: row.scopes },
      expiresAt,
    };
  }

  private touch(id: string): void {
    const now = Date.now();
    if (now - (this.lastUsed.get(id) ?? 0) < this.lastUsedEveryMs) return;
    this.lastUsed.set(id, now);
    if (this.lastUsed.size > 50_000) this.lastUsed.clear();
    this.db
      .updateTable('api_keys')
      .set({ last_used_at: new Date(now) })
      .where('id', '=', id)
      .execute()
      .catch((e: unknown) => this.logger.warn({ err: e, apiKey: id }, 'could not record API key use'));
  }
}
