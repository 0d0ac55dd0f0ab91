import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import type { Redis } from '../../lib/redis.js';

/**
 * Counts attempts per key in Redis (shared by ingest replicas), with an in-process limiter taking
 * over while Redis is unreachable, so brute force stays limited either way.
 */
export class AttemptLimiter {
  private readonly limiter: RateLimiterRedis;

  constructor(
    redis: Redis,
    keyPrefix: string,
    readonly points: number,
    windowSeconds: number,
  ) {
    this.limiter = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix,
      points,
      duration: windowSeconds,
      insuranceLimiter: new RateLimiterMemory({ keyPrefix, points, duration: windowSeconds }),
    });
  }

  /** Whether `key` has used up its attempts in the current window. */
  async exhausted(key: string): Promise<boolean> {
    const r = await this.limiter.get(key).catch(() => null);
    return r !== null && r.consumedPoints >= this.points;
  }

  /** Counts one attempt; false when it is over the limit. */
  async consume(key: string): Promise<boolean> {
    try {
      await this.limiter.consume(key, 1);
      return true;
    } catch {
      // over the limit (a RateLimiterRes), or neither store answered
      return false;
    }
  }
}
