import { Queue } from 'bullmq';
import { COMMANDS_QUEUE, MAX_DISPATCH_DEVICES, type OnlineItem, onlineJob, type ReplyItem, repliesJob } from '../lib/contracts/commands.js';
import { encodeLatestValue, latestKey, statusKey } from '../lib/contracts/device-state.js';
import { deviceStatusChangedEvent, eventsChannel, telemetryUpdatedEvent } from '../lib/contracts/events.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { RULE_EVAL_QUEUE, type RuleEvalJob, ruleEvalJob } from '../lib/contracts/rule-eval.js';
import type { Redis } from '../lib/redis.js';

/**
 * Per device of a chunk: newer-only merge of latest values into `P latest:<id>`, `lastSeen` into
 * `P status:<id>`, and a transition to online when the device was offline or unknown.
 * KEYS: latest, status of device 1, latest, status of device 2, ... ARGV: nowMs, then per device
 * lastSeenMs and its latest values packed into one string (see {@link packLatest}). Returns one flag
 * per device, 1 on that transition. One call per chunk of devices instead of one per device: the
 * client's cost per command (object, promise, reply) was most of ingest's Redis stage.
 */
const TOUCH = `
local out = {}
for d = 1, #KEYS / 2 do
  local lk, sk = KEYS[2 * d - 1], KEYS[2 * d]
  local lastSeen = tonumber(ARGV[2 * d])
  local names, tss, vals = {}, {}, {}
  for name, ts, json in string.gmatch(ARGV[2 * d + 1] or '', '([^\\31]+)\\31(%d+)\\31([^\\30]*)\\30') do
    names[#names + 1] = name
    tss[#tss + 1] = tonumber(ts)
    vals[#vals + 1] = json
  end
  if #names > 0 then
    local cur = redis.call('HMGET', lk, unpack(names))
    local set = {}
    for i = 1, #names do
      local old = cur[i] and tonumber(string.match(cur[i], '"ts":(%d+)'))
      if not old or old <= tss[i] then
        set[#set + 1] = names[i]
        set[#set + 1] = vals[i]
      end
    end
    if #set > 0 then redis.call('HSET', lk, unpack(set)) end
  end
  local st = redis.call('HMGET', sk, 'online', 'lastSeen')
  if not st[2] or tonumber(st[2]) < lastSeen then redis.call('HSET', sk, 'lastSeen', lastSeen) end
  out[d] = 0
  if st[1] ~= '1' then
    redis.call('HSET', sk, 'online', '1', 'since', ARGV[1])
    out[d] = 1
  end
end
return out`;

/** Devices per touch-script call (a call blocks Redis while it runs: about a millisecond per 250). */
const TOUCH_CHUNK = 250;
/** Events per PUBLISH (one JSON array of envelopes; the gateway accepts an envelope or an array). */
const PUBLISH_CHUNK = 500;

/**
 * Publishes event envelopes (JSON text) grouped per organization channel, in their order, as JSON
 * arrays of at most `PUBLISH_CHUNK` envelopes.
 */
function publishGrouped(
  p: { publish(channel: string, message: Buffer): unknown },
  prefix: string,
  events: [orgId: string, json: string][],
): void {
  const byOrg = new Map<string, string[]>();
  for (const [orgId, json] of events) {
    const list = byOrg.get(orgId);
    if (list) list.push(json);
    else byOrg.set(orgId, [json]);
  }
  for (const [orgId, list] of byOrg)
    for (let i = 0; i < list.length; i += PUBLISH_CHUNK)
      // As bytes: ioredis measures string arguments with Buffer.byteLength, slow on strings built by
      // concatenation; Buffer.from flattens and encodes at once.
      p.publish(eventsChannel(prefix, orgId), Buffer.from(`[${list.slice(i, i + PUBLISH_CHUNK).join(',')}]`));
}

/**
 * Explicit status (status topic, last will, concentrator connect/disconnect, silence timeout).
 * KEYS: status. ARGV: online '1'|'0', nowMs, stateJson|'' , onlyIfLastSeenBelow|''.
 * Returns the device's `lastSeen` (a string) when `online` changed, else 0. The last argument makes the silence check lose to a fresher
 * `lastSeen` written by another replica.
 */
const STATUS = `
local st = redis.call('HMGET', KEYS[1], 'online', 'lastSeen')
if ARGV[4] ~= '' and st[2] and tonumber(st[2]) >= tonumber(ARGV[4]) then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[3]) end
if ARGV[1] == '1' and (not st[2] or tonumber(st[2]) < tonumber(ARGV[2])) then redis.call('HSET', KEYS[1], 'lastSeen', ARGV[2]) end
if st[1] ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'online', ARGV[1], 'since', ARGV[2])
  return redis.call('HGET', KEYS[1], 'lastSeen') or '0'
end
return 0`;

export interface DeviceReadings {
  orgId: string;
  deviceId: string;
  siteId: string | null;
  sitePath: string[];
  readings: { metric: string; ts: number; value: number | null; text: string | null }[];
}

/** What ingest hands the workers' command dispatcher from one batch (the `commands` queue), by organization. */
export interface CommandHandOff {
  replies: Map<string, ReplyItem[]>;
  online: Map<string, OnlineItem[]>;
}

export interface StatusChange {
  orgId: string;
  deviceId: string;
  siteId: string | null;
  sitePath: string[];
  online: boolean;
  state?: Record<string, unknown>;
  /** silence check: apply only when Redis `lastSeen` is still below this */
  ifLastSeenBelow?: number;
}

type Latest = { metric: string; ts: number; value: number | null; text: string | null };

/**
 * The `TOUCH` script's packed latest values: per metric `name US ts US json RS` (US = \x1f, RS = \x1e).
 * Neither separator can occur inside: metric names are `[A-Za-z0-9_.:-]` (parse.ts), `ts` is digits,
 * and JSON text escapes every control character. `json` is the stored hash value
 * ({@link encodeLatestValue}).
 */
export function packLatest(newest: Iterable<Latest>): string {
  let s = '';
  for (const r of newest) s += `${r.metric}\x1f${r.ts}\x1f${encodeLatestValue(r)}\x1e`;
  return s;
}

/** The newest reading per metric of one device (the later one wins a tie, as readings arrive in order). */
function newestByMetric(readings: DeviceReadings['readings']): Map<string, Latest> {
  const newest = new Map<string, Latest>();
  for (const r of readings) {
    const cur = newest.get(r.metric);
    if (!cur || cur.ts <= r.ts) newest.set(r.metric, r);
  }
  return newest;
}

type Scripted = Redis & {
  rulrTouch(numberOfKeys: number, ...keysAndArgv: (string | number | Buffer)[]): Promise<number[]>;
  rulrStatus(status: string, ...argv: (string | number)[]): Promise<number>;
};

/**
 * Everything ingest does after a commit: Redis latest/status hashes, pub/sub events on
 * `P events:<orgId>`, and one `rule-eval` job per organization per batch.
 */
export class Realtime {
  private readonly redis: Scripted;
  private readonly queue: Queue;
  private readonly commandsQueue: Queue;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly maxJobReadings: number,
  ) {
    const r = redis as Scripted;
    if (typeof r.rulrTouch !== 'function') r.defineCommand('rulrTouch', { lua: TOUCH });
    if (typeof r.rulrStatus !== 'function') r.defineCommand('rulrStatus', { numberOfKeys: 1, lua: STATUS });
    this.redis = r;
    this.queue = new Queue(RULE_EVAL_QUEUE, { connection: redis, prefix: queuePrefix(prefix) });
    this.commandsQueue = new Queue(COMMANDS_QUEUE, { connection: redis, prefix: queuePrefix(prefix) });
  }

  /**
   * Applies telemetry of one committed batch: latest values, `lastSeen`, online transitions, events,
   * rule jobs. Events are built and published only for organizations whose channel has a subscriber
   * (`PUBSUB NUMSUB`, asked in the same round trip as the latest values): building and publishing them
   * was about a third of ingest's CPU at full rate, wasted when no gateway listens. A gateway that subscribes to an
   * organization's channel while a batch is between that question and its publish misses that batch,
   * as if it had subscribed a moment later.
   */
  async telemetry(batch: DeviceReadings[], now: number): Promise<DeviceReadings[]> {
    if (!batch.length) return [];
    const p = this.redis.pipeline() as unknown as Scripted & { exec(): Promise<[Error | null, unknown][] | null> };
    const lastSeenOf: number[] = [];
    const newestOf: Map<string, Latest>[] = [];
    const orgs = new Set<string>();
    for (let start = 0; start < batch.length; start += TOUCH_CHUNK) {
      const keys: string[] = [];
      const argv: (number | Buffer)[] = [now];
      for (const d of batch.slice(start, start + TOUCH_CHUNK)) {
        let lastSeen = 0;
        for (const r of d.readings) if (r.ts > lastSeen) lastSeen = r.ts;
        lastSeenOf.push(lastSeen);
        const newest = newestByMetric(d.readings);
        newestOf.push(newest);
        keys.push(latestKey(this.prefix, d.deviceId), statusKey(this.prefix, d.deviceId));
        argv.push(Math.min(lastSeen, now), Buffer.from(packLatest(newest.values())));
        orgs.add(d.orgId);
      }
      p.rulrTouch(keys.length, ...keys, ...argv);
    }
    const orgList = [...orgs];
    p.pubsub('NUMSUB', ...orgList.map((o) => eventsChannel(this.prefix, o)));
    const res = (await p.exec()) ?? [];
    for (const [err] of res) if (err) throw err;
    const numsub = (res[res.length - 1]?.[1] ?? []) as (string | number)[];
    const listened = new Set(orgList.filter((_, i) => Number(numsub[2 * i + 1]) > 0));
    const cameOnline = batch.filter((_, i) => (res[Math.floor(i / TOUCH_CHUNK)]?.[1] as number[] | undefined)?.[i % TOUCH_CHUNK] === 1);
    if (listened.size) {
      const events: [string, string][] = [];
      const online: [string, string][] = [];
      batch.forEach((d, i) => {
        if (!listened.has(d.orgId)) return;
        events.push([d.orgId, telemetryUpdatedEvent(d, now)]);
        const flags = res[Math.floor(i / TOUCH_CHUNK)]?.[1] as number[];
        if (flags[i % TOUCH_CHUNK] === 1) online.push([d.orgId, deviceStatusChangedEvent(d, true, lastSeenOf[i] ?? null, now)]);
      });
      const q = this.redis.pipeline();
      // telemetry first, then the online transitions it caused (as subscribers saw them before)
      publishGrouped(q, this.prefix, events);
      publishGrouped(q, this.prefix, online);
      await q.exec();
    }
    await this.jobs(batch, newestOf);
    return cameOnline;
  }

  /** Hands command replies and online notices to the workers (`commands` queue), per organization. */
  async commands(c: CommandHandOff): Promise<void> {
    const jobs = [
      ...[...c.replies].map(([orgId, replies]) => repliesJob({ orgId, replies })),
      ...[...c.online].flatMap(([orgId, devices]) => {
        const out = [];
        for (let i = 0; i < devices.length; i += MAX_DISPATCH_DEVICES)
          out.push(onlineJob({ orgId, devices: devices.slice(i, i + MAX_DISPATCH_DEVICES) }));
        return out;
      }),
    ];
    if (jobs.length) await this.commandsQueue.addBulk(jobs);
  }

  /** One job per organization: the newest reading per device and metric, capped at `maxJobReadings`. */
  private async jobs(batch: DeviceReadings[], newestOf: Map<string, Latest>[]): Promise<void> {
    const byOrg = new Map<string, RuleEvalJob['readings']>();
    for (let i = 0; i < batch.length; i++) {
      const d = batch[i] as DeviceReadings;
      let list = byOrg.get(d.orgId);
      if (!list) {
        list = [];
        byOrg.set(d.orgId, list);
      }
      const newest = newestOf[i] ?? newestByMetric(d.readings);
      for (const r of newest.values()) {
        if (list.length < this.maxJobReadings) list.push({ deviceId: d.deviceId, metric: r.metric, ts: r.ts, value: r.value });
      }
    }
    await this.queue.addBulk([...byOrg].map(([orgId, readings]) => ruleEvalJob({ orgId, readings })));
  }

  /** Applies explicit status changes and publishes `status` events for real transitions. */
  async status(changes: StatusChange[], now: number): Promise<number> {
    if (!changes.length) return 0;
    const p = this.redis.pipeline() as unknown as Scripted & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const c of changes) {
      p.rulrStatus(
        statusKey(this.prefix, c.deviceId),
        c.online ? '1' : '0',
        now,
        c.state ? JSON.stringify(c.state) : '',
        c.ifLastSeenBelow ?? '',
      );
    }
    const res = (await p.exec()) ?? [];
    const events: [string, string][] = [];
    changes.forEach((c, i) => {
      const r = res[i];
      if (r?.[0]) throw r[0];
      if (typeof r?.[1] !== 'string') return;
      const lastSeen = Number(r[1]) || null;
      events.push([c.orgId, deviceStatusChangedEvent(c, c.online, lastSeen, now)]);
    });
    if (events.length) {
      const q = this.redis.pipeline();
      publishGrouped(q, this.prefix, events);
      await q.exec();
    }
    return events.length;
  }

  async close(): Promise<void> {
    await this.queue.close();
    await this.commandsQueue.close();
  }
}
