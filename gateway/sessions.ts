import { LRUCache } from 'lru-cache';
import { isSessionId, parseRevocation, sessionKey, sessionRevocationsChannel } from '../lib/contracts/sessions.js';
import { ErrorCode, RulrError, UnauthenticatedError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import type { Redis } from '../lib/redis.js';

/** Redis could not say whether a session lives: the request is refused (503), not let through. */
export class SessionCheckUnavailableError extends RulrError {
  constructor() {
    super(ErrorCode.Internal, 'sign-in sessions cannot be checked right now: try again shortly');
  }
  override get httpStatus(): number {
    return 503;
  }
}

/** What the real-time server needs to close the WebSockets of ended sessions. */
export interface SessionEvents {
  /** Calls `fn` with the ids of sessions that just ended; returns the unsubscribe. */
  onRevoked(fn: (sessionIds: readonly string[]) => void): () => void;
  /**
   * Calls `fn` when the revocation channel was lost and is heard again: notices may have been
   * missed meanwhile, so what was verified before must be checked again.
   */
  onResync(fn: () => void): () => void;
}

export interface SessionGuardOptions {
  /**
   * How long a session looked up in Redis is trusted without looking again, while the revocation
   * channel is heard (a notice drops it at once; without the channel nothing is trusted). @default 60000
   */
  cacheMs?: number;
  /** @default 100000 */
  maxCached?: number;
}

const lookups = counter('rulr_gateway_session_lookups_total', 'Sign-in sessions looked up in Redis, by result', ['result']);

/**
 * The gateway's check that a token's session still lives (lib/contracts/sessions.ts). A session
 * found in Redis is trusted for `cacheMs` while this replica hears the revocation channel; a
 * notice drops it and tells the WebSocket server at once. When the channel is not heard (starting,
 * Redis reconnecting), every request looks its session up, and when Redis cannot answer the
 * request is refused: revocation fails closed.
 */
export class SessionGuard implements SessionEvents {
  private readonly live: LRUCache<string, string>;
  /** Sessions ended recently: a lookup that raced the notice must not cache them back. */
  private readonly ended: LRUCache<string, true>;
  private _listening = false;
  private closed = false;
  private readonly revokedListeners = new Set<(ids: readonly string[]) => void>();
  private readonly resyncListeners = new Set<() => void>();
  private readonly channel: string;

  constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly prefix: string,
    private readonly logger: Logger,
    o: SessionGuardOptions = {},
  ) {
    const ttl = o.cacheMs ?? 60_000;
    this.live = new LRUCache({ max: o.maxCached ?? 100_000, ttl });
    this.ended = new LRUCache({ max: 100_000, ttl: Math.max(2 * ttl, 60_000) });
    this.channel = sessionRevocationsChannel(prefix);
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.onNotice(message);
    });
    // A lost connection may lose notices: trust nothing cached until the channel is heard again.
    for (const event of ['close', 'reconnecting', 'end']) subscriber.on(event, () => this.deafen());
    subscriber.on('ready', () => void this.listen());
  }

  /**
   * Subscribes to the revocation channel once the connection is ready (returns at once; requests
   * look sessions up until it is heard). SUBSCRIBE sent earlier races ioredis's own connect-time
   * commands (see RealtimeHub).
   */
  start(): void {
    if (this.subscriber.status === 'ready') void this.listen();
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    try {
      await this.subscriber.subscribe(this.channel);
    } catch (e) {
      this.logger.warn({ err: e }, 'session revocations not heard yet; every request looks its session up');
      return;
    }
    const wasDeaf = !this._listening;
    this._listening = true;
    if (wasDeaf) for (const fn of this.resyncListeners) fn();
  }

  private deafen(): void {
    if (!this._listening) return;
    this._listening = false;
    this.live.clear();
    this.logger.warn('session revocation channel lost: sessions are looked up per request until it is back');
  }

  private onNotice(message: string): void {
    let ids: string[];
    try {
      ids = parseRevocation(message).sessionIds;
    } catch {
      return; // counted by the parser
    }
    for (const id of ids) {
      this.live.delete(id);
      this.ended.set(id, true);
    }
    for (const fn of this.revokedListeners) fn(ids);
  }

  /** Whether the revocation channel is heard now (only then are looked-up sessions trusted for a while). */
  get listening(): boolean {
    return this._listening;
  }

  /** Whether the session is known to live without asking Redis (the per-request fast path). */
  isKnownLive(sessionId: string, userId: string): boolean {
    return this._listening && this.live.get(sessionId) === userId;
  }

  /**
   * Resolves when the session lives and belongs to `userId`; throws UNAUTHENTICATED when it ended
   * (or never was), and {@link SessionCheckUnavailableError} when Redis cannot answer.
   */
  async check(sessionId: string, userId: string): Promise<void> {
    if (this.isKnownLive(sessionId, userId)) return;
    if (!isSessionId(sessionId) || this.ended.has(sessionId)) throw ended();
    const listeningBefore = this._listening;
    let owner: string | null;
    try {
      owner = await this.redis.hget(sessionKey(this.prefix, sessionId), 'user');
    } catch {
      lookups.inc({ result: 'unavailable' });
      throw new SessionCheckUnavailableError();
    }
    if (owner !== userId || this.ended.has(sessionId)) {
      lookups.inc({ result: 'ended' });
      throw ended();
    }
    lookups.inc({ result: 'live' });
    // cached only when the channel was heard the whole time (no notice can have been missed)
    if (listeningBefore && this._listening) this.live.set(sessionId, userId);
  }

  onRevoked(fn: (sessionIds: readonly string[]) => void): () => void {
    this.revokedListeners.add(fn);
    return () => this.revokedListeners.delete(fn);
  }

  onResync(fn: () => void): () => void {
    this.resyncListeners.add(fn);
    return () => this.resyncListeners.delete(fn);
  }

  async close(): Promise<void> {
    this.closed = true;
    this._listening = false;
    await Promise.race([this.subscriber.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.subscriber.disconnect();
  }
}

const ended = () => new UnauthenticatedError('your session has ended: sign in again');
