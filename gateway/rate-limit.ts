import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Identity } from '../lib/identity.js';
import type { Logger } from '../lib/logger.js';
import type { Redis } from '../lib/redis.js';

export interface RateLimitOptions {
  /** Requests per identity per window (`GATEWAY_RATE_LIMIT`). */
  points: number;
  /** Window in seconds (`GATEWAY_RATE_WINDOW_S`). */
  windowSeconds: number;
  /** Redis key prefix (`${REDIS_PREFIX}ratelimit:`). */
  keyPrefix: string;
}

/** The key a request is counted under: user id, API key id, or the client address when anonymous. */
export function rateLimitKey(identity: Identity, ip: string | undefined): string {
  if (identity.kind === 'anonymous') return `ip:${ip ?? 'unknown'}`;
  return `${identity.kind}:${identity.subject}`;
}

/**
 * Per-identity fixed-window limit in Redis, shared by every gateway replica. When Redis is down the
 * request is let through (and logged): losing rate limiting beats losing the API.
 */
export class GatewayRateLimiter {
  private readonly limiter: RateLimiterRedis;
  private warnedAt = 0;

  constructor(
    redis: Redis,
    o: RateLimitOptions,
    private readonly logger: Logger,
  ) {
    this.limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: o.keyPrefix, points: o.points, duration: o.windowSeconds });
  }

  /** Resolves to null when allowed, or the seconds to wait when the identity is over its limit. */
  async consume(key: string): Promise<number | null> {
    try {
      await this.limiter.consume(key, 1);
      return null;
    } catch (e) {
      if (e instanceof RateLimiterRes) return Math.max(1, Math.ceil(e.msBeforeNext / 1000));
      if (Date.now() - this.warnedAt > 10_000) {
        this.warnedAt = Date.now();
        this.logger.warn({ err: e }, 'rate limiter unavailable; letting requests through');
      }
      return null;
    }
  }
}
