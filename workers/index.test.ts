import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../lib/config.js';
import { NOTIFY_QUEUE, notifyJob } from '../lib/contracts/notifications.js';
import { RULE_EVAL_QUEUE } from '../lib/contracts/rule-eval.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { REDIS_URL } from '../test/support/env.js';
import { startWebhookServer } from '../test/support/webhook.js';
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
      expect(metrics).toMatch(/rulr_queue_waiting_jobs\{queue="notify"\} \d+/);
      expect(metrics).toMatch(/rulr_queue_waiting_jobs\{queue="notify-delivery"\} \d+/);
      await ruleQueue.obliterate({ force: true });
      await ruleQueue.close();
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      await handle.close();
      await ctx.close();
    }
  });

  it('runs the notifier with its configuration: a notify request reaches an allowlisted webhook', async () => {
    const hooks = await startWebhookServer();
    const ctx = new RoleContext(
      loadConfig({ DATABASE_URL: tdb.url, REDIS_URL, REDIS_PREFIX: prefix, LOG_LEVEL: 'silent', NOTIFY_WEBHOOK_ALLOW: '127.0.0.1/32' }),
      createLogger('silent'),
    );
    const handle = await startWorkers(ctx, { port: 0 });
    const queue = new Queue(NOTIFY_QUEUE, { connection: { url: REDIS_URL }, prefix: `${prefix}bull` });
    try {
      const org = await tdb.db
        .insertInto('organizations')
        .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
        .returning('id')
        .executeTakeFirstOrThrow();
      const ch = await tdb.db
        .insertInto('notification_channels')
        .values({ org_id: org.id, name: 'hook', kind: 'webhook', url: `${hooks.url}/w`, created_by: 'test' })
        .returning('id')
        .executeTakeFirstOrThrow();
      const job = notifyJob({
        orgId: org.id,
        source: { kind: 'channel', id: ch.id },
        event: 'channel.test',
        siteId: null,
        severity: 'indeterminate',
        variables: { channelName: 'hook', actor: 'system:test' },
        recipients: { rules: false, channelIds: [ch.id] },
        dedupKey: 'workers-role-test',
      });
      await queue.add(job.name, job.data, job.opts);
      const [hit] = await hooks.waitFor(1);
      expect(JSON.parse(hit?.body ?? '{}').subject).toBe('RULR test notification: hook');
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
      await handle.close();
      await ctx.close();
      await hooks.close();
    }
  });
});
