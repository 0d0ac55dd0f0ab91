import { type IngestHandle, startIngest } from '../../ingest/index.js';
import { type Broker, startNoDropBroker } from '../../ingest/testing/broker.js';
import { contextFor, ingestEnv } from '../../ingest/testing/fixtures.js';
import type { RoleContext } from '../../lib/role.js';
import { type DevicesFixture, devicesFixture } from '../devices-fixtures.js';
import { REDIS_URL } from './env.js';

/** The devices subgraph over its own database, and the ingest role on it with a private broker, sharing the Redis prefix. */
export interface IngestStack {
  f: DevicesFixture;
  broker: Broker;
  ctx: RoleContext;
  ingest: IngestHandle;
  close(): Promise<void>;
}

/** Starts the stack; `env` adds ingest configuration (its variables as strings). */
export async function ingestStack(env: Record<string, string> = {}): Promise<IngestStack> {
  const f = await devicesFixture();
  const broker = await startNoDropBroker();
  const { ctx } = contextFor(
    ingestEnv({ dbUrl: f.t.url, mqttUrl: broker.url, prefix: f.ctx.config.REDIS_PREFIX, extra: { REDIS_URL, ...env } }),
  );
  const ingest = await startIngest(ctx, { port: 0 });
  await ingest.subscribed;
  return {
    f,
    broker,
    ctx,
    ingest,
    async close() {
      await ingest.close();
      await ctx.close();
      await broker.stop();
      await f.close();
    },
  };
}
