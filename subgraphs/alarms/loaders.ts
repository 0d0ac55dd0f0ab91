import DataLoader from 'dataloader';
import { isUuid } from '../../lib/db.js';
import type { AlarmEventRow, AlarmRow, AlarmsRepository } from './repository.js';

/**
 * Per-request DataLoaders, bound to the caller's organization: every batch is one SQL query, so a
 * page of alarms with their history, or a page of devices with their alarms, costs a constant
 * number of statements.
 */
export interface AlarmsLoaders {
  /** alarm id → the alarm, or null when unknown or another organization's */
  alarm: DataLoader<string, AlarmRow | null>;
  /** alarm id → its history, oldest first */
  history: DataLoader<string, AlarmEventRow[]>;
  activeCount: DataLoader<string, number>;
  /** device id → the worst severity of its active alarms (null: none) */
  worstSeverity: DataLoader<string, string | null>;
  /** `Device.alarms` for one (first, active) pair of arguments: device id → newest alarms */
  deviceAlarms(first: number, active: boolean | null): DataLoader<string, AlarmRow[]>;
}

const MAX_BATCH = 1000;

/** Ids that are not uuids cannot match a row: they never reach SQL. */
const validKeys = (keys: readonly string[]) => [...new Set(keys.filter(isUuid))];

function grouped<T>(keys: readonly string[], rows: readonly T[], key: (r: T) => string): T[][] {
  const m = new Map<string, T[]>();
  for (const r of rows) {
    const k = key(r);
    const list = m.get(k);
    if (list) list.push(r);
    else m.set(k, [r]);
  }
  return keys.map((k) => m.get(k) ?? []);
}

export function createLoaders(repo: AlarmsRepository, orgId: string): AlarmsLoaders {
  const opts = { maxBatchSize: MAX_BATCH };
  const alarm = new DataLoader<string, AlarmRow | null>(async (keys) => {
    const ids = validKeys(keys);
    const rows = ids.length ? await repo.byIds(orgId, ids) : [];
    const byId = new Map(rows.map((r) => [r.id, r]));
    return keys.map((k) => byId.get(k) ?? null);
  }, opts);
  const history = new DataLoader<string, AlarmEventRow[]>(async (keys) => {
    const ids = validKeys(keys);
    return grouped(keys, ids.length ? await repo.history(orgId, ids) : [], (r) => r.alarm_id);
  }, opts);
  const activeCount = new DataLoader<string, number>(async (keys) => {
    const ids = validKeys(keys);
    const counts = ids.length ? await repo.activeCounts(orgId, ids) : new Map<string, number>();
    return keys.map((k) => counts.get(k) ?? 0);
  }, opts);
  const worstSeverity = new DataLoader<string, string | null>(async (keys) => {
    const ids = validKeys(keys);
    const worst = ids.length ? await repo.worstActiveSeverities(orgId, ids) : new Map<string, string>();
    return keys.map((k) => worst.get(k) ?? null);
  }, opts);
  const perArgs = new Map<string, DataLoader<string, AlarmRow[]>>();
  const deviceAlarms = (first: number, active: boolean | null) => {
    const key = `${first}:${active}`;
    let loader = perArgs.get(key);
    if (!loader) {
      loader = new DataLoader<string, AlarmRow[]>(async (keys) => {
        const ids = validKeys(keys);
        const rows = ids.length ? await repo.ofDevices(orgId, ids, first, active) : [];
        for (const r of rows) alarm.prime(r.id, r);
        return grouped(keys, rows, (r) => r.device_id);
      }, opts);
      perArgs.set(key, loader);
    }
    return loader;
  };
  return { alarm, history, activeCount, worstSeverity, deviceAlarms };
}
