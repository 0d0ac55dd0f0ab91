import { readFileSync } from 'node:fs';
import { subscribeDeviceChanges } from '../../lib/contracts/device-changes.js';
import { DYNSEC_ROLES } from '../../lib/mqtt-policy.js';
import type { RoleContext } from '../../lib/role.js';
import { DynsecClient } from './dynsec-client.js';
import { DynsecSync } from './dynsec-sync.js';
import { EmqxKick } from './emqx-kick.js';
import { Leadership } from './leader.js';

export interface BrokerSyncHandle {
  /** the dynamic-security sync while this replica leads (tests and the bench) */
  readonly dynsec: DynsecSync | undefined;
  /** resolves after the first full reconcile of this replica's first leadership */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

/**
 * The broker side of device identity, in the workers role, on one replica at a time (a Redis
 * leader key): Mosquitto's dynamic security kept in sync (DYNSEC_ENABLED), EMQX's kick-out of
 * revoked devices (EMQX_API_URL). Both follow the device-change notices, with a full pass at start
 * and every DYNSEC_RECONCILE_S. Returns undefined when neither is configured.
 */
export async function startBrokerSync(ctx: RoleContext): Promise<BrokerSyncHandle | undefined> {
  const cfg = ctx.config;
  const emqx =
    cfg.EMQX_API_URL && cfg.EMQX_API_KEY && cfg.EMQX_API_SECRET
      ? { apiUrl: cfg.EMQX_API_URL, apiKey: cfg.EMQX_API_KEY, apiSecret: cfg.EMQX_API_SECRET }
      : undefined;
  if (!cfg.DYNSEC_ENABLED && !emqx) return undefined;
  const logger = ctx.logger.child({ role: 'workers', job: 'broker-sync' });
  const kick = emqx ? new EmqxKick({ db: ctx.db, ...emqx, logger }) : undefined;
  let dynsec: DynsecSync | undefined;
  let client: DynsecClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => {
    markReady = r;
  });

  const lead = async () => {
    if (cfg.DYNSEC_ENABLED) {
      client = new DynsecClient({
        url: cfg.MQTT_URL,
        username: cfg.DYNSEC_ADMIN_USERNAME,
        password: cfg.DYNSEC_ADMIN_PASSWORD ?? '',
        connect: cfg.MQTT_CA_FILE ? { ca: readFileSync(cfg.MQTT_CA_FILE) } : {},
      });
      await client.connect();
      dynsec = new DynsecSync({
        db: ctx.db,
        client,
        group: cfg.INGEST_GROUP,
        rulrSecret: cfg.RULR_SECRET,
        previousSecrets: cfg.RULR_SECRET_PREVIOUS,
        batch: cfg.DYNSEC_BATCH,
        services: [
          { username: cfg.MQTT_INGEST_USERNAME, password: cfg.MQTT_INGEST_PASSWORD, role: DYNSEC_ROLES.ingest },
          { username: cfg.MQTT_WORKERS_USERNAME, password: cfg.MQTT_WORKERS_PASSWORD, role: DYNSEC_ROLES.workers },
        ],
        logger,
      });
      const r = await dynsec.reconcile(true);
      logger.info({ ...r, brokerVersion: client.brokerVersion, batch: dynsec.batch }, 'dynsec: reconciled');
    }
    markReady();
    timer = setInterval(() => {
      void dynsec?.reconcile().catch(() => undefined);
      void kick?.sweep().catch((e) => logger.warn({ err: (e as Error).message }, 'emqx: sweep failed'));
    }, cfg.DYNSEC_RECONCILE_S * 1000);
    timer.unref();
  };
  const follow = async () => {
    clearInterval(timer);
    await dynsec?.close();
    await client?.close();
    dynsec = undefined;
    client = undefined;
  };

  let retry: NodeJS.Timeout | undefined;
  const start = () => {
    lead().catch(async (e) => {
      logger.warn({ err: (e as Error).message }, 'broker-sync: could not start; retrying in 5 s');
      await follow();
      if (leadership.leader) retry = setTimeout(start, 5000);
    });
  };
  const leadership = new Leadership(ctx.redis, `${cfg.REDIS_PREFIX}broker-sync:leader`, (leader) => {
    clearTimeout(retry);
    if (leader) start();
    else void follow();
  });
  const unsubscribe = await subscribeDeviceChanges(ctx.redis, cfg.REDIS_PREFIX, {
    onChange: (c) => {
      if (!leadership.leader) return;
      void dynsec?.apply(c).catch(() => undefined);
      void kick?.apply(c).catch((e) => logger.warn({ err: (e as Error).message }, 'emqx: kick after a notice failed'));
    },
    onGap: () => {
      if (leadership.leader) void dynsec?.reconcile().catch(() => undefined);
    },
  });
  leadership.start();

  return {
    get dynsec() {
      return dynsec;
    },
    ready,
    async close() {
      clearTimeout(retry);
      await unsubscribe();
      await leadership.stop();
      await follow();
    },
  };
}
