import { z } from 'zod';
import { type PortVar, portVar, SUBGRAPHS, type SubgraphName, type UrlVar, urlVar } from './subgraphs.js';
import { allowEntryProblem } from './webhook-guard.js';

/**
 * One declaration of every environment variable RULR reads. The README's configuration table is
 * generated from this list (`npx rulr config --markdown`) and a test fails when the two drift.
 */
export interface ConfigVar<T extends z.ZodTypeAny = z.ZodTypeAny> {
  schema: T;
  description: string;
  /** What the README shows as the default (absent: required or unset). */
  shown?: string;
}

const port = (d: number) => z.coerce.number().int().min(0).max(65535).default(d);
const posInt = (d: number) => z.coerce.number().int().positive().default(d);
const bool = (d: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .default(d ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1' || v === 'yes');

type PortSchema = ReturnType<typeof port>;
type UrlSchema = z.ZodOptional<z.ZodString>;

/** `<NAME>_PORT` of every subgraph in `lib/subgraphs.ts`, so adding one there declares its port. */
const subgraphPorts = Object.fromEntries(
  SUBGRAPHS.map((s) => [
    portVar(s.name),
    { schema: port(s.port), description: `${s.name} subgraph port (${s.summary}).`, shown: String(s.port) },
  ]),
) as { [N in SubgraphName as PortVar<N>]: ConfigVar<PortSchema> };

/** `<NAME>_URL` of every subgraph: where the gateway reaches it when not at SUBGRAPH_HOST and its port. */
const subgraphUrlOverrides = Object.fromEntries(
  SUBGRAPHS.map((s) => [
    urlVar(s.name),
    {
      schema: z.string().url().optional(),
      description: `Override for the ${s.name} subgraph URL (default http://SUBGRAPH_HOST:${portVar(s.name)}/graphql).`,
    },
  ]),
) as { [N in SubgraphName as UrlVar<N>]: ConfigVar<UrlSchema> };

const DEV_SECRET = 'rulr-development-secret-change-me-please-0123456789';

export const configSpec = {
  NODE_ENV: {
    schema: z.enum(['development', 'production', 'test']).default('development'),
    description: 'Runtime mode; `production` turns introspection off and masks internal errors.',
    shown: 'development',
  },
  LOG_LEVEL: {
    schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    description: 'pino log level.',
    shown: 'info',
  },
  DATABASE_URL: {
    schema: z.string().url().default('postgres://postgres@127.0.0.1:5432/rulr'),
    description: 'PostgreSQL primary (read/write), directly or through PgBouncer in transaction mode (`rulr migrate` needs a direct URL).',
    shown: 'postgres://postgres@127.0.0.1:5432/rulr',
  },
  DATABASE_READ_URL: { schema: z.string().url().optional(), description: 'Optional read replica; metrics queries go there when set.' },
  DATABASE_POOL_SIZE: { schema: posInt(10), description: 'Connections per pool per process.', shown: '10' },
  REDIS_URL: {
    schema: z.string().url().default('redis://127.0.0.1:6379'),
    description: 'Redis for the device status and latest-value cache, rate limits, queues and pub/sub.',
    shown: 'redis://127.0.0.1:6379',
  },
  REDIS_PREFIX: {
    schema: z
      .string()
      .regex(/^[a-zA-Z0-9:_-]*$/)
      .default('rulr:'),
    description: 'Prefix for every Redis key, channel and queue (lets several installations share one Redis).',
    shown: 'rulr:',
  },
  MQTT_URL: {
    schema: z.string().url().default('mqtt://127.0.0.1:1883'),
    description: 'MQTT broker ingest subscribes to (and `rulr simulate` publishes to).',
    shown: 'mqtt://127.0.0.1:1883',
  },
  MQTT_CA_FILE: {
    schema: z.string().min(1).optional(),
    description:
      'CA certificate (PEM file) ingest and workers trust for an `mqtts://` MQTT_URL (e.g. `deploy/certs/ca.crt` from `scripts/dev-certs.sh`).',
  },
  MQTT_INGEST_USERNAME: {
    schema: z.string().min(1).max(64).default('rulr-ingest'),
    description: 'MQTT username of the ingest service account (its rights: lib/mqtt-policy.ts).',
    shown: 'rulr-ingest',
  },
  MQTT_INGEST_PASSWORD: {
    schema: z.string().min(16, 'must be at least 16 characters').optional(),
    description: 'Password of the ingest service account; unset: ingest connects without credentials (the anonymous development broker).',
  },
  MQTT_WORKERS_USERNAME: {
    schema: z.string().min(1).max(64).default('rulr-workers'),
    description: 'MQTT username of the workers service account (publishes commands).',
    shown: 'rulr-workers',
  },
  MQTT_WORKERS_PASSWORD: {
    schema: z.string().min(16, 'must be at least 16 characters').optional(),
    description: 'Password of the workers service account; unset: workers connect without credentials.',
  },
  MQTT_PROVISION_USERNAME: {
    schema: z.string().min(1).max(64).default('rulr-provision'),
    description: 'MQTT username new devices use to claim credentials over MQTT (EMQX only; docs/broker-auth.md).',
    shown: 'rulr-provision',
  },
  MQTT_PROVISION_PASSWORD: {
    schema: z.string().min(8).optional(),
    description:
      'Password of the provisioning account (built into firmware, not a secret per device); unset: no MQTT provisioning (HTTP `POST /provision` still works).',
  },
  RULR_SECRET: {
    schema: z.string().min(32, 'must be at least 32 characters').default(DEV_SECRET),
    description:
      'Signs JWTs and the gateway→subgraph identity header, and keys what is stored sealed (notification channel secrets, broker hand-offs). Required (and not the default) in production.',
    shown: '(development value)',
  },
  RULR_SECRET_PREVIOUS: {
    schema: z
      .string()
      .default('')
      .transform((v) =>
        v
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
      )
      .refine((l) => l.every((s) => s.length >= 32), 'each comma-separated secret must be at least 32 characters'),
    description:
      'While RULR_SECRET is rotated: the secrets it replaces (comma-separated), still accepted for tokens, identity headers, sealed values and the device-secret cache, never used to sign or seal; `rulr secrets reseal` moves what is stored to RULR_SECRET (docs/operations.md, "Rotating RULR_SECRET"). Unset: none.',
  },
  JWT_TTL_SECONDS: { schema: posInt(3600), description: 'Lifetime of access tokens issued by `login`.', shown: '3600' },
  JWT_ISSUER: { schema: z.string().default('rulr'), description: 'Issuer claim of tokens RULR signs and expects.', shown: 'rulr' },
  JWKS_URL: {
    schema: z.string().url().optional(),
    description: 'Optional external issuer JWKS; tokens it signs are accepted too (claims `org`, `role`).',
  },
  SESSION_IDLE_S: {
    schema: posInt(604_800),
    description: 'A sign-in session whose refresh token goes unused this long ends (7 days).',
    shown: '604800',
  },
  SESSION_MAX_AGE_S: {
    schema: posInt(2_592_000),
    description: 'A sign-in session ends this long after sign-in, however often it is refreshed (30 days).',
    shown: '2592000',
  },
  SESSION_CACHE_MS: {
    schema: posInt(60_000),
    description:
      'How long a gateway trusts a session it looked up in Redis while it hears the revocation channel (a revocation ends it at once; without the channel every request looks it up).',
    shown: '60000',
  },
  LOGIN_MAX_FAILURES: {
    schema: posInt(5),
    description: 'Failed sign-ins within LOGIN_FAILURE_WINDOW_S that lock an account (unknown addresses alike).',
    shown: '5',
  },
  LOGIN_FAILURE_WINDOW_S: { schema: posInt(900), description: 'Window in which failed sign-ins are counted.', shown: '900' },
  LOGIN_LOCKOUT_S: {
    schema: posInt(900),
    description: 'How long a locked account stays locked, unless an admin unlocks it (`unlockUser`) or its password is reset.',
    shown: '900',
  },
  INVITE_TTL_S: { schema: posInt(604_800), description: 'How long an invitation link works (7 days).', shown: '604800' },
  RESET_TOKEN_TTL_S: { schema: posInt(3600), description: 'How long a password-reset link works.', shown: '3600' },
  RESET_MAX_PER_HOUR: {
    schema: posInt(3),
    description: 'Password-reset mails one address is sent per hour at most (further requests answer the same and send nothing).',
    shown: '3',
  },
  MAIL_CONSOLE_URL: {
    schema: z.string().url().default('http://127.0.0.1:3000'),
    description:
      'Public URL of the console (served by the gateway at `/`), used in mailed links: `<url>/#/accept-invitation?token=…`, `<url>/#/reset-password?token=…`.',
    shown: 'http://127.0.0.1:3000',
  },
  IDENTITY_MAX_AGE_S: {
    schema: posInt(30),
    description:
      "How long a subgraph accepts the gateway's signed identity header (bound to one request's method, path and body; a mutation's also single-use). Covers clock skew between hosts.",
    shown: '30',
  },
  SMTP_URL: {
    schema: z
      .string()
      .url()
      .refine((u) => /^smtps?:\/\//.test(u), 'must start with smtp:// or smtps://')
      .optional(),
    description:
      'Mail server for invitations, password resets and notifications: `smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://…`. Unset: mail is logged in development, and refused in production.',
  },
  SMTP_TIMEOUT_MS: {
    schema: posInt(10_000),
    description: 'Connection, greeting and socket timeout towards the mail server.',
    shown: '10000',
  },
  MAIL_FROM: {
    schema: z.string().min(3).default('RULR <rulr@localhost>'),
    description: 'The `From` of every mail RULR sends.',
    shown: 'RULR <rulr@localhost>',
  },
  GATEWAY_PORT: { schema: port(3000), description: 'Gateway HTTP + WebSocket port.', shown: '3000' },
  CONSOLE_ENABLED: {
    schema: bool(true),
    description: "Serve the operations console (the web app built into `dist/console` by `npm run build`) at the gateway's `/`.",
    shown: 'true',
  },
  CONSOLE_DIR: {
    schema: z.string().min(1).optional(),
    description: 'Folder of the built console (`index.html` and `assets/`). Unset: `dist/console` of this installation.',
  },
  CONSOLE_TILE_URL: {
    schema: z
      .string()
      .regex(/^https?:\/\/[^/?#]+\/.*\{z\}.*\{x\}.*\{y\}/, 'must be an http(s) URL template with {z}, {x} and {y}')
      .optional(),
    description:
      'Map tile URL template for the console (`https://tile.example.org/{z}/{x}/{y}.png`, `{s}` for subdomains); its origin is added to the CSP `img-src`. Unset: no tiles, the map draws sites and devices on a plain background.',
  },
  ...subgraphPorts,
  INGEST_PORT: { schema: port(4010), description: 'ingest health/metrics port.', shown: '4010' },
  INGEST_GROUP: {
    schema: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/)
      .default('ingest'),
    description: 'Shared-subscription group (`$share/<group>/…`): ingest replicas in one group split the traffic.',
    shown: 'ingest',
  },
  INGEST_CLIENT_ID: {
    schema: z.string().min(1).max(64).optional(),
    description: 'Stable MQTT client id of this ingest replica (its persistent session); default `rulr-ingest-<hostname>`.',
  },
  INGEST_SESSION_EXPIRY_S: {
    schema: posInt(3600),
    description: 'MQTT session expiry: how long the broker keeps queuing for a stopped ingest replica before dropping its session.',
    shown: '3600',
  },
  INGEST_BATCH_SIZE: {
    schema: posInt(50000),
    description: 'Most readings per database batch (a batch is written when full or after INGEST_BATCH_MS).',
    shown: '50000',
  },
  INGEST_BATCH_MS: { schema: posInt(50), description: 'Longest wait before a partial batch is written.', shown: '50' },
  INGEST_WRITERS: {
    schema: posInt(2),
    description: 'Database connections writing batches concurrently (each batch is one transaction).',
    shown: '2',
  },
  INGEST_MAX_PENDING: {
    schema: posInt(20000),
    description: 'Unacknowledged messages held in memory (also the MQTT receive maximum, capped at 65535); past it ingest stops reading.',
    shown: '20000',
  },
  INGEST_MAX_PAYLOAD_BYTES: {
    schema: posInt(65536),
    description: 'Larger MQTT payloads go to dead letters (`too_large`).',
    shown: '65536',
  },
  INGEST_DEAD_LETTER_SUMMARY_S: {
    schema: posInt(60),
    description:
      'Interval of the info-level log line that sums up dead letters per reason (each message is logged at debug and kept in the dead-letter store).',
    shown: '60',
  },
  INGEST_DEVICE_CACHE_TTL_S: {
    schema: posInt(300),
    description: 'Device lookup cache lifetime (also invalidated via `<prefix>devices:changed`).',
    shown: '300',
  },
  INGEST_SILENCE_CHECK_S: {
    schema: posInt(30),
    description: 'Interval of the silence check that marks quiet devices offline.',
    shown: '30',
  },
  INGEST_RULE_JOB_MAX_READINGS: {
    schema: posInt(5000),
    description: 'Cap of readings per `rule-eval` job (newest per device and metric are kept).',
    shown: '5000',
  },
  DEVICE_AUTH_ROTATION_GRACE_S: {
    schema: z.coerce.number().int().min(0).max(2_592_000).default(3600),
    description:
      'How long a rotated device secret keeps working beside its replacement, unless `rotateDeviceCredentials(graceSeconds:)` says otherwise.',
    shown: '3600',
  },
  DEVICE_AUTH_CACHE_TTL_S: {
    schema: posInt(86400),
    description: 'How long a verified device secret is remembered (as a keyed hash, in memory and Redis) so a reconnect skips argon2.',
    shown: '86400',
  },
  DEVICE_AUTH_DIRECTORY_TTL_S: {
    schema: posInt(60),
    description:
      'How long ingest holds a credential without re-validating it (it loads them all at start and re-validates them every third of this); device-change notices drop entries at once, this bounds a lost notice.',
    shown: '60',
  },
  DEVICE_AUTH_MAX_FAILURES: {
    schema: posInt(10),
    description:
      'Failed device authentications per username (and per source address ×10) in DEVICE_AUTH_FAILURE_WINDOW_S before further attempts are refused unchecked.',
    shown: '10',
  },
  DEVICE_AUTH_FAILURE_WINDOW_S: { schema: posInt(300), description: 'Window of DEVICE_AUTH_MAX_FAILURES.', shown: '300' },
  DEVICE_AUTH_MAX_HASHING: {
    schema: posInt(16),
    description: 'argon2 verifications one ingest process runs at once; authentications beyond it are refused (the device retries).',
    shown: '16',
  },
  EMQX_AUTH_TOKEN: {
    schema: z.string().min(16).optional(),
    description:
      'When set, `/mqtt/auth` and `/mqtt/acl` answer only requests carrying `Authorization: Bearer <token>` (set the header in deploy/emqx/).',
  },
  EMQX_API_URL: {
    schema: z.string().url().optional(),
    description: 'EMQX REST API (e.g. `http://emqx:18083/api/v5`): workers kick revoked and decommissioned devices off through it.',
  },
  EMQX_API_KEY: { schema: z.string().min(1).optional(), description: 'EMQX API key (with EMQX_API_SECRET) for the kick-out.' },
  EMQX_API_SECRET: { schema: z.string().min(1).optional(), description: 'EMQX API secret.' },
  DYNSEC_ENABLED: {
    schema: bool(false),
    description:
      "Keep Mosquitto's dynamic security in sync with the platform (workers), and hand new secrets to it (devices subgraph, ingest).",
    shown: 'false',
  },
  DYNSEC_ADMIN_USERNAME: {
    schema: z.string().min(1).default('rulr-dynsec'),
    description: 'Dynamic-security admin the sync connects as (the user `mosquitto_ctrl dynsec init` created).',
    shown: 'rulr-dynsec',
  },
  DYNSEC_ADMIN_PASSWORD: { schema: z.string().min(1).optional(), description: 'Its password (required with DYNSEC_ENABLED).' },
  DYNSEC_RECONCILE_S: {
    schema: posInt(300),
    description:
      'Interval of the full reconcile of dynamic security against the database (also run at start), and of the EMQX kick-out sweep.',
    shown: '300',
  },
  DYNSEC_BATCH: {
    schema: z.coerce.number().int().min(1).max(1000).optional(),
    description:
      'Commands per `$CONTROL/dynamic-security/v1` message. Unset: 500 on Mosquitto 2.1 or newer (it saves its file once per message), 100 on 2.0 (it saves after every command, and a large message stalls the broker).',
    shown: '(by version)',
  },
  PROVISION_RATE_LIMIT: {
    schema: posInt(10),
    description: 'Provisioning claims per source (client id or address) and per provisioning key per PROVISION_RATE_WINDOW_S.',
    shown: '10',
  },
  PROVISION_RATE_WINDOW_S: { schema: posInt(60), description: 'Window of PROVISION_RATE_LIMIT.', shown: '60' },
  WORKERS_PORT: { schema: port(4011), description: 'workers health/metrics port.', shown: '4011' },
  RULE_EVAL_CONCURRENCY: {
    schema: posInt(2),
    description: '`rule-eval` jobs one workers process evaluates at once.',
    shown: '2',
  },
  RULE_TIMERS_TICK_MS: {
    schema: posInt(1000),
    description: 'How often the workers fire the durable timers of rules that wait (durations, repeats, no data) that came due.',
    shown: '1000',
  },
  RULE_STATE_CACHE_MAX: {
    schema: posInt(100_000),
    description:
      'Waiting-rule states (rule × device) one workers process keeps in memory between `rule-eval` jobs, least recently used dropped (about 1.4 KB each); PostgreSQL stays the truth.',
    shown: '100000',
  },
  SCHEDULES_TICK_MS: {
    schema: posInt(1000),
    description: 'How often the workers run the cron schedules whose occurrence came due.',
    shown: '1000',
  },
  SUBGRAPH_HOST: {
    schema: z.string().default('127.0.0.1'),
    description: 'Host the gateway uses to reach subgraphs when `*_URL` is not set.',
    shown: '127.0.0.1',
  },
  ...subgraphUrlOverrides,
  GATEWAY_DEV_INTROSPECT: {
    schema: bool(false),
    description:
      'Development only: compose the supergraph from running subgraphs (IntrospectAndCompose) instead of `schema/supergraph.graphql`.',
    shown: 'false',
  },
  GATEWAY_INTROSPECTION: {
    schema: z.enum(['auto', 'true', 'false']).default('auto'),
    description: 'Allow introspection; `auto` = on except in production.',
    shown: 'auto',
  },
  GATEWAY_MAX_DEPTH: { schema: posInt(12), description: 'Maximum selection depth of an operation.', shown: '12' },
  GATEWAY_MAX_ALIASES: { schema: posInt(30), description: 'Maximum aliased fields in an operation.', shown: '30' },
  GATEWAY_MAX_COST: { schema: posInt(20000), description: 'Maximum estimated cost (fields × list sizes).', shown: '20000' },
  GATEWAY_MAX_BODY_BYTES: { schema: posInt(102400), description: 'Maximum HTTP request body.', shown: '102400' },
  GATEWAY_TIMEOUT_MS: { schema: posInt(15000), description: 'Request timeout at the gateway.', shown: '15000' },
  GATEWAY_RATE_LIMIT: { schema: posInt(1200), description: 'Requests per identity per window.', shown: '1200' },
  GATEWAY_RATE_WINDOW_S: { schema: posInt(60), description: 'Rate-limit window in seconds.', shown: '60' },
  GATEWAY_CREDENTIAL_RECHECK_MS: {
    schema: posInt(30_000),
    description:
      'How long an API key check is cached, and how often open WebSocket connections authenticated by an API key are checked again (a revoked or expired key closes them with 4403).',
    shown: '30000',
  },
  REALTIME_PORT: {
    schema: port(3001),
    description: 'Port of the WebSocket-only gateway role (`rulr start realtime`); the full gateway serves graphql-ws on GATEWAY_PORT.',
    shown: '3001',
  },
  REALTIME_MAX_SUBSCRIPTIONS: {
    schema: posInt(100),
    description: 'Active subscriptions one graphql-ws connection may hold.',
    shown: '100',
  },
  REALTIME_SOFT_BUFFER_BYTES: {
    schema: posInt(16384),
    description:
      'Unsent bytes above which a WebSocket client counts as lagging (its telemetry is coalesced per device); with 10,000 clients this bounds send buffers to ~160 MB.',
    shown: '16384',
  },
  REALTIME_HARD_BUFFER_BYTES: {
    schema: posInt(1048576),
    description: 'Queued bytes of a lagging client above which it is disconnected (close 4008).',
    shown: '1048576',
  },
  REALTIME_KEEPALIVE_MS: {
    schema: posInt(30000),
    description: 'WebSocket ping interval; a client missing one pong is dropped.',
    shown: '30000',
  },
  GATEWAY_IN_PROCESS: {
    schema: bool(true),
    description: 'When subgraphs run in the same process (`rulr start all`), call them in process instead of over HTTP.',
    shown: 'true',
  },
  RETENTION_RAW_DAYS: {
    schema: posInt(365),
    description: 'Days of raw telemetry kept (whole partitions dropped by the maintenance worker).',
    shown: '365',
  },
  RETENTION_ROLLUP_DAYS: { schema: posInt(1825), description: 'Days of hourly/daily rollups kept.', shown: '1825' },
  RETENTION_DEAD_LETTER_DAYS: { schema: posInt(30), description: 'Days of dead letters kept.', shown: '30' },
  RETENTION_ALARM_DAYS: {
    schema: posInt(365),
    description: 'Days cleared alarms (with their history) and rule executions are kept; active alarms stay.',
    shown: '365',
  },
  SOLAR_CLUSTER_DEGREES: {
    schema: z.coerce.number().positive().max(1).default(0.1),
    description:
      'Size (degrees) of the location cells lighting programs compute solar events for: devices in one cell share one computation (0.1° ≈ 24 s of solar time east-west).',
    shown: '0.1',
  },
  PROGRAMS_TICK_MS: {
    schema: posInt(1000),
    description: 'How often the program scheduler (workers) looks for due switch events and override starts or ends.',
    shown: '1000',
  },
  COMMANDS_DEFAULT_TIMEOUT_S: {
    schema: posInt(30),
    description:
      'Seconds a sent command may wait for its result when neither the call nor its profile says (then FAILED, and the next one goes).',
    shown: '30',
  },
  COMMANDS_DEFAULT_EXPIRY_S: {
    schema: posInt(86400),
    description:
      'Seconds a command may wait (QUEUED, e.g. for an offline device) before it EXPIRES, when `sendCommand` gives no `expiresAt`.',
    shown: '86400',
  },
  COMMANDS_SWEEP_MS: {
    schema: posInt(1000),
    description:
      'How often the command dispatcher (workers) fires timeouts and expiries and sends commands queued without a job (programs, lost jobs), and how often the fleet-job runner releases the next devices of each job.',
    shown: '1000',
  },
  COMMANDS_LEASE_S: {
    schema: posInt(30),
    description:
      'Seconds a claimed command waits for the broker acknowledgement before another dispatch may send it again (a worker killed mid-send).',
    shown: '30',
  },
  COMMANDS_CONCURRENCY: { schema: posInt(4), description: 'Jobs of the `commands` queue one workers process runs at a time.', shown: '4' },
  PROGRAMS_REPLAN_S: {
    schema: posInt(300),
    description:
      'How often the program scheduler regroups devices into locations without a change notice (new devices, moved devices); a change of programs, assignments or sites replans at once.',
    shown: '300',
  },
  NOTIFY_TICK_MS: {
    schema: posInt(1000),
    description: 'How often the notifier (workers) reads new alarm events, flushes due digests and runs due escalation levels.',
    shown: '1000',
  },
  NOTIFY_DIGEST_WINDOW_S: {
    schema: posInt(30),
    description: 'Grouping window of notifications per site and rule: alarms raised (or cleared) within it are sent as one digest.',
    shown: '30',
  },
  NOTIFY_WEBHOOK_TIMEOUT_MS: {
    schema: posInt(10000),
    description: 'Timeout of one webhook, chat or SMS provider request; a timeout is retried like a 5xx.',
    shown: '10000',
  },
  NOTIFY_ATTEMPTS: {
    schema: posInt(6),
    description: 'Attempts per notification delivery (exponential backoff from NOTIFY_BACKOFF_MS) before it is marked failed.',
    shown: '6',
  },
  NOTIFY_BACKOFF_MS: {
    schema: posInt(2000),
    description: 'First retry delay of a failed delivery; doubled at each further attempt.',
    shown: '2000',
  },
  NOTIFY_WEBHOOK_ALLOW: {
    schema: z
      .string()
      .default('')
      .refine(
        (v) => v.split(',').every((e) => !e.trim() || allowEntryProblem(e.trim()) === null),
        'must be comma-separated IP addresses or CIDR ranges',
      ),
    description:
      'Private, loopback or link-local addresses (comma-separated IPs or CIDR ranges, e.g. `10.1.0.0/16`) that notification webhooks, chat and SMS providers may still reach; every other non-public address is refused (SSRF). Unset: none.',
  },
  PROGRAMS_DETECT_S: {
    schema: posInt(60),
    description: 'How often the expected-state detectors (day burner, dark lamp, dim mismatch) compare lamps with their programs.',
    shown: '60',
  },
  PROGRAMS_DETECT_GRACE_S: {
    schema: posInt(600),
    description: 'How long a lamp may differ from its program (after a switch event) before a detector raises its alarm.',
    shown: '600',
  },
  PROGRAMS_DIM_TOLERANCE: {
    schema: z.coerce.number().int().min(0).max(50).default(5),
    description: 'Percentage points a reported `dimLevel` may differ from the programmed level before it is a dim mismatch.',
    shown: '5',
  },
  PROGRAMS_ON_POWER_W: {
    schema: z.coerce.number().positive().default(5),
    description: 'A lamp drawing less than this (W) counts as dark, whatever its `lampState` says.',
    shown: '5',
  },
} satisfies Record<string, ConfigVar>;

type Spec = typeof configSpec;
export type Config = { [K in keyof Spec]: z.output<Spec[K]['schema']> };

export class ConfigError extends Error {
  constructor(public readonly issues: string[]) {
    super(`Invalid configuration:\n  ${issues.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** The secrets a deployment accepts, newest first: RULR_SECRET (the one that signs and seals), then RULR_SECRET_PREVIOUS. */
export const acceptedSecrets = (cfg: Pick<Config, 'RULR_SECRET' | 'RULR_SECRET_PREVIOUS'>): string[] => [
  cfg.RULR_SECRET,
  ...cfg.RULR_SECRET_PREVIOUS,
];

/** Variables that hold a secret themselves: `rulr config` prints only whether they are set. */
const SECRET_NAME = /(SECRET|PASSWORD|_TOKEN|_API_KEY)(_|$)/;

/**
 * The configuration as `rulr config` prints it: secrets (RULR_SECRET, RULR_SECRET_PREVIOUS, every
 * password, token and API key) shown only as `(set)`, and the password of a URL
 * (`postgres://user:…@host`, `smtp://…`) as `***`.
 */
export function redactedConfig(cfg: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(cfg)) {
    const empty = value === undefined || value === '' || (Array.isArray(value) && value.length === 0);
    if (SECRET_NAME.test(name) && !/_(S|MS)$/.test(name)) out[name] = empty ? value : '(set)';
    else if (typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\/[^/]*@/i.test(value)) out[name] = redactUrl(value);
    else out[name] = value;
  }
  return out;
}

function redactUrl(value: string): string {
  try {
    const u = new URL(value);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(set, not a URL)';
  }
}

/** Reads and validates the environment; a bad value throws a ConfigError naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const out: Record<string, unknown> = {};
  const issues: string[] = [];
  for (const [name, spec] of Object.entries(configSpec) as [string, ConfigVar][]) {
    const raw = env[name] === '' ? undefined : env[name];
    const r = spec.schema.safeParse(raw);
    if (r.success) out[name] = r.data;
    else issues.push(`${name}=${JSON.stringify(raw)}: ${r.error.issues.map((i) => i.message).join('; ')}`);
  }
  const cfg = out as Config;
  if (issues.length === 0 && cfg.NODE_ENV === 'production' && cfg.RULR_SECRET === DEV_SECRET) {
    issues.push('RULR_SECRET: the development default must not be used in production');
  }
  if (issues.length === 0 && cfg.RULR_SECRET_PREVIOUS.includes(cfg.RULR_SECRET)) {
    issues.push('RULR_SECRET_PREVIOUS: must not contain RULR_SECRET itself');
  }
  if (issues.length === 0 && cfg.NODE_ENV === 'production' && cfg.RULR_SECRET_PREVIOUS.includes(DEV_SECRET)) {
    issues.push('RULR_SECRET_PREVIOUS: the development default must not be accepted in production');
  }
  if (issues.length === 0 && cfg.DYNSEC_ENABLED && !cfg.DYNSEC_ADMIN_PASSWORD) {
    issues.push('DYNSEC_ADMIN_PASSWORD: required when DYNSEC_ENABLED is on');
  }
  if (issues.length) throw new ConfigError(issues);
  return cfg;
}

/** The README's configuration table, from the declaration above. */
export function configMarkdown(): string {
  const rows = Object.entries(configSpec as Record<string, ConfigVar>).map(
    ([name, s]) => `| \`${name}\` | ${s.shown === undefined ? '(unset)' : `\`${s.shown}\``} | ${s.description} |`,
  );
  return ['| variable | default | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

/** Where the gateway reaches each subgraph: `<NAME>_URL`, else `http://SUBGRAPH_HOST:<NAME>_PORT/graphql`. */
export function subgraphUrls(cfg: Config): Record<SubgraphName, string> {
  return Object.fromEntries(
    SUBGRAPHS.map((s) => [s.name, cfg[urlVar(s.name)] ?? `http://${cfg.SUBGRAPH_HOST}:${cfg[portVar(s.name)]}/graphql`]),
  ) as Record<SubgraphName, string>;
}

/** The port a subgraph role listens on. */
export const subgraphPort = (cfg: Config, name: SubgraphName): number => cfg[portVar(name)];
