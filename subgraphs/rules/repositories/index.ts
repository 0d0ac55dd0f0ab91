import type { Db } from '../../../lib/db.js';
import type { Logger } from '../../../lib/logger.js';
import type { Redis } from '../../../lib/redis.js';
import { NotificationsRepository } from './notifications.js';
import { ProgramAssignmentsRepository } from './program-assignments.js';
import { ProgramsRepository, ProgramsVersion } from './programs.js';
import { RulesRepository } from './rules.js';
import { SchedulesRepository } from './schedules.js';

export {
  type DeviceLatest,
  DRY_RUN_DEVICE_CAP,
  DRY_RUN_READING_CAP,
  type ExecutionRow,
  type LatestValue,
  type RuleFilter,
  type RulePageRow,
  type RuleRow,
  type RuleStats,
  RulesRepository,
  type ScopeReadings,
  type WindowReadings,
} from './rules.js';

/** The rules subgraph's SQL and Redis access, one repository per aggregate. */
export interface RulesRepositories {
  rules: RulesRepository;
  programs: ProgramsRepository;
  programAssignments: ProgramAssignmentsRepository;
  schedules: SchedulesRepository;
  notifications: NotificationsRepository;
}

/** What the repositories share: the primary database, Redis and `REDIS_PREFIX`. */
export interface RepositoryDeps {
  db: Db;
  redis: Redis;
  /** `REDIS_PREFIX` */
  prefix: string;
  /** seals channel secrets (lib/contracts/channel-secret.ts: `channelSecretKey(RULR_SECRET)`) */
  channelSecretKey: Buffer;
  logger?: Logger | undefined;
}

/** Every repository of the rules subgraph over the same clients. */
export function createRepositories(deps: RepositoryDeps): RulesRepositories {
  const programsVersion = new ProgramsVersion(deps.redis, deps.prefix, deps.logger);
  return {
    rules: new RulesRepository(deps.db, deps.redis, deps.prefix, deps.logger),
    programs: new ProgramsRepository(deps.db, programsVersion),
    programAssignments: new ProgramAssignmentsRepository(deps.db, programsVersion),
    schedules: new SchedulesRepository(deps.db),
    notifications: new NotificationsRepository(deps.db, deps.channelSecretKey),
  };
}
