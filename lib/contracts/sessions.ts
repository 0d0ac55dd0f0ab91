import { isRole, type Role } from '../identity.js';
import { decodeJson, isEpochMs, isRecord, isUuid, reject } from './contract.js';

/**
 * Sign-in sessions, written by the devices subgraph (`login`, `refreshSession`, `logout`, membership
 * changes) and read by every gateway replica, which refuses a token whose session is gone.
 *
 * - `<prefix>session:{<id>}`: a hash, expiring when the session does: `user`, `org` (uuids), `role`,
 *   `platform` (`1`/`0`), `refresh` (SHA-256 hex of the current refresh secret), `created`,
 *   `refreshed`, `expires` (ms; the absolute end, however often it is refreshed).
 * - `<prefix>session:{<id>}:used`: a set of the refresh hashes already rotated away (reuse detection).
 * - `<prefix>user-sessions:<userId>`: a set of the person's session ids (to end them all).
 * - `<prefix>sessions:revoked`: pub/sub, `{"sessionIds": [...]}` after sessions were deleted, so
 *   that gateways drop them from their caches and close their WebSockets at once.
 */

const CONTRACT = 'sessions';
const NOTICE = 'session-revocations';

// `{id}`: one Redis Cluster hash slot for a session's two keys (the refresh script touches both)
export const sessionKey = (prefix: string, id: string) => `${prefix}session:{${id}}`;
export const sessionUsedKey = (prefix: string, id: string) => `${prefix}session:{${id}}:used`;
export const userSessionsKey = (prefix: string, userId: string) => `${prefix}user-sessions:${userId}`;
export const sessionRevocationsChannel = (prefix: string) => `${prefix}sessions:revoked`;

/** 16 random bytes, base64url. */
export const isSessionId = (v: unknown): v is string => typeof v === 'string' && /^[A-Za-z0-9_-]{22}$/.test(v);

/**
 * Most ids one revocation notice carries (a person rarely has more sessions; more go in several notices).
 * @default 500
 */
export const MAX_NOTICE_SESSIONS = 500;

export interface Session {
  id: string;
  userId: string;
  orgId: string;
  role: Role;
  platform: boolean;
  /** SHA-256 hex of the current refresh secret. */
  refreshHash: string;
  createdAt: number;
  refreshedAt: number;
  /** When the session ends whatever happens (ms). */
  expiresAt: number;
}

/** The hash fields of a session. */
export function encodeSession(s: Session): Record<string, string> {
  return {
    user: s.userId,
    org: s.orgId,
    role: s.role,
    platform: s.platform ? '1' : '0',
    refresh: s.refreshHash,
    created: String(s.createdAt),
    refreshed: String(s.refreshedAt),
    expires: String(s.expiresAt),
  };
}

const ms = (v: unknown) => (typeof v === 'string' && /^\d{1,16}$/.test(v) ? Number(v) : Number.NaN);

/**
 * A session hash (HGETALL); throws a counted ContractError when a field is missing or malformed
 * (an empty hash is a session that does not exist: the caller checks that first).
 */
export function parseSession(id: string, h: Record<string, string>): Session {
  if (!isSessionId(id)) return reject(CONTRACT, 'id must be 22 base64url characters');
  if (!isUuid(h.user) || !isUuid(h.org)) return reject(CONTRACT, 'user and org must be uuids');
  if (!isRole(h.role)) return reject(CONTRACT, 'role must be admin, operator or viewer');
  if (h.platform !== '0' && h.platform !== '1') return reject(CONTRACT, 'platform must be 0 or 1');
  if (typeof h.refresh !== 'string' || !/^[0-9a-f]{64}$/.test(h.refresh)) return reject(CONTRACT, 'refresh must be a SHA-256 hex');
  const createdAt = ms(h.created);
  const refreshedAt = ms(h.refreshed);
  const expiresAt = ms(h.expires);
  if (![createdAt, refreshedAt, expiresAt].every(isEpochMs)) return reject(CONTRACT, 'created, refreshed and expires must be ms');
  return {
    id,
    userId: h.user,
    orgId: h.org,
    role: h.role,
    platform: h.platform === '1',
    refreshHash: h.refresh,
    createdAt,
    refreshedAt,
    expiresAt,
  };
}

export const encodeRevocation = (sessionIds: readonly string[]): string => JSON.stringify({ sessionIds });

/** A revocation notice; throws a counted ContractError unless `sessionIds` is 1 to {@link MAX_NOTICE_SESSIONS} session ids. */
export function parseRevocation(raw: string | Buffer): { sessionIds: string[] } {
  const doc = decodeJson(NOTICE, raw);
  if (!isRecord(doc)) return reject(NOTICE, 'not an object');
  const ids = doc.sessionIds;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_NOTICE_SESSIONS || !ids.every(isSessionId)) {
    return reject(NOTICE, `sessionIds must be 1 to ${MAX_NOTICE_SESSIONS} session ids`);
  }
  return { sessionIds: ids };
}

/** Publishes notices for `ids` (after the sessions were deleted), in chunks of {@link MAX_NOTICE_SESSIONS}. */
export async function publishRevocation(
  redis: { publish(channel: string, message: string): Promise<unknown> },
  prefix: string,
  ids: readonly string[],
): Promise<void> {
  for (let i = 0; i < ids.length; i += MAX_NOTICE_SESSIONS) {
    await redis.publish(sessionRevocationsChannel(prefix), encodeRevocation(ids.slice(i, i + MAX_NOTICE_SESSIONS)));
  }
}
