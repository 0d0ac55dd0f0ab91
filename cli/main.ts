import { Command } from 'commander';
import { Kysely, PostgresDialect } from 'kysely';
import { ConfigError, configMarkdown, loadConfig, redactedConfig } from '../lib/config.js';
import { createPool } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { migrateDown, migrateToLatest } from '../schema/migrate.js';
import { ROLE_NAMES, startRoles } from './roles.js';

function config() {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(2);
    }
    throw e;
  }
}

export async function runMigrations(url: string, down = false): Promise<string[]> {
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: createPool(url, 2) }) });
  try {
    const r = down ? await migrateDown(db) : await migrateToLatest(db);
    return (r.results ?? []).map((x) => `${x.direction} ${x.migrationName}: ${x.status}`);
  } finally {
    await db.destroy();
  }
}

const program = new Command('rulr').description('RULR IoT platform').showHelpAfterError();

program
  .command('start')
  .description(`run roles in this process (${ROLE_NAMES.join(', ')}, or all)`)
  .argument('[roles...]', 'roles to run', ['all'])
  .action(async (roles: string[]) => {
    const cfg = config();
    const logger = createLogger(cfg.LOG_LEVEL, { service: 'rulr' });
    const running = await startRoles(cfg, logger, roles);
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'draining');
      const hard = setTimeout(() => process.exit(1), 30_000);
      hard.unref();
      await running.close();
      logger.info('stopped');
      process.exit(0);
    };
    process.on('SIGTERM', () => void stop('SIGTERM'));
    process.on('SIGINT', () => void stop('SIGINT'));
  });

program
  .command('migrate')
  .description('apply database migrations (safe from several replicas at once; connect directly, not through PgBouncer)')
  .option('--down', 'revert the newest migration')
  .option('--timescale', 'also convert telemetry to TimescaleDB (fails when the extension is missing); docs/timescale.md')
  .action(async (o: { down?: boolean; timescale?: boolean }) => {
    const cfg = config();
    for (const line of await runMigrations(cfg.DATABASE_URL, o.down)) console.log(line);
    if (!o.down) {
      const { migrateTimescale } = await import('../lib/telemetry/timescale/apply.js');
      const ts = { explicit: o.timescale, rawDays: cfg.RETENTION_RAW_DAYS, rollupDays: cfg.RETENTION_ROLLUP_DAYS };
      for (const line of await migrateTimescale(cfg.DATABASE_URL, ts)) console.log(line);
    }
    console.log('database is up to date');
  });

program
  .command('config')
  .description('print the configuration table (markdown) or the effective configuration')
  .option('--markdown', 'the README table')
  .action((o: { markdown?: boolean }) => {
    if (o.markdown) console.log(configMarkdown());
    else {
      console.log(JSON.stringify(redactedConfig(config()), null, 2));
    }
  });

program
  .command('seed')
  .description('create demo data')
  .option('--demo', 'organization "demo" with sites, a street-light profile, 1,000 devices and an admin')
  .option('--devices <n>', 'number of demo devices', '1000')
  .action(async (o: { demo?: boolean; devices: string }) => {
    const { seedDemo } = await import('./seed.js');
    const cfg = config();
    await seedDemo(cfg, { devices: Number(o.devices) });
  });

program
  .command('token')
  .description('print a JWT signed with RULR_SECRET')
  .requiredOption('--org <slug>', 'organization slug')
  .requiredOption('--role <role>', 'admin, operator or viewer')
  .option('--user <email>', 'user the token is for (default: a service subject)')
  .option('--ttl <seconds>', 'lifetime in seconds')
  .action(async (o: { org: string; role: string; user?: string; ttl?: string }) => {
    const { printToken } = await import('./token.js');
    await printToken(config(), o);
  });

const apikey = program.command('apikey').description('manage API keys');
apikey
  .command('create')
  .description('create an API key and print it once')
  .requiredOption('--org <slug>', 'organization slug')
  .requiredOption('--name <name>', 'what the key is for')
  .option('--scopes <list>', 'comma-separated scopes', 'devices:read')
  .action(async (o: { org: string; name: string; scopes: string }) => {
    const { createApiKeyCli } = await import('./token.js');
    await createApiKeyCli(config(), o);
  });

const org = program.command('org').description('manage organizations');
org
  .command('create')
  .description('create an organization with its first admin (invited, unless they have an account)')
  .argument('<slug>', 'lower-case letters, digits and dashes')
  .requiredOption('--name <name>', 'display name')
  .requiredOption('--admin <email>', 'e-mail of its first admin')
  .action(async (slug: string, o: { name: string; admin: string }) => {
    const { createOrgCli } = await import('./people.js');
    await createOrgCli(config(), { slug, ...o });
  });

const secrets = program.command('secrets').description('RULR_SECRET rotation (docs/operations.md, "Rotating RULR_SECRET")');
secrets
  .command('reseal')
  .description('seal what is stored under a previous secret (RULR_SECRET_PREVIOUS) again under RULR_SECRET')
  .option('--dry-run', 'count what would be resealed, write nothing')
  .action(async (o: { dryRun?: boolean }) => {
    const { resealSecrets } = await import('./secrets.js');
    const r = await resealSecrets(config(), { dryRun: o.dryRun });
    if (r.channels.unopenable.length || r.handoffs.unopenable.length || r.channels.raced || r.handoffs.raced) process.exitCode = 1;
  });

const platform = program.command('platform').description('platform operators (may create organizations)');
for (const [name, grant] of [
  ['grant', true],
  ['revoke', false],
] as const) {
  platform
    .command(name)
    .description(grant ? 'make a person a platform operator' : "end a platform operator's right (and their sessions)")
    .argument('<email>', 'their e-mail')
    .action(async (email: string) => {
      const { platformCli } = await import('./people.js');
      await platformCli(config(), { email, grant });
    });
}

program
  .command('compose')
  .description('compose schema/supergraph.graphql from the subgraph SDLs')
  .option('--check', 'exit 1 when the checked-in supergraph is stale')
  .action(async (o: { check?: boolean }) => {
    const { composeCli } = await import('./compose.js');
    await composeCli(o);
  });

program
  .command('simulate')
  .description('publish simulated street-light traffic for the devices of an organization over MQTT')
  .requiredOption('--devices <n>', 'number of devices (the first N street lights by serial)')
  .requiredOption('--rate <r>', 'total messages per second')
  .option('--duration <s>', 'seconds to run (default: until Ctrl-C)')
  .option('--bad-fraction <f>', 'share of deliberately malformed messages, 0..1', '0')
  .option('--org <slug>', 'organization slug', 'demo')
  .option('--topic-prefix <p>', 'prefix for every topic (isolated test runs)')
  .option('--no-commands', 'do not subscribe to commands (telemetry only)')
  .option('--offline-fraction <f>', 'share of devices that are offline (never connect for commands), 0..1', '0')
  .option('--slow-fraction <f>', 'share of devices that answer commands after --slow-ms, 0..1', '0')
  .option('--slow-ms <ms>', 'how long a slow device takes to answer', '5000')
  .option('--fail-fraction <f>', 'share of devices that answer commands failed, 0..1', '0')
  .option('--silent-fraction <f>', 'share of devices that never answer commands, 0..1', '0')
  .option('--behaviour-seed <s>', 'mixed into the hash of device ids that picks the devices of each fraction', '')
  .option('--credentials <file>', 'one connection per device, as itself, with the credentials in this file (rulr credentials issue)')
  .option('--provision-url <url>', "with --credentials: devices missing from the file claim theirs at ingest's POST /provision")
  .option('--provision-key <key>', "the devices' profile's provisioning key")
  .option('--provision-secret <secret>', 'its provisioning secret (or RULR_PROVISION_SECRET)')
  .option('--connect-batch <n>', 'with --credentials: connections opened at once', '50')
  .option('--refused-retry-s <s>', 'with --credentials: how long a refused device retries before it is given up', '30')
  .action(async (o: import('./simulate.js').SimulateCliOptions) => {
    const { simulateCli } = await import('./simulate.js');
    await simulateCli(config(), o);
    process.exit(0);
  });

const credentials = program.command('credentials').description("devices' MQTT credentials");
credentials
  .command('issue')
  .description(
    'issue new MQTT secrets for the first N street lights (and their concentrators) and write them to a 0600 file, shown nowhere else',
  )
  .requiredOption('--devices <n>', 'number of devices (the first N street lights by serial, as rulr simulate takes them)')
  .requiredOption('--out <file>', 'the credentials file (created, or completed: devices it has keep their secret)')
  .option('--org <slug>', 'organization slug', 'demo')
  .option('--rotate', 'issue new secrets also for the devices the file has')
  .option('--grace <s>', 'seconds the previous secrets keep working (default DEVICE_AUTH_ROTATION_GRACE_S)')
  .action(async (o: { org: string; devices: string; out: string; rotate?: boolean; grace?: string }) => {
    const { issueCredentialsCli } = await import('./credentials.js');
    await issueCredentialsCli(config(), o);
  });

program
  .command('send-command')
  .description('send one command to a device through the GraphQL API and print its statuses until it ends')
  .requiredOption('--serial <serial>', 'the device, by serial (e.g. SL-000001)')
  .requiredOption('--name <name>', 'command name the device profile declares (e.g. setDim)')
  .option('--params <json>', 'parameters, a JSON object', '{}')
  .option('--url <url>', 'gateway base URL (default: http://127.0.0.1:GATEWAY_PORT)')
  .option('--token <jwt>', 'bearer token (default: an operator token of --org signed with RULR_SECRET)')
  .option('--org <slug>', 'organization slug, for the default token', 'demo')
  .option('--wait <s>', 'seconds to follow the command', '30')
  .action(async (o: { serial: string; name: string; params: string; url?: string; token?: string; org: string; wait: string }) => {
    const { sendCommandCli } = await import('./send-command.js');
    await sendCommandCli(config(), o);
  });

program.parseAsync(process.argv).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
