import { channelSecretKey } from '../../lib/contracts/channel-secret.js';
// The notifier alone in its own process, for tests that run two of them on one queue and SIGKILL one
// (test/notifications-exactly-once.test.ts). Environment: DATABASE_URL, REDIS_URL, REDIS_PREFIX,
// NOTIFY_WEBHOOK_ALLOW, RULR_SECRET; HOLD_MS keeps each delivery that long before sending it (so a test can kill the
// process while it holds one). Prints `ready`, `sending <deliveryId>` and `attempted <deliveryId> <ok>`.
import { createDb } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { LogMailSender } from '../../lib/mail.js';
import { parseAllowlist } from '../../lib/webhook-guard.js';
import { Notifier } from '../notifier.js';

const db = createDb({ url: process.env.DATABASE_URL as string, poolSize: 4 });
const hold = Number(process.env.HOLD_MS ?? 0);
const logger = createLogger('silent');
new Notifier({
  db,
  redisUrl: process.env.REDIS_URL as string,
  prefix: process.env.REDIS_PREFIX as string,
  mail: new LogMailSender(logger),
  logger,
  tickMs: 100,
  digestWindowMs: 200,
  backoffMs: 200,
  lockDurationMs: 1500,
  webhookTimeoutMs: 2000,
  repairAfterMs: 3000,
  allow: parseAllowlist(process.env.NOTIFY_WEBHOOK_ALLOW ?? ''),
  channelSecretKey: channelSecretKey(process.env.RULR_SECRET as string),
  beforeSend: async (id) => {
    process.stdout.write(`sending ${id}\n`);
    if (hold) await new Promise((r) => setTimeout(r, hold));
  },
  afterAttempt: (id, ok) => process.stdout.write(`attempted ${id} ${ok}\n`),
}).start();
process.stdout.write('ready\n');
