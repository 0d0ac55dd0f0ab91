// bench:command-jobs: a fleet job over a 10,000-device site against simulated devices that answer at
// once (issue 12 item 6; docs/commands.md, "Fleet jobs"):
//   1. the job: `sendSiteCommand` through the gateway of the whole platform in this process (every
//      role, as `rulr start all`), no rollout limit, until every device's command is SUCCEEDED; time
//      from the request to the last SUCCEEDED, commands/s, the queue depth over time (commands still
//      QUEUED, in flight SENT/DELIVERED, waiting `commands` BullMQ jobs) and the process RSS;
//   2. the baseline, in the same run: the same number of commands as bare mqtt.js QoS 1 publishes to
//      the same kind of simulated devices on a broker of its own, until every `succeeded` reply arrived.
// The devices: one mqtt.js client subscribed to `devices/+/commands` (test/support/command-fleet.ts),
// replying `received` then `succeeded` on each device's reply topic.
// Env: BENCH_DEVICES (default 10,000), BENCH_WRITE=0 (do not write bench/RESULTS.md).
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Queue } from 'bullmq';
import mqtt from 'mqtt';
import { startNoDropBroker } from '../ingest/testing/broker.js';
import { COMMANDS_QUEUE, deviceCommandTopic, encodeCommandMessage, parseCommandReply } from '../lib/contracts/commands.js';
import { queuePrefix } from '../lib/contracts/queues.js';
import { createRedis } from '../lib/redis.js';
import { TestFleet } from '../test/support/command-fleet.js';
import { REDIS_URL } from '../test/support/env.js';
import { startPlatform } from '../test/support/platform.js';
import { benchDatabase } from './database.js';

const DEVICES = Number(process.env.BENCH_DEVICES ?? 10_000);
const DB_NAME = 'rulr_bench_command_jobs';

export interface DepthSample {
  /** seconds since the request */
  s: number;
  queued: number;
  inFlight: number;
  succeeded: number;
  waitingJobs: number;
  rssMb: number;
}

export interface CommandJobsBenchResult {
  devices: number;
  /** request → every command SUCCEEDED */
  jobMs: number;
  jobPerS: number;
  /** bare publish → every `succeeded` reply */
  bareMs: number;
  barePerS: number;
  samples: DepthSample[];
  peakRssMb: number;
  started: string;
  load0: number;
  load1: number;
}

const mb = (n: number) => Math.round(n / 1048576);
const until = async (cond: () => Promise<boolean> | boolean, ms: number, what: string, every = 100) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
};

/** The baseline: `n` commands published bare at QoS 1 to simulated devices, until every `succeeded` reply arrived. */
export async function bareRoundTrip(n: number): Promise<{ ms: number }> {
  const broker = await startNoDropBroker();
  const ids = Array.from({ length: n }, () => randomUUID());
  const fleet = await new TestFleet(ids, broker.url).connect();
  const pub = await mqtt.connectAsync(broker.url, { clientId: `bare-${randomUUID()}`, protocolVersion: 5 });
  try {
    let done = 0;
    pub.on('message', (_topic, payload) => {
      if (parseCommandReply(payload).status === 'succeeded') done++;
    });
    await pub.subscribeAsync('devices/+/commands/reply', { qos: 1 });
    const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
    const t0 = performance.now();
    await Promise.all(
      ids.map((id) =>
        pub.publishAsync(
          deviceCommandTopic(id),
          encodeCommandMessage({ id: randomUUID(), name: 'setDim', params: { level: 50 }, expiresAt }),
          {
            qos: 1,
          },
        ),
      ),
    );
    await until(() => done >= n, 300_000, 'bare replies', 5);
    return { ms: performance.now() - t0 };
  } finally {
    await pub.endAsync();
    await fleet.close();
    await broker.stop();
  }
}

/** A fleet job over `n` street lights of the demo city on the whole platform, until every command SUCCEEDED. */
export async function platformJob(n: number): Promise<{ ms: number; samples: DepthSample[]; peakRssMb: number }> {
  const t = await benchDatabase(DB_NAME);
  // COMMANDS_PORT: startPlatform leaves the commands subgraph on its default port (4005), which may be taken
  const p = await startPlatform({ devices: n, database: t, name: 'bench-command-jobs', logLevel: 'warn', env: { COMMANDS_PORT: '0' } });
  const redis = createRedis(REDIS_URL);
  const queue = new Queue(COMMANDS_QUEUE, { connection: redis, prefix: queuePrefix(p.cfg.REDIS_PREFIX) });
  let fleet: TestFleet | undefined;
  let peak = 0;
  const rss = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 100);
  try {
    // direct devices only: the concentrators' children would be answered on gateways/{id}/commands
    await p.sql.query('update devices set parent_id = null where org_id = $1 and parent_id is not null', [p.orgId]);
    const profile = (
      await p.sql.query<{ id: string }>(`select id from device_profiles where org_id = $1 and name = 'Street-light controller'`, [p.orgId])
    ).rows[0]?.id;
    const city = (await p.sql.query<{ id: string }>('select id from sites where org_id = $1 and parent_id is null', [p.orgId])).rows[0]?.id;
    const ids = (await p.sql.query<{ id: string }>('select id from devices where profile_id = $1', [profile])).rows.map((r) => r.id);
    const admin = await p.login(p.admin);
    const declared = await p.gql(
      admin,
      'mutation($p: ID!) { setProfileCommands(profileId: $p, commands: [{ name: "setDim", params: { type: "object", properties: { level: { type: "integer", minimum: 0, maximum: 100 } }, required: ["level"] } }]) { id } }',
      { p: profile },
    );
    if (declared.errors) throw new Error(`setProfileCommands: ${JSON.stringify(declared.errors)}`);
    fleet = await new TestFleet(ids, p.broker.url).connect();
    for (let i = 0; i < ids.length; i += 1000) await fleet.announce(ids.slice(i, i + 1000));
    await until(
      async () => {
        const pl = redis.pipeline();
        for (const id of ids) pl.hget(`${p.cfg.REDIS_PREFIX}status:${id}`, 'online');
        return ((await pl.exec()) ?? []).every(([, v]) => v === '1');
      },
      120_000,
      'devices online',
      500,
    );
    // the workers' answers to the status messages (`online` jobs) are not part of the job
    await until(async () => (await queue.getWaitingCount()) + (await queue.getActiveCount()) === 0, 300_000, 'commands queue idle', 500);
    const operator = await p.login(p.operator);
    const samples: DepthSample[] = [];
    let jobId: string | undefined;
    const t0 = performance.now();
    const sample = async () => {
      const counts: Record<string, number> = {};
      if (jobId)
        for (const r of (
          await p.sql.query<{ status: string; n: number }>(
            'select status, count(*)::int as n from commands where job_id = $1 group by status',
            [jobId],
          )
        ).rows)
          counts[r.status] = r.n;
      const released = Object.values(counts).reduce((a, b) => a + b, 0);
      samples.push({
        s: Math.round((performance.now() - t0) / 100) / 10,
        queued: (counts.QUEUED ?? 0) + (jobId ? ids.length - released : 0),
        inFlight: (counts.SENT ?? 0) + (counts.DELIVERED ?? 0),
        succeeded: counts.SUCCEEDED ?? 0,
        waitingJobs: await queue.getWaitingCount(),
        rssMb: mb(process.memoryUsage().rss),
      });
      return counts.SUCCEEDED ?? 0;
    };
    const r = await p.gql<{ sendSiteCommand: { id: string; progress: { total: number } } }>(
      operator,
      'mutation($i: SendSiteCommandInput!) { sendSiteCommand(input: $i) { id progress { total } } }',
      { i: { siteId: city, profileId: profile, name: 'setDim', params: { level: 50 }, timeoutSeconds: 120 } },
    );
    if (!r.data) throw new Error(`sendSiteCommand: ${JSON.stringify(r.errors)}`);
    jobId = r.data.sendSiteCommand.id;
    if (r.data.sendSiteCommand.progress.total !== ids.length)
      throw new Error(`job covers ${r.data.sendSiteCommand.progress.total} devices`);
    let last = 0;
    await until(
      async () => {
        const now = performance.now();
        if (now - last < 500) {
          const { rows } = await p.sql.query<{ n: number }>(
            `select count(*)::int as n from commands where job_id = $1 and status = 'SUCCEEDED'`,
            [jobId],
          );
          return (rows[0]?.n ?? 0) >= ids.length;
        }
        last = now;
        return (await sample()) >= ids.length;
      },
      600_000,
      'every command SUCCEEDED',
      50,
    );
    const ms = performance.now() - t0;
    await sample();
    return { ms, samples, peakRssMb: mb(peak) };
  } finally {
    clearInterval(rss);
    await fleet?.close();
    await queue.close();
    redis.disconnect();
    await p.close();
    await t.drop();
  }
}

export async function benchCommandJobs(devices = DEVICES): Promise<CommandJobsBenchResult> {
  const started = new Date().toISOString().slice(0, 16);
  const load0 = loadavg()[0] ?? 0;
  const bare = await bareRoundTrip(devices);
  const job = await platformJob(devices);
  return {
    devices,
    jobMs: Math.round(job.ms),
    jobPerS: Math.round((devices / job.ms) * 1000),
    bareMs: Math.round(bare.ms),
    barePerS: Math.round((devices / bare.ms) * 1000),
    samples: job.samples,
    peakRssMb: job.peakRssMb,
    started,
    load0,
    load1: loadavg()[0] ?? 0,
  };
}

function writeSection(r: CommandJobsBenchResult): void {
  const fmt = (n: number) => n.toLocaleString('en-US');
  const every = Math.max(1, Math.ceil(r.samples.length / 16));
  const shown = r.samples.filter((_, i) => i % every === 0 || i === r.samples.length - 1);
  const section = [
    '<!-- command-jobs:start -->',
    '## Fleet jobs (`npm run bench:command-jobs`)',
    '',
    `Run ${r.started}Z on ${cpus().length} × ${cpus()[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'CPU'}, ${Math.round(totalmem() / 1073741824)} GiB, Node ${process.version}; 1-minute load average ${r.load0.toFixed(1)} before and ${r.load1.toFixed(1)} after. **The machine was shared with other helpers' work during the run: the figures are pessimistic.**`,
    'Command: `npm run bench:command-jobs` (env: `BENCH_DEVICES`).',
    `Setup: own database \`${DB_NAME}\` with the demo organization (${fmt(r.devices)} street lights, made direct devices for the run), every role in this one process (\`startRoles(all)\`, default settings: \`COMMANDS_SWEEP_MS\` 1000, \`COMMANDS_CONCURRENCY\` 4), a private Mosquitto; the devices are one mqtt.js client subscribed to \`devices/+/commands\` that answers \`received\` and \`succeeded\` at once; all online, and the \`commands\` queue idle (their status messages handled), before the request. The job: \`sendSiteCommand\` over the city (no rollout limit) through the gateway, timed from the request to the last SUCCEEDED. Baseline (same run): the same number of commands as bare mqtt.js QoS 1 publishes to the same kind of simulated devices on a broker of its own, until every \`succeeded\` reply arrived (no storage, no queue, no evidence).`,
    '',
    '| measure | fleet job | bare mqtt.js round trip (same run) | ratio |',
    '| --- | ---: | ---: | ---: |',
    `| ${fmt(r.devices)} commands, request → all SUCCEEDED | ${fmt(r.jobMs)} ms | ${fmt(r.bareMs)} ms | ${(r.jobMs / r.bareMs).toFixed(2)}× |`,
    `| commands/s | ${fmt(r.jobPerS)} | ${fmt(r.barePerS)} | ${(r.jobPerS / r.barePerS).toFixed(2)}× |`,
    '',
    `Peak RSS of the process (platform, devices and bench together): ${fmt(r.peakRssMb)} MB.`,
    '',
    'Queue depth over the job (queued: not yet sent, the unreleased targets included; in flight: SENT or DELIVERED; waiting jobs: the `commands` BullMQ queue):',
    '',
    '| s | queued | in flight | succeeded | waiting jobs | RSS MB |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...shown.map((x) => `| ${x.s} | ${fmt(x.queued)} | ${fmt(x.inFlight)} | ${fmt(x.succeeded)} | ${x.waitingJobs} | ${x.rssMb} |`),
    '<!-- command-jobs:end -->',
  ].join('\n');
  const path = new URL('./RESULTS.md', import.meta.url);
  const md = readFileSync(path, 'utf8');
  const re = /<!-- command-jobs:start -->[\s\S]*<!-- command-jobs:end -->/;
  writeFileSync(path, re.test(md) ? md.replace(re, section) : `${md.trimEnd()}\n\n${section}\n`);
  console.log('[bench:command-jobs] bench/RESULTS.md updated');
}

async function main() {
  const r = await benchCommandJobs();
  console.log(JSON.stringify({ ...r, samples: r.samples.length }));
  if (process.env.BENCH_WRITE !== '0') writeSection(r);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
