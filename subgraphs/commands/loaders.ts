import DataLoader from 'dataloader';
import { isUuid } from '../../lib/db.js';
import type { CommandRow, CommandsRepositories, DeviceStateRow, JobRow, ProfileSpecsRow } from './repositories/index.js';
import type { CommandCursor } from './validation.js';

/**
 * Per-request DataLoaders, bound to the caller's organization: every batch is one SQL query, so a
 * page of devices with their commands and states costs a constant number of statements.
 */
export interface CommandsLoaders {
  /** command id → the command, or null when unknown or another organization's */
  command: DataLoader<string, CommandRow | null>;
  /** device id → its desired/reported state, or null when it has none yet */
  state: DataLoader<string, DeviceStateRow | null>;
  /** fleet job id → the job with its command counts, or null when unknown or another organization's */
  job: DataLoader<string, JobRow | null>;
  /** profile id → its command declarations, or null when unknown */
  profile: DataLoader<string, ProfileSpecsRow | null>;
  /** `Device.commands` for one set of arguments: device id → newest commands */
  deviceCommands(first: number, statuses: readonly string[] | null, after: CommandCursor | undefined): DataLoader<string, CommandRow[]>;
}

const MAX_BATCH = 1000;

/** Ids that are not uuids cannot match a row: they never reach SQL. */
const validKeys = (keys: readonly string[]) => [...new Set(keys.filter(isUuid))];

function byKey<T>(keys: readonly string[], rows: readonly T[], key: (r: T) => string): (T | null)[] {
  const m = new Map(rows.map((r) => [key(r), r]));
  return keys.map((k) => m.get(k) ?? null);
}

export function createLoaders(repos: CommandsRepositories, orgId: string): CommandsLoaders {
  const { commands: repo, jobs } = repos;
  const opts = { maxBatchSize: MAX_BATCH };
  const command = new DataLoader<string, CommandRow | null>(async (keys) => {
    const ids = validKeys(keys);
    return byKey(keys, ids.length ? await repo.byIds(orgId, ids) : [], (r) => r.id);
  }, opts);
  const state = new DataLoader<string, DeviceStateRow | null>(async (keys) => {
    const ids = validKeys(keys);
    return byKey(keys, ids.length ? await repo.states(orgId, ids) : [], (r) => r.device_id);
  }, opts);
  const job = new DataLoader<string, JobRow | null>(async (keys) => {
    const ids = validKeys(keys);
    return byKey(keys, ids.length ? await jobs.byIds(orgId, ids) : [], (r) => r.id);
  }, opts);
  const profile = new DataLoader<string, ProfileSpecsRow | null>(async (keys) => {
    const ids = validKeys(keys);
    return byKey(keys, ids.length ? await repo.profileSpecs(orgId, ids) : [], (r) => r.id);
  }, opts);
  const perArgs = new Map<string, DataLoader<string, CommandRow[]>>();
  return {
    command,
    state,
    job,
    profile,
    deviceCommands(first, statuses, after) {
      const k = JSON.stringify([first, statuses, after ?? null]);
      let l = perArgs.get(k);
      if (!l) {
        l = new DataLoader<string, CommandRow[]>(async (keys) => {
          const ids = validKeys(keys);
          const rows = ids.length ? await repo.ofDevices(orgId, ids, { limit: first, statuses, after }) : [];
          for (const r of rows) command.prime(r.id, r);
          const m = new Map<string, CommandRow[]>();
          for (const r of rows) {
            const list = m.get(r.device_id);
            if (list) list.push(r);
            else m.set(r.device_id, [r]);
          }
          return keys.map((k2) => m.get(k2) ?? []);
        }, opts);
        perArgs.set(k, l);
      }
      return l;
    },
  };
}
