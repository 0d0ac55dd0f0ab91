import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Pure tests: no PostgreSQL, Redis or broker (the `unit` project has no global setup, so a test
 * that reaches for a database fails there). `npm run test:unit` runs them alone.
 */
const UNIT = [
  'bench/open-loop.test.ts',
  'cli/credentials-file.test.ts',
  'cli/sim-commands.test.ts',
  'gateway/limits.test.ts',
  'gateway/result-shaping.test.ts',
  'ingest/broker-auth/emqx.test.ts',
  'ingest/dead-letter-log.test.ts',
  'ingest/parse.test.ts',
  'lib/alarms.test.ts',
  'lib/auth.test.ts',
  'lib/command-jobs.test.ts',
  'lib/config.test.ts',
  'lib/db.test.ts',
  'lib/graphql-scalars.test.ts',
  'lib/identity.test.ts',
  'lib/programs.test.ts',
  'lib/programs-assign.test.ts',
  'lib/programs-detect.test.ts',
  'lib/programs-schedule.test.ts',
  'lib/rule-expr.test.ts',
  'lib/rule-notify.test.ts',
  'lib/rules.test.ts',
  'lib/rules-wait.test.ts',
  'lib/schedules.test.ts',
  'lib/sites.test.ts',
  'lib/solar.test.ts',
  'lib/subgraph.test.ts',
  'lib/time-zones.test.ts',
  'subgraphs/alarms/validation.test.ts',
  'subgraphs/devices/loaders.test.ts',
  'subgraphs/devices/query-templates.test.ts',
  'subgraphs/devices/validation.test.ts',
  'subgraphs/metrics/series.test.ts',
  'subgraphs/rules/validation.test.ts',
  'test/deploy-broker.test.ts',
  'test/deploy-compose.test.ts',
  'test/deploy-k8s.test.ts',
  'test/deploy-pgbouncer.test.ts',
  'test/gateway-composition.test.ts',
  'test/gateway-limits.test.ts',
  'test/npm-scripts.test.ts',
  'test/readme-commands.test.ts',
  'test/readme-config.test.ts',
  'test/readme-queries.test.ts',
];

/**
 * Integration tests left out of the PgBouncer pass: they use no PostgreSQL (Redis or a broker
 * only), or they must talk to PostgreSQL directly (migrations hold a session-level advisory lock;
 * see docs/operations.md, PgBouncer).
 */
const NOT_THROUGH_PGBOUNCER = [
  'gateway/realtime/realtime.test.ts',
  'ingest/ack-gate.test.ts',
  'ingest/realtime.test.ts',
  'test/db-types.test.ts',
  'test/migrations.test.ts',
  'test/timescale-mode.test.ts',
];

/** What only the PgBouncer pass can show (transaction pooling's own cases). */
const PGBOUNCER_ONLY = ['test/pgbouncer.test.ts'];

/**
 * PgBouncer (transaction mode) the `pgbouncer` project runs the integration tests through; empty
 * (`TEST_PG_POOLER_URL=`) leaves that pass out. scripts/setup-services.sh starts this one.
 */
const POOLER = process.env.TEST_PG_POOLER_URL ?? 'postgres://postgres@127.0.0.1:6433';

const exclude = [...configDefaults.exclude, 'dist/**', '.cache/**'];

/**
 * Mosquitto 2.1.2 built by scripts/mosquitto-2.1.sh (setup-services runs it): the version
 * docker-compose.yml pins. When it is there, project `mosquitto-2.1` runs the broker tests again
 * against it (the integration project runs them against the machine's Mosquitto 2.0).
 */
const MOSQUITTO_21 = fileURLToPath(new URL('./.cache/mosquitto-2.1.2/build/', import.meta.url));
const MOSQUITTO_21_BUILD = existsSync(`${MOSQUITTO_21}src/mosquitto`)
  ? {
      RULR_TEST_MOSQUITTO: `${MOSQUITTO_21}src/mosquitto`,
      RULR_TEST_DYNSEC_PLUGIN: `${MOSQUITTO_21}plugins/dynamic-security/mosquitto_dynamic_security.so`,
    }
  : undefined;
const BROKER_TESTS = ['test/mosquitto-dynsec.test.ts', 'test/simulate-auth.test.ts'];

/**
 * Browser tests: the console in headless Chromium against the whole platform and the simulator
 * (test/support/platform.ts, test/support/browser.ts); project `browser`, `npm run test:browser`.
 */
const BROWSER = ['test/browser/**/*.test.ts'];

export default defineConfig({
  // One graphql realm: @apollo/* (CommonJS) require graphql's CJS build, so ESM imports must get it too.
  resolve: { alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }] },
  // Projects inherit what is set here (`extends: true`, arrays appended): files are chosen per project.
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: UNIT, exclude } },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['**/*.test.ts'],
          exclude: [...exclude, ...UNIT, ...PGBOUNCER_ONLY, ...BROWSER],
          globalSetup: ['./test/support/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'browser',
          include: BROWSER,
          exclude,
          globalSetup: ['./test/support/global-setup.ts', './test/support/console-build.ts'],
          // one platform and one Chromium per file: files one after another on these small machines
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
      ...(MOSQUITTO_21_BUILD
        ? [
            {
              extends: true as const,
              test: {
                name: 'mosquitto-2.1',
                include: BROKER_TESTS,
                exclude,
                globalSetup: ['./test/support/global-setup.ts'],
                env: MOSQUITTO_21_BUILD,
              },
            },
          ]
        : []),
      ...(POOLER
        ? [
            {
              extends: true as const,
              test: {
                name: 'pgbouncer',
                include: ['**/*.test.ts'],
                exclude: [...exclude, ...UNIT, ...NOT_THROUGH_PGBOUNCER, ...BROWSER],
                globalSetup: ['./test/support/global-setup.ts'],
                env: { TEST_PG_POOLER_URL: POOLER },
              },
            },
          ]
        : []),
    ],
  },
});
