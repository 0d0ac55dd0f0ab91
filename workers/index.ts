import { Queue } from 'bullmq';
import mqtt from 'mqtt';
import { channelSecretKey, channelSecretKeys } from '../lib/contracts/channel-secret.js';
import { COMMANDS_QUEUE } from '../lib/contracts/commands.js';
import { NOTIFY_QUEUE } from '../lib/contracts/notifications.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { RULE_EVAL_QUEUE } from '../lib/contracts/rule-eval.js';
import { pingDb } from '../lib/db.js';
import { ServiceServer } from '../lib/http.js';
import { createMailSender } from '../lib/mail.js';
import { gauge } from '../lib/metrics.js';
import { serviceMqttOptions } from '../lib/mqtt-service.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { RollupCompactor } from '../lib/telemetry/compactor.js';
import { parseAllowlist } from '../lib/webhook-guard.js';
import { startBrokerSync } from './broker-sync/index.js';
import { CommandJobRunner } from './command-jobs.js';
import { CommandDispatcher } from './commands.js';
import { MAINTENANCE_QUEUE, Maintenance, retentionFromConfig } from './maintenance.js';
import { DELIVERY_QUEUE, Notifier } from './notifier.js';
import { desiredStateSink, ProgramScheduler } from './programs.js';
import { ProgramDetectors } from './programs-detect.js';
import { RuleEvaluator } from './rule-eval.js';
import { RuleTimers } from './rule-wait.js';
import { ScheduleRunner } from './schedules.js';

/** Queues of the workers running in this process, read when /metrics is scraped. */
const queues = new Set<{ name: string; queue: Queue }>();
gauge('rulr_queue_waiting_jobs', 'Jobs waiting in a BullMQ queue (the workers HPA scales on it)', ['queue'], async function () {
  this.reset();
  for (const q of queues) this.set({ queue: q.name }, await q.queue.getWaitingCount().catch(() => 0));
});

/**
 * The workers role: BullMQ processors behind a ServiceServer (`/healthz`, `/readyz`, `/metrics`) on
 * `WORKERS_PORT`. It runs rule evaluation (`rule-eval`, fed by ingest), command dispatch (`commands`,
 * docs/commands.md) and fleet jobs, the durable timers of rules that wait, the cron schedules, the lighting-program
 * scheduler and its detectors, the notifier (`notify` requests, digests, escalations, deliveries;
 * docs/notifications.md), the maintenance queue and, when configured, the broker sync (Mosquitto
 * dynamic security, EMQX kick-out).
 */
export async function startWorkers(ctx: RoleContext, o: { port?: number } = {}): Promise<RoleHandle> {
  const cfg = ctx.config;
  const maintenance = new Maintenance({
    db: ctx.db,
    redisUrl: cfg.REDIS_URL,
    prefix: queuePrefix(cfg.REDIS_PREFIX),
    retention: retentionFromConfig(cfg),
    logger: ctx.logger.child({ role: 'workers' }),
  });
  await maintenance.start();
  const ruleEval = new RuleEvaluator({
    db: ctx.db,
    redis: ctx.redis,
    redisUrl: cfg.REDIS_URL,
    prefix: cfg.REDIS_PREFIX,
    concurrency: cfg.RULE_EVAL_CONCURRENCY,
    stateCacheMax: cfg.RULE_STATE_CACHE_MAX,
    actions: { timeoutS: cfg.COMMANDS_DEFAULT_TIMEOUT_S, expiryS: cfg.COMMANDS_DEFAULT_EXPIRY_S },
    logger: ctx.logger.child({ role: 'workers', queue: 'rule-eval' }),
  }).start();
  // QoS 1 publishes of commands (SENT on PUBACK); a persistent session keeps unacknowledged ones across reconnects.
  const commandsMqtt = mqtt.connect(cfg.MQTT_URL, {
    ...serviceMqttOptions(cfg, 'workers'),
    clientId: `rulr-workers-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    protocolVersion: 5,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    keepalive: 30,
    ...(process.env.DEBUG ? {} : { log: () => undefined }),
  });
  commandsMqtt.on('error', (err) => ctx.logger.warn({ err: err.message }, 'workers: MQTT error'));
  const commands = new CommandDispatcher({
    db: ctx.db,
    redis: ctx.redis,
    redisUrl: cfg.REDIS_URL,
    prefix: cfg.REDIS_PREFIX,
    mqtt: commandsMqtt,
    logger: ctx.logger.child({ role: 'workers', queue: 'commands' }),
    concurrency: cfg.COMMANDS_CONCURRENCY,
    sweepMs: cfg.COMMANDS_SWEEP_MS,
    leaseS: cfg.COMMANDS_LEASE_S,
    timeoutS: cfg.COMMANDS_DEFAULT_TIMEOUT_S,
    expiryS: cfg.COMMANDS_DEFAULT_EXPIRY_S,
  }).start();
  const commandJobs = new CommandJobRunner({
    db: ctx.db,
    redis: ctx.redis,
    prefix: cfg.REDIS_PREFIX,
    logger: ctx.logger.child({ role: 'workers', component: 'command-jobs' }),
    tickMs: cfg.COMMANDS_SWEEP_MS,
    // released commands are claimed by the release and go to the broker from here at once, not through `dispatch`
    // jobs queued behind the replies
    sender: commands,
    leaseS: cfg.COMMANDS_LEASE_S,
  }).start();
  const ruleTimers = new RuleTimers({
    wait: ruleEval.wait,
    logger: ctx.logger.child({ role: 'workers', component: 'rule-timers' }),
    tickMs: cfg.RULE_TIMERS_TICK_MS,
  }).start();
  const schedules = new ScheduleRunner({
    db: ctx.db,
    redis: ctx.redis,
    prefix: cfg.REDIS_PREFIX,
    logger: ctx.logger.child({ role: 'workers', component: 'schedules' }),
    tickMs: cfg.SCHEDULES_TICK_MS,
  }).start();
  const programs = new ProgramScheduler({
    db: ctx.db,
    redis: ctx.redis,
    prefix: cfg.REDIS_PREFIX,
    logger: ctx.logger.child({ role: 'workers', component: 'programs' }),
    sink: desiredStateSink({ timeoutS: cfg.COMMANDS_DEFAULT_TIMEOUT_S, expiryS: cfg.COMMANDS_DEFAULT_EXPIRY_S }),
    tickMs: cfg.PROGRAMS_TICK_MS,
    replanS: cfg.PROGRAMS_REPLAN_S,
    cellDegrees: cfg.SOLAR_CLUSTER_DEGREES,
  }).start();
  const programChanges = await programs.listen(ctx.redis);
  const detectors = new ProgramDetectors({
    db: ctx.db,
    redis: ctx.redis,
    prefix: cfg.REDIS_PREFIX,
    logger: ctx.logger.child({ role: 'workers', component: 'program-detectors' }),
    cellDegrees: cfg.SOLAR_CLUSTER_DEGREES,
    intervalMs: cfg.PROGRAMS_DETECT_S * 1000,
    graceMs: cfg.PROGRAMS_DETECT_GRACE_S * 1000,
    dimTolerance: cfg.PROGRAMS_DIM_TOLERANCE,
    onPowerW: cfg.PROGRAMS_ON_POWER_W,
  }).start();
  const mail = createMailSender(cfg, ctx.logger.child({ role: 'workers', component: 'mail' }));
  const notifier = new Notifier({
    db: ctx.db,
    redisUrl: cfg.REDIS_URL,
    prefix: cfg.REDIS_PREFIX,
    mail,
    logger: ctx.logger.child({ role: 'workers', component: 'notifier' }),
    tickMs: cfg.NOTIFY_TICK_MS,
    digestWindowMs: cfg.NOTIFY_DIGEST_WINDOW_S * 1000,
    webhookTimeoutMs: cfg.NOTIFY_WEBHOOK_TIMEOUT_MS,
    attempts: cfg.NOTIFY_ATTEMPTS,
    backoffMs: cfg.NOTIFY_BACKOFF_MS,
    allow: parseAllowlist(cfg.NOTIFY_WEBHOOK_ALLOW),
    channelSecretKey: channelSecretKey(cfg.RULR_SECRET),
    previousChannelSecretKeys: channelSecretKeys(cfg.RULR_SECRET_PREVIOUS),
  }).start();
  // Safety net: folds rollup deltas even while no ingest replica runs (ingest compacts as it writes).
  const compactor = new RollupCompactor({ url: cfg.DATABASE_URL, intervalMs: 5000, logger: ctx.logger }).start();
  // Mosquitto dynamic security / EMQX kick-out, when configured (docs/broker-auth.md)
  const brokerSync = await startBrokerSync(ctx);
  const server = new ServiceServer({
    name: 'workers',
    port: o.port ?? cfg.WORKERS_PORT,
    checks: { postgres: () => pingDb(ctx.db), redis: async () => void (await ctx.redis.ping()) },
  });
  const watched = [
    { name: RULE_EVAL_QUEUE, queue: new Queue(RULE_EVAL_QUEUE, { connection: ctx.redis, prefix: queuePrefix(cfg.REDIS_PREFIX) }) },
    { name: MAINTENANCE_QUEUE, queue: maintenance.queue },
    { name: COMMANDS_QUEUE, queue: new Queue(COMMANDS_QUEUE, { connection: ctx.redis, prefix: queuePrefix(cfg.REDIS_PREFIX) }) },
    { name: NOTIFY_QUEUE, queue: notifier.queue },
    { name: DELIVERY_QUEUE, queue: notifier.deliveries },
  ];
  for (const w of watched) queues.add(w);
  const port = await server.listen();
  ctx.logger.info({ role: 'workers', port }, 'workers listening');
  return {
    name: 'workers',
    port,
    async close() {
      await server.close();
      for (const w of watched) queues.delete(w);
      await watched[0]?.queue.close();
      await watched[2]?.queue.close();
      await commandJobs.close();
      await commands.close();
      await commandsMqtt.endAsync();
      await ruleEval.close();
      await ruleTimers.close();
      await schedules.close();
      await programs.close();
      await detectors.close();
      await notifier.close();
      await mail.close();
      programChanges.disconnect();
      await maintenance.close();
      await compactor.close();
      await brokerSync?.close();
    },
  };
}
