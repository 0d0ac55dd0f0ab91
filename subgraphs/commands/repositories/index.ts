import type { Db } from '../../../lib/db.js';
import { CommandsRepository } from './commands.js';
import { CommandJobsRepository } from './jobs.js';

export {
  type CommandDefaults,
  type CommandRow,
  CommandsRepository,
  type CommandWrite,
  type DeviceStateRow,
  type ProfileSpecsRow,
} from './commands.js';
export { CommandJobsRepository, type JobRow, type JobWrite, jobProgress } from './jobs.js';

/** The commands subgraph's SQL, one repository per aggregate: commands (with desired state and profiles' declarations), and fleet jobs. */
export interface CommandsRepositories {
  commands: CommandsRepository;
  jobs: CommandJobsRepository;
}

export function createRepositories(db: Db): CommandsRepositories {
  return { commands: new CommandsRepository(db), jobs: new CommandJobsRepository(db) };
}
