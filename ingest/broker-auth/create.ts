import { createPool } from '../../lib/db.js';
import type { Logger } from '../../lib/logger.js';
import type { RoleContext } from '../../lib/role.js';
import { AttemptLimiter } from './attempts.js';
import { CredentialDirectory } from './credentials.js';
import { BrokerAuth } from './index.js';
import { SecretVerifier } from './verifier.js';

/**
 * Ingest's broker authentication with its own small pool. Its credential cache must follow the
 * device-change notices: ingest passes it to the device directory's subscription.
 */
export async function createBrokerAuth(ctx: RoleContext, log: Logger) {
  const cfg = ctx.config;
  const pool = createPool(cfg.DATABASE_URL, 2);
  // the directory's load and refresh on a connection of their own: requests never wait behind them
  const background = createPool(cfg.DATABASE_URL, 1);
  const credentials = new CredentialDirectory(
    (t, v) => pool.query(t, v),
    cfg.DEVICE_AUTH_DIRECTORY_TTL_S * 1000,
    200_000,
    (t, v) => background.query(t, v),
  );
  const verifier = new SecretVerifier({
    redis: ctx.redis,
    prefix: cfg.REDIS_PREFIX,
    rulrSecret: cfg.RULR_SECRET,
    previousSecrets: cfg.RULR_SECRET_PREVIOUS,
    cacheTtlS: cfg.DEVICE_AUTH_CACHE_TTL_S,
    maxHashing: cfg.DEVICE_AUTH_MAX_HASHING,
    rehash: async (id, hash) => {
      await pool.query(
        `update device_credentials set secret_hash = $1, hash_scheme = 'argon2id' where id = $2 and hash_scheme = 'sha256'`,
        [hash, id],
      );
    },
    logger: log,
  });
  const window = cfg.DEVICE_AUTH_FAILURE_WINDOW_S;
  const brokerAuth = new BrokerAuth({
    config: cfg,
    credentials,
    verifier,
    failures: new AttemptLimiter(ctx.redis, `${cfg.REDIS_PREFIX}device-auth:fail:user`, cfg.DEVICE_AUTH_MAX_FAILURES, window),
    peerFailures: new AttemptLimiter(ctx.redis, `${cfg.REDIS_PREFIX}device-auth:fail:peer`, cfg.DEVICE_AUTH_MAX_FAILURES * 10, window),
    logger: log,
  });
  // the fleet's credentials in memory before ingest says it is ready, then kept fresh in the background
  const t0 = performance.now();
  const ready = credentials.load().then(
    (n) => log.info({ credentials: n, ms: Math.round(performance.now() - t0) }, 'broker-auth: credential directory loaded'),
    (e) => log.warn({ err: (e as Error).message }, 'broker-auth: credential directory not loaded (lookups go to the database)'),
  );
  void ready.then(() =>
    credentials.startRefresh((e) => log.warn({ err: e.message }, 'broker-auth: credential refresh failed (entries expire on their TTL)')),
  );
  return {
    brokerAuth,
    credentials,
    /** resolves once the credential directory is loaded (or could not be: then lookups go to the database) */
    ready,
    pool,
    async close() {
      credentials.close();
      await pool.end().catch(() => undefined);
      await background.end().catch(() => undefined);
    },
  };
}
