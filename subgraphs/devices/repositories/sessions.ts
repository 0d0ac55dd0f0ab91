import { randomBytes } from 'node:crypto';
import { hashToken, sameHash } from '../../../lib/auth.js';
import {
  encodeSession,
  isSessionId,
  parseSession,
  publishRevocation,
  type Session,
  sessionKey,
  sessionUsedKey,
  userSessionsKey,
} from '../../../lib/contracts/sessions.js';
import type { Role } from '../../../lib/identity.js';
import type { Redis } from '../../../lib/redis.js';

export interface SessionSettings {
  /** A session whose refresh token goes unused this long ends. */
  idleMs: number;
  /** A session ends this long after sign-in, however often it is refreshed. */
  maxAgeMs: number;
}

/** A session and the refresh token that continues it (shown to the client once, stored hashed). */
export interface IssuedSession {
  session: Session;
  refreshToken: string;
  /** When the refresh token stops working unless used (idle limit or the absolute end). */
  refreshExpiresAt: number;
}

export type RotateResult = { kind: 'ok'; issued: IssuedSession } | { kind: 'invalid' } | { kind: 'reused'; sessionId: string };

/** Refresh tokens are `rt.<session id>.<secret>`; only the secret's SHA-256 is stored. */
const REFRESH = /^rt\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

export function parseRefreshToken(token: string): { sessionId: string; hash: string } | null {
  const m = REFRESH.exec(token);
  return m?.[1] && m[2] ? { sessionId: m[1], hash: hashToken(m[2]) } : null;
}

function newSecret(sessionId: string): { token: string; hash: string } {
  const secret = randomBytes(32).toString('base64url');
  return { token: `rt.${sessionId}.${secret}`, hash: hashToken(secret) };
}

/**
 * Rotates the refresh secret when the presented one is current; a secret rotated away before is
 * reuse (a stolen token, or a client that kept an old one): the caller ends the session.
 * KEYS: session, used. ARGV: presented hash, new hash, now, idle ms.
 */
const ROTATE = `
local h = redis.call('HMGET', KEYS[1], 'refresh', 'expires')
if not h[1] then return {'invalid'} end
if h[1] == ARGV[1] then
  local now = tonumber(ARGV[3])
  local left = tonumber(h[2]) - now
  if left <= 0 then return {'invalid'} end
  local ttl = math.min(tonumber(ARGV[4]), left)
  redis.call('HSET', KEYS[1], 'refresh', ARGV[2], 'refreshed', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  local all = redis.call('HGETALL', KEYS[1])
  table.insert(all, 1, 'ok')
  return all
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {'reused'} end
return {'invalid'}
`;

/** Sign-in sessions in Redis (lib/contracts/sessions.ts): created at sign-in, rotated on refresh, deleted on revocation. */
export class SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly settings: SessionSettings,
  ) {}

  async create(s: { userId: string; orgId: string; role: Role; platform: boolean }): Promise<IssuedSession> {
    const now = Date.now();
    const id = randomBytes(16).toString('base64url');
    const secret = newSecret(id);
    const session: Session = {
      id,
      userId: s.userId,
      orgId: s.orgId,
      role: s.role,
      platform: s.platform,
      refreshHash: secret.hash,
      createdAt: now,
      refreshedAt: now,
      expiresAt: now + this.settings.maxAgeMs,
    };
    const ttl = Math.min(this.settings.idleMs, this.settings.maxAgeMs);
    const index = userSessionsKey(this.prefix, s.userId);
    await this.redis
      .multi()
      .hset(sessionKey(this.prefix, id), encodeSession(session))
      .pexpire(sessionKey(this.prefix, id), ttl)
      .sadd(index, id)
      .pexpire(index, this.settings.maxAgeMs)
      .exec();
    return { session, refreshToken: secret.token, refreshExpiresAt: now + ttl };
  }

  /** Continues the session of `refreshToken` with a new refresh secret (rotation with reuse detection). */
  async rotate(refreshToken: string): Promise<RotateResult> {
    const parsed = parseRefreshToken(refreshToken);
    if (!parsed) return { kind: 'invalid' };
    const now = Date.now();
    const next = newSecret(parsed.sessionId);
    const r = (await this.redis.eval(
      ROTATE,
      2,
      sessionKey(this.prefix, parsed.sessionId),
      sessionUsedKey(this.prefix, parsed.sessionId),
      parsed.hash,
      next.hash,
      String(now),
      String(this.settings.idleMs),
    )) as string[];
    if (r[0] === 'reused') return { kind: 'reused', sessionId: parsed.sessionId };
    if (r[0] !== 'ok') return { kind: 'invalid' };
    const hash: Record<string, string> = {};
    for (let i = 1; i + 1 < r.length; i += 2) hash[r[i] as string] = r[i + 1] as string;
    const session = parseSession(parsed.sessionId, hash);
    return {
      kind: 'ok',
      issued: { session, refreshToken: next.token, refreshExpiresAt: Math.min(now + this.settings.idleMs, session.expiresAt) },
    };
  }

  /**
   * The session `refreshToken` belongs to when its secret is the current one or one rotated away
   * (so that `logout` with any of a session's refresh tokens ends it), else null.
   */
  async ownerOf(refreshToken: string): Promise<Session | null> {
    const parsed = parseRefreshToken(refreshToken);
    if (!parsed) return null;
    const session = await this.get(parsed.sessionId);
    if (!session) return null;
    if (sameHash(session.refreshHash, parsed.hash)) return session;
    const used = await this.redis.sismember(sessionUsedKey(this.prefix, parsed.sessionId), parsed.hash);
    return used === 1 ? session : null;
  }

  async get(id: string): Promise<Session | null> {
    if (!isSessionId(id)) return null;
    const h = await this.redis.hgetall(sessionKey(this.prefix, id));
    return Object.keys(h).length ? parseSession(id, h) : null;
  }

  /** The person's live sessions, newest first (ids whose session expired are dropped from the index). */
  async listUser(userId: string): Promise<Session[]> {
    const index = userSessionsKey(this.prefix, userId);
    const ids = (await this.redis.smembers(index)).filter(isSessionId);
    if (!ids.length) return [];
    const p = this.redis.pipeline();
    for (const id of ids) p.hgetall(sessionKey(this.prefix, id));
    const rows = (await p.exec()) ?? [];
    const live: Session[] = [];
    const gone: string[] = [];
    ids.forEach((id, i) => {
      const h = rows[i]?.[1] as Record<string, string> | undefined;
      if (h && Object.keys(h).length) live.push(parseSession(id, h));
      else gone.push(id);
    });
    if (gone.length) await this.redis.srem(index, ...gone);
    return live.sort((a, b) => b.createdAt - a.createdAt);
  }

  /** Ends sessions at once: deleted, then announced to every gateway (their tokens and sockets stop). */
  async revoke(sessions: readonly Pick<Session, 'id' | 'userId'>[]): Promise<void> {
    if (!sessions.length) return;
    const m = this.redis.multi();
    for (const s of sessions) {
      m.del(sessionKey(this.prefix, s.id), sessionUsedKey(this.prefix, s.id));
      m.srem(userSessionsKey(this.prefix, s.userId), s.id);
    }
    await m.exec();
    await publishRevocation(
      this.redis,
      this.prefix,
      sessions.map((s) => s.id),
    );
  }

  /** Ends the person's sessions that `which` selects (all by default); returns those ended. */
  async revokeUser(userId: string, which: (s: Session) => boolean = () => true): Promise<Session[]> {
    const ended = (await this.listUser(userId)).filter(which);
    await this.revoke(ended);
    return ended;
  }
}
