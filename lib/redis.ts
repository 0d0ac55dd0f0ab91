import { Redis, type RedisOptions } from 'ioredis';

export type { Redis };

/** A Redis client that retries forever (status cache and rate limits degrade, they do not crash). */
export function createRedis(url: string, opts: RedisOptions = {}): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: 2, enableOfflineQueue: true, lazyConnect: false, ...opts });
  r.on('error', () => {
    /* reconnects by itself; readiness reports it */
  });
  return r;
}
