// Durable rule timers and cron schedules alone in their own process, for tests that run two of them
// and SIGKILL one (test/rules-exactly-once.test.ts). Environment: DATABASE_URL, REDIS_URL,
// REDIS_PREFIX; HOLD_MS keeps each claim open that long before firing (so a test can kill the process
// while it holds one). Prints `claimed timers <n>`, `claimed schedule <id>` and `tick <timers> <runs>`.
import { createDb } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { createRedis } from '../../lib/redis.js';
import { RuleWait } from '../rule-wait.js';
import { ScheduleRunner } from '../schedules.js';

const db = createDb({ url: process.env.DATABASE_URL as string, poolSize: 4 });
const redis = createRedis(process.env.REDIS_URL as string);
const prefix = process.env.REDIS_PREFIX as string;
const hold = Number(process.env.HOLD_MS ?? 0);
const logger = createLogger('silent');
const wait = new RuleWait({ db, redis, prefix, logger });
const schedules = new ScheduleRunner({
  db,
  redis,
  prefix,
  logger,
  onClaim: async (id) => {
    process.stdout.write(`claimed schedule ${id}\n`);
    if (hold) await new Promise((r) => setTimeout(r, hold));
  },
});
const onClaim = async (n: number) => {
  process.stdout.write(`claimed timers ${n}\n`);
  if (hold) await new Promise((r) => setTimeout(r, hold));
};
for (;;) {
  let timers = 0;
  for (let n = await wait.sweep(200, onClaim); n; n = await wait.sweep(200, onClaim)) timers += n;
  const runs = await schedules.tick();
  process.stdout.write(`tick ${timers} ${runs}\n`);
  await new Promise((res) => setTimeout(res, 50));
}
