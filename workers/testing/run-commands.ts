// The command dispatcher and the fleet-job runner alone in their own process, for tests that
// SIGKILL the workers mid-job (test/command-jobs-e2e.test.ts). Environment: DATABASE_URL,
// REDIS_URL, REDIS_PREFIX, MQTT_URL; COMMANDS_SWEEP_MS, COMMANDS_LEASE_S. Prints `ready` once
// connected, then `tick <job id> <status> released=<n>` for every job step that released devices
// or changed the job.
import mqtt from 'mqtt';
import { createDb } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { createRedis } from '../../lib/redis.js';
import { CommandJobRunner } from '../command-jobs.js';
import { CommandDispatcher } from '../commands.js';

const env = process.env as Record<string, string>;
const db = createDb({ url: env.DATABASE_URL as string, poolSize: 6 });
const redis = createRedis(env.REDIS_URL as string);
const prefix = env.REDIS_PREFIX as string;
const sweepMs = Number(env.COMMANDS_SWEEP_MS ?? 200);
const logger = createLogger('silent');
const client = await mqtt.connectAsync(env.MQTT_URL as string, {
  clientId: `workers-${process.pid}`,
  protocolVersion: 5,
  reconnectPeriod: 500,
});
const dispatcher = new CommandDispatcher({
  db,
  redis,
  redisUrl: env.REDIS_URL as string,
  prefix,
  mqtt: client,
  logger,
  sweepMs,
  leaseS: Number(env.COMMANDS_LEASE_S ?? 3),
}).start();
const runner = new CommandJobRunner({
  db,
  redis,
  prefix,
  logger,
  tickMs: sweepMs,
  sender: dispatcher,
  leaseS: Number(env.COMMANDS_LEASE_S ?? 3),
});
for (;;) {
  const r = await runner.tick().catch((err: Error) => {
    process.stdout.write(`error ${err.message}\n`);
    return { steps: [], more: false };
  });
  for (const s of r.steps)
    if (s.released.length || s.changed) process.stdout.write(`tick ${s.id} ${s.status} released=${s.released.length}\n`);
  if (!r.more) await new Promise((res) => setTimeout(res, sweepMs));
}
