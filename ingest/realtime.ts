import { Queue } from 'bullmq';
import type { Redis } from '../lib/redis.js';

/** Name of the BullMQ queue that receives one job per committed batch per organization. */
export const RULE_EVAL_QUEUE = 'rule-eval';

/**
 * Per device: newer-only merge of latest values into `P latest:<id>`, `lastSeen` into `P status:<id>`,
 * and a transition to online when the device was offline or unknown. Returns 1 on that transition.
 * KEYS: latest, status. ARGV: nowMs, lastSeenMs, then the latest values packed into one string (see
 * {@link packLatest}): one argument per device instead of three per metric cut the client's
 * per-argument encoding, which was most of ingest's Redis stage.
 */
const TOUCH = `
local lastSeen = tonumber(ARGV[2])
local names, tss, vals = {}, {}, {}
for name, ts, json in string.gmatch(ARGV[3] or '', '([^\\31]+)\\31(%d+)\\31([^\\30]*)\\30') do
  names[#names + 1] = name
  tss[#tss + 1] = tonumber(ts)
  vals[#vals + 1] = json
end
if #names > 0 then
  local cur = redis.call('HMGET', KEYS[1], unpack(names))
  local set = {}
  for i = 1, #names do
    local old = cur[i] and tonumber(string.match(cur[i], '"ts":(%d+)'))
    if not old or old <= tss[i] then
      set[#set + 1] = names[i]
      set[#set + 1] = vals[i]
    end
  end
  if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
end
local st = redis.call('HMGET', KEYS[2], 'online', 'lastSeen')
if not st[2] or tonumber(st[2]) < lastSeen then redis.call('HSET', KEYS[2], 'lastSeen', lastSeen) end
if st[1] ~= '1' then
  redis.call('HSET', KEYS[2], 'online', '1', 'since', ARGV[1])
  return 1
end
return 0`;

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

const filterOf = (d: { deviceId: string; siteId: string | null; sitePath: string[] }) => ({
  deviceId: d.deviceId,
  siteId: d.siteId,
  sitePath: d.sitePath,
});

/**
 * The real-time envelope (gateway/realtime/events.ts): `field` is the Subscription root field, `data`
 * its value with the device as an entity reference, `filter` what subscribers' arguments match.
 */
export function telemetryEvent(d: DeviceReadings, now: number): string {
  // Built as text (one event per device per batch, dozens of readings each): no object per reading,
  // and the readings of one message share their timestamp, formatted once. Metric names are
  // [A-Za-z0-9_.:-] and values finite numbers (parse.ts), so only `text` needs escaping.
  let lastTs = Number.NaN;
  let lastIso = '';
  let readings = '';
  for (const r of d.readings) {
    if (r.ts !== lastTs) {
      lastTs = r.ts;
      lastIso = new Date(r.ts).toISOString();
    }
    readings += `${readings ? ',' : ''}{"metric":${JSON.stringify(r.metric)},"ts":"${lastIso}","value":${r.value === null ? 'null' : JSON.stringify(r.value)},"text":${r.text === null ? 'null' : JSON.stringify(r.text)}}`;
  }
  return `{"field":"telemetryUpdated","orgId":${JSON.stringify(d.orgId)},"filter":${JSON.stringify(filterOf(d))},"data":{"device":{"id":${JSON.stringify(d.deviceId)}},"readings":[${readings}]},"coalesce":${JSON.stringify(d.deviceId)},"at":${JSON.stringify(now)}}`;
}

type Latest = { metric: string; ts: number; value: number | null; text: string | null };

/**
 * The `TOUCH` script's packed latest values: per metric `name US ts US json RS` (US = \x1f, RS = \x1e).
 * Neither separator can occur inside: metric names are `[A-Za-z0-9_.:-]` (parse.ts), `ts` is digits,
 * and JSON text escapes every control character. `json` is the stored hash value
 * `{"ts","v","t"}` (the text `JSON.stringify` makes).
 */
export function packLatest(newest: Iterable<Latest>): string {
  let s = '';
  for (const r of newest)
    s += `${r.metric}\x1f${r.ts}\x1f{"ts":${r.ts},"v":${r.value === null ? 'null' : JSON.stringify(r.value)},"t":${r.text === null ? 'null' : JSON.stringify(r.text)}}\x1e`;
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

export function statusEvent(
  d: { orgId: string; deviceId: string; siteId: string | null; sitePath: string[] },
  online: boolean,
  lastSeen: number | null,
  now: number,
): string {
  return JSON.stringify({
    field: 'deviceStatusChanged',
    orgId: d.orgId,
    filter: filterOf(d),
    data: { device: { id: d.deviceId }, online, lastSeen: lastSeen ? new Date(lastSeen).toISOString() : null },
    at: now,
  });
}

type Scripted = Redis & {
  rulrTouch(latest: string, status: string, ...argv: (string | number | Buffer)[]): Promise<number>;
  rulrStatus(status: string, ...argv: (string | number)[]): Promise<number>;
};

/**
 * Everything ingest does after a commit: Redis latest/status hashes, pub/sub events on
 * `P events:<orgId>`, and one `rule-eval` job per organization per batch.
 */
export class Realtime {
  private readonly redis: Scripted;
  private readonly queue: Queue;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly maxJobReadings: number,
  ) {
    const r = redis as Scripted;
    if (typeof r.rulrTouch !== 'function') r.defineCommand('rulrTouch', { numberOfKeys: 2, lua: TOUCH });
    if (typeof r.rulrStatus !== 'function') r.defineCommand('rulrStatus', { numberOfKeys: 1, lua: STATUS });
    this.redis = r;
    this.queue = new Queue(RULE_EVAL_QUEUE, { connection: redis, prefix: `${prefix}bull` });
  }

  /** Applies telemetry of one committed batch; returns the status transitions it published. */
  async telemetry(batch: DeviceReadings[], now: number): Promise<void> {
    if (!batch.length) return;
    const p = this.redis.pipeline() as unknown as Scripted & { exec(): Promise<[Error | null, unknown][] | null> };
    const lastSeenOf: number[] = [];
    const newestOf: Map<string, Latest>[] = [];
    for (const d of batch) {
      let lastSeen = 0;
      for (const r of d.readings) if (r.ts > lastSeen) lastSeen = r.ts;
      lastSeenOf.push(lastSeen);
      const newest = newestByMetric(d.readings);
      newestOf.push(newest);
      p.rulrTouch(
        `${this.prefix}latest:${d.deviceId}`,
        `${this.prefix}status:${d.deviceId}`,
        now,
        Math.min(lastSeen, now),
        Buffer.from(packLatest(newest.values())),
      );
      // As bytes (here and the packed latest values above): these strings are built piece by piece,
      // and ioredis measures every string argument with Buffer.byteLength, which walks such a string
      // slowly (a fifth of the Redis stage in a profile); Buffer.from flattens and encodes it at once.
      p.publish(`${this.prefix}events:${d.orgId}`, Buffer.from(telemetryEvent(d, now)));
    }
    const res = (await p.exec()) ?? [];
    const q = this.redis.pipeline();
    batch.forEach((d, i) => {
      const touched = res[i * 2];
      if (touched?.[0]) throw touched[0];
      if (touched?.[1] === 1) {
        q.publish(`${this.prefix}events:${d.orgId}`, statusEvent(d, true, lastSeenOf[i] ?? null, now));
      }
    });
    if (q.length) await q.exec();
    await this.jobs(batch, newestOf);
  }

  /** One job per organization: the newest reading per device and metric, capped at `maxJobReadings`. */
  private async jobs(batch: DeviceReadings[], newestOf: Map<string, Latest>[]): Promise<void> {
    const byOrg = new Map<string, { deviceId: string; metric: string; ts: number; value: number | null }[]>();
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
    await this.queue.addBulk(
      [...byOrg].map(([orgId, readings]) => ({
        name: 'batch',
        data: { orgId, readings },
        opts: { removeOnComplete: 1000, removeOnFail: 5000 },
      })),
    );
  }

  /** Applies explicit status changes and publishes `status` events for real transitions. */
  async status(changes: StatusChange[], now: number): Promise<number> {
    if (!changes.length) return 0;
    const p = this.redis.pipeline() as unknown as Scripted & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const c of changes) {
      p.rulrStatus(
        `${this.prefix}status:${c.deviceId}`,
        c.online ? '1' : '0',
        now,
        c.state ? JSON.stringify(c.state) : '',
        c.ifLastSeenBelow ?? '',
      );
    }
    const res = (await p.exec()) ?? [];
    const q = this.redis.pipeline();
    let n = 0;
    changes.forEach((c, i) => {
      const r = res[i];
      if (r?.[0]) throw r[0];
      if (typeof r?.[1] !== 'string') return;
      n++;
      const lastSeen = Number(r[1]) || null;
      q.publish(`${this.prefix}events:${c.orgId}`, statusEvent(c, c.online, lastSeen, now));
    });
    if (q.length) await q.exec();
    return n;
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
