import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../lib/config.js';
import { RULE_EVAL_QUEUE } from '../lib/contracts/rule-eval.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { startWorkers } from './index.js';
import { MAINTENANCE_QUEUE } from './maintenance.js';

let tdb: TestDatabase;
const prefix = `t${randomBytes(4).toString('hex')}:`;

beforeAll(async () => {
  tdb = await createTestDatabase();
});

afterAll(async () => {
  await tdb.drop();
});

describe('workers role', () => {
  it('serves health and readiness, schedules the maintenance jobs on its prefixed queue and exports waiting jobs per queue', async () => {
    const ctx = new RoleContext(
      loadConfig({ DATABASE_URL: tdb.url, REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent' }),
      createLogger('silent'),
    );
    const handle = await startWorkers(ctx, { port: 0 });
    const queue = new Queue(MAINTENANCE_QUEUE, { connection: { url: REDIS_URL }, prefix: `${prefix}bull` });
    try {
      const ready = await fetch(`http://127.0.0.1:${handle.port}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ checks: { postgres: 'ok', redis: 'ok' } });
      expect((await queue.getJobSchedulers()).length).toBe(2);
      // the HPA's metric: waiting jobs per queue, read at scrape time
      const ruleQueue = new Queue(RULE_EVAL_QUEUE, { connection: { url: REDIS_URL }, prefix: `${prefix}bull` });
      await ruleQueue.pause();
      await ruleQueue.add('batch', { orgId: '00000000-0000-0000-0000-000000000000', readings: [] });
      const metrics = await (await fetch(`http://127.0.0.1:${handle.port}/metrics`)).text();
      expect(metrics).toContain('rulr_queue_waiting_jobs{queue="rule-eval"} 1');
      expect(metrics).toMatch(/rulr_queue_waiting_jobs\{queue="maintenance"\} \d+/);
      await ruleQueue.obliterate({ force: true });
      await ruleQueue.close();
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      await handle.close();
      await ctx.close();
    }
  });
});
