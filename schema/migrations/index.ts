import type { Migration } from 'kysely';
import * as m0001 from './0001_core.js';
import * as m0002 from './0002_telemetry.js';
import * as m0003 from './0003_rollup_deltas.js';
import * as m0004 from './0004_energy_hourly.js';
import * as m0005 from './0005_alarms_rules.js';
import * as m0006 from './0006_partition_privileges.js';
import * as m0007 from './0007_maintenance_job_runs.js';
import * as m0008 from './0008_system_table_privileges.js';
import * as m0010 from './0010_commands.js';
import * as m0011 from './0011_command_jobs.js';
import * as m0012 from './0012_commands_hot_claim.js';
import * as m0020 from './0020_device_identity.js';
import * as m0030 from './0030_people.js';
import * as m0040 from './0040_programs.js';
import * as m0050 from './0050_rules_wait.js';
import * as m0051 from './0051_rule_actions.js';
import * as m0052 from './0052_rule_state_version.js';
import * as m0055 from './0055_notifications.js';
import * as m0056 from './0056_notification_tests.js';
import * as m0057 from './0057_channel_secret_sealed.js';

/**
 * Every migration, in order. A static list (not a folder scan) so the same code runs from
 * TypeScript sources and from the compiled `dist/`.
 */
export const migrations: Record<string, Migration> = {
  '0001_core': m0001,
  '0002_telemetry': m0002,
  '0003_rollup_deltas': m0003,
  '0004_energy_hourly': m0004,
  '0005_alarms_rules': m0005,
  '0006_partition_privileges': m0006,
  '0007_maintenance_job_runs': m0007,
  '0008_system_table_privileges': m0008,
  '0010_commands': m0010,
  '0011_command_jobs': m0011,
  '0012_commands_hot_claim': m0012,
  '0020_device_identity': m0020,
  '0030_people': m0030,
  '0040_programs': m0040,
  '0050_rules_wait': m0050,
  '0051_rule_actions': m0051,
  '0052_rule_state_version': m0052,
  '0055_notifications': m0055,
  '0056_notification_tests': m0056,
  '0057_channel_secret_sealed': m0057,
};
