import { pingDb } from '../lib/db.js';
import { ServiceServer } from '../lib/http.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { RollupCompactor } from './compactor.js';
import { Maintenance, retentionFromConfig } from './maintenance.js';

/**
 * The workers role: BullMQ processors behind a ServiceServer (`/healthz`, `/readyz`, `/metrics`) on
 * `WORKERS_PORT`. Today it runs the maintenance queue; other processors register here.
 */
export async function startWorkers(ctx: RoleContext, o: { port?: number } = {}): Promise<RoleHandle> {
  const cfg = ctx.config;
  const maintenance = new Maintenance({
    db: ctx.db,
    redisUrl: cfg.REDIS_URL,
    prefix: `${cfg.REDIS_PREFIX}bull`,
    retention: retentionFromConfig(cfg),
    logger: ctx.logger.child({ role: 'workers' }),
  });
  await maintenance.start();
  // Safety net: folds rollup deltas even while no ingest replica runs (ingest compacts as it writes).
  const compactor = new RollupCompactor({ url: cfg.DATABASE_URL, intervalMs: 5000, logger: ctx.logger }).start();
  const server = new ServiceServer({
    name: 'workers',
    port: o.port ?? cfg.WORKERS_PORT,
    checks: { postgres: () => pingDb(ctx.db), redis: async () => void (await ctx.redis.ping()) },
  });
  const port = await server.listen();
  ctx.logger.info({ role: 'workers', port }, 'workers listening');
  return {
    name: 'workers',
    port,
    async close() {
      await server.close();
      await maintenance.close();
      await compactor.close();
    },
  };
}
