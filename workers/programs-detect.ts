import { sql } from 'kysely';
import { getPosition } from 'suncalc';
import { type AlarmEvent, publishAlarmChanges, writeAlarms } from '../lib/alarm-writer.js';
import { latestKey, numericLatest } from '../lib/contracts/device-state.js';
import { type Db, withTenant } from '../lib/db.js';
import type { Logger } from '../lib/logger.js';
import { counter } from '../lib/metrics.js';
import {
  DETECTOR_ALARMS,
  DETECTOR_METRICS,
  DETECTORS,
  type DetectOptions,
  type Detector,
  describeDetection,
  detect,
  type Reported,
} from '../lib/programs-detect.js';
import type { Redis } from '../lib/redis.js';
import { loadOrgPlan } from './programs-plan.js';

/**
 * Runs the expected-state detectors (lib/programs-detect.ts) over every lamp a program or override
 * has set, every `PROGRAMS_DETECT_S`, and raises or clears their alarms through the alarm life cycle
 * of docs/alarms-rules.md: one open alarm per device and type (the unique index makes concurrent
 * detector runs in several processes raise it once), a history entry per change, `alarmChanged`
 * events after commit. Alarms are raised by `program:detector` and carry no rule.
 */

const changesTotal = counter('rulr_program_detector_alarms_total', 'Alarms raised and cleared by the program detectors', [
  'detector',
  'change',
]);

/** Devices per Redis pipeline. */
const CHUNK = 1000;

export interface DetectorOptions extends DetectOptions {
  db: Db;
  redis: Redis;
  prefix: string;
  logger: Logger;
  clock?: () => number;
  /** `SOLAR_CLUSTER_DEGREES` */
  cellDegrees?: number;
  /** ms between runs (PROGRAMS_DETECT_S) @default 60000 */
  intervalMs?: number;
}

export interface DetectSummary {
  devices: number;
  raised: number;
  cleared: number;
}

const ALARM_TYPES = DETECTORS.map((d) => DETECTOR_ALARMS[d].type);
const detectorOf = new Map(DETECTORS.map((d) => [DETECTOR_ALARMS[d].type, d]));

export class ProgramDetectors {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private closed = false;
  private readonly clock: () => number;

  constructor(private readonly o: DetectorOptions) {
    this.clock = o.clock ?? Date.now;
  }

  start(): this {
    const loop = () => {
      if (this.closed) return;
      this.running = this.run()
        .catch((e) => this.o.logger.warn({ err: (e as Error).message }, 'program detectors failed; retried next run'))
        .finally(() => {
          if (!this.closed) this.timer = setTimeout(loop, this.o.intervalMs ?? 60_000);
        });
    };
    this.timer = setTimeout(loop, this.o.intervalMs ?? 60_000);
    return this;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One run over every organization with program levels. */
  async run(): Promise<DetectSummary> {
    const total: DetectSummary = { devices: 0, raised: 0, cleared: 0 };
    const { rows } = await sql<{ org_id: string }>`select distinct org_id from program_device_levels`.execute(this.o.db);
    for (const { org_id } of rows) {
      const s = await this.runOrg(org_id);
      total.devices += s.devices;
      total.raised += s.raised;
      total.cleared += s.cleared;
    }
    return total;
  }

  async runOrg(orgId: string): Promise<DetectSummary> {
    const now = this.clock();
    const plan = await loadOrgPlan(this.o.db, orgId, this.o.cellDegrees ?? 0.1, this.o.logger);
    const { levels, open } = await withTenant(this.o.db, orgId, async (tx) => {
      const levels = (
        await sql<{ device_id: string; level: number; pushed_at: Date | null }>`
          select l.device_id, l.level, l.pushed_at from program_device_levels l
          join devices d on d.id = l.device_id and d.org_id = ${orgId} and d.decommissioned_at is null
          where l.org_id = ${orgId}`.execute(tx)
      ).rows;
      const open = (
        await sql<{ id: string; device_id: string; type: string }>`
          select id, device_id, type from alarms
          where org_id = ${orgId} and cleared_at is null and type = any(${ALARM_TYPES}::text[]) and rule_id is null`.execute(tx)
      ).rows;
      return { levels, open };
    });
    const openBy = new Map(open.map((a) => [`${a.device_id}|${a.type}`, a.id]));
    const raises: { deviceId: string; detector: Detector; message: string }[] = [];
    const clears: { id: string; deviceId: string; detector: Detector }[] = [];
    const sunUp = new Map<string, boolean>();
    for (let i = 0; i < levels.length; i += CHUNK) {
      const chunk = levels.slice(i, i + CHUNK);
      const p = this.o.redis.pipeline();
      for (const l of chunk) p.hmget(latestKey(this.o.prefix, l.device_id), ...DETECTOR_METRICS);
      const res = (await p.exec()) ?? [];
      chunk.forEach((l, j) => {
        if (!l.pushed_at) return;
        const [state, power, dim] = (res[j]?.[1] as (string | null)[] | undefined) ?? [];
        const reported: Reported = {
          lampState: reading(state),
          power: reading(power),
          dimLevel: reading(dim),
        };
        const key = plan.plan.clusterOf.get(l.device_id);
        const cluster = key ? plan.plan.clusters.get(key) : undefined;
        const d = plan.devices.get(l.device_id);
        const lat = cluster?.cellLat ?? d?.lat;
        const lng = cluster?.cellLng ?? d?.lng;
        let up = false;
        if (lat != null && lng != null) {
          const cell = `${lat},${lng}`;
          if (!sunUp.has(cell)) sunUp.set(cell, getPosition(new Date(now), lat, lng).altitude > -0.833);
          up = sunUp.get(cell) === true;
        }
        const expected = { level: l.level, since: l.pushed_at.getTime() };
        const verdicts = detect(expected, reported, up, now, this.o);
        for (const det of DETECTORS) {
          const openId = openBy.get(`${l.device_id}|${DETECTOR_ALARMS[det].type}`);
          if (verdicts[det] === 'raise' && !openId)
            raises.push({ deviceId: l.device_id, detector: det, message: describeDetection(det, expected, reported) });
          if (verdicts[det] === 'clear' && openId) clears.push({ id: openId, deviceId: l.device_id, detector: det });
        }
      });
    }
    if (!raises.length && !clears.length) return { devices: levels.length, raised: 0, cleared: 0 };
    const actor = 'program:detector';
    const written = await withTenant(this.o.db, orgId, (tx) =>
      writeAlarms(tx, orgId, {
        raise: raises.map((r) => ({
          deviceId: r.deviceId,
          ruleId: null,
          type: DETECTOR_ALARMS[r.detector].type,
          severity: DETECTOR_ALARMS[r.detector].severity,
          message: r.message,
          value: null,
          readingTs: null,
          at: null,
          actor,
        })),
        clear: clears.map((c) => ({ id: c.id, value: null, readingTs: null, at: null, actor })),
      }),
    );
    for (const a of written.raised) changesTotal.inc({ detector: detectorOf.get(a.type) ?? '?', change: 'raised' });
    for (const a of written.cleared) changesTotal.inc({ detector: detectorOf.get(a.type) ?? '?', change: 'cleared' });
    const events = written.events;
    await this.publish(orgId, events, plan.devices, now);
    return {
      devices: levels.length,
      raised: events.filter((e) => e[0] === 'raised').length,
      cleared: events.filter((e) => e[0] === 'cleared').length,
    };
  }

  /** `alarmChanged` events once committed; a failure is logged (the alarms are stored). */
  private publish(
    orgId: string,
    events: AlarmEvent[],
    devices: Map<string, { siteId: string | null; sitePath: string | null }>,
    now: number,
  ): Promise<void> {
    return publishAlarmChanges(this.o, orgId, events, devices, now);
  }
}

/** A `latest` field as a detector reading (booleans arrive as 1/0); corrupt fields read as absent (counted by the parser). */
function reading(raw: string | null | undefined) {
  const r = numericLatest(raw);
  return r ? { value: r.value, ts: r.ts } : null;
}
