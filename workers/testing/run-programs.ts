// A program scheduler alone in its own process, for tests that run two of them and SIGKILL one
// (test/programs-exactly-once.test.ts). Environment: DATABASE_URL, REDIS_URL, REDIS_PREFIX;
// PROGRAMS_FIXED_NOW (ms) pins its clock; PROGRAMS_HOLD_MS keeps each claim open that long before
// firing (so a test can kill it while it holds one). PROGRAMS_SINK=desired-state pushes through the
// real desired-state sink (commands queued) instead of recording only; PROGRAMS_PUSH_BATCH sets the
// push's batch; PROGRAMS_PUSH_HOLD_MS keeps each push transaction open that long after the sink
// wrote. Prints `claimed <source> <id>`, `pushing <n>` and `tick <json>`.
import { createDb } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { createRedis } from '../../lib/redis.js';
import { desiredStateSink, ProgramScheduler, recordOnlySink } from '../programs.js';

const db = createDb({ url: process.env.DATABASE_URL as string, poolSize: 4 });
const redis = createRedis(process.env.REDIS_URL as string);
const fixed = Number(process.env.PROGRAMS_FIXED_NOW);
const hold = Number(process.env.PROGRAMS_HOLD_MS ?? 0);
const pushHold = Number(process.env.PROGRAMS_PUSH_HOLD_MS ?? 0);
const pushBatch = Number(process.env.PROGRAMS_PUSH_BATCH ?? 0);
const s = new ProgramScheduler({
  db,
  redis,
  prefix: process.env.REDIS_PREFIX as string,
  logger: createLogger('silent'),
  sink: process.env.PROGRAMS_SINK === 'desired-state' ? desiredStateSink({ timeoutS: 30, expiryS: 86_400 }) : recordOnlySink,
  ...(pushBatch ? { pushBatch } : {}),
  clock: Number.isFinite(fixed) ? () => fixed : Date.now,
  onClaim: async ({ source, id }) => {
    process.stdout.write(`claimed ${source} ${id}\n`);
    if (hold) await new Promise((r) => setTimeout(r, hold));
  },
  onPush: async ({ devices }) => {
    process.stdout.write(`pushing ${devices}\n`);
    if (pushHold) await new Promise((r) => setTimeout(r, pushHold));
  },
});
for (;;) {
  const r = await s.tick();
  process.stdout.write(`tick ${JSON.stringify(r)}\n`);
  await new Promise((res) => setTimeout(res, 50));
}
