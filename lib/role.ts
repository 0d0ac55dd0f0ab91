import type { Config } from './config.js';
import { createDb, type Db } from './db.js';
import type { Logger } from './logger.js';
import { createRedis, type Redis } from './redis.js';

/**
 * What a role gets when it starts: configuration, a logger and lazily created shared clients, so
 * roles running in one process (`rulr start all`) share one pool and one Redis connection.
 */
export class RoleContext {
  private _db?: Db;
  private _readDb?: Db;
  private _redis?: Redis;
  private readonly closers: (() => Promise<unknown>)[] = [];

  constructor(
    readonly config: Config,
    readonly logger: Logger,
  ) {}

  get db(): Db {
    if (!this._db) {
      const db = createDb({ url: this.config.DATABASE_URL, poolSize: this.config.DATABASE_POOL_SIZE });
      this._db = db;
      this.closers.push(() => db.destroy());
    }
    return this._db;
  }

  /** The read replica when `DATABASE_READ_URL` is set, else the primary. */
  get readDb(): Db {
    if (!this.config.DATABASE_READ_URL) return this.db;
    if (!this._readDb) {
      const db = createDb({ url: this.config.DATABASE_READ_URL, poolSize: this.config.DATABASE_POOL_SIZE });
      this._readDb = db;
      this.closers.push(() => db.destroy());
    }
    return this._readDb;
  }

  get redis(): Redis {
    if (!this._redis) {
      // Commands issued in the same turn (rate limits, status reads, event publishes) share one write.
      const r = createRedis(this.config.REDIS_URL, { enableAutoPipelining: true });
      this._redis = r;
      this.closers.push(() => r.quit().catch(() => r.disconnect()));
    }
    return this._redis;
  }

  /** Registers a cleanup run by `close()` (before the shared clients close). */
  onClose(fn: () => Promise<unknown>): void {
    this.closers.unshift(fn);
  }

  async close(): Promise<void> {
    for (const c of this.closers.splice(0)) await c().catch(() => undefined);
  }
}

/** A running role: its port and how to stop it. */
export interface RoleHandle {
  name: string;
  port: number;
  close(): Promise<void>;
}
