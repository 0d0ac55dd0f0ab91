import { type ChildProcess, spawn } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../ingest/testing/fixtures.js';
import { TestFleet } from './support/command-fleet.js';
import { type CommandStack, commandStack, type JobView, jobOf, SEND_SITE, siteTenant } from './support/command-stack.js';
import { REDIS_URL } from './support/env.js';

let s: CommandStack;
const children: ChildProcess[] = [];
let fleet: TestFleet | undefined;

/** The workers' dispatcher and job runner in a process of their own (workers/testing/run-commands.ts). */
function workers() {
  const child = spawn(process.execPath, ['--import', 'tsx', 'workers/testing/run-commands.ts'], {
    env: {
      ...process.env,
      DATABASE_URL: s.f.t.url,
      REDIS_URL,
      REDIS_PREFIX: s.f.ctx.config.REDIS_PREFIX,
      MQTT_URL: s.broker.url,
      COMMANDS_SWEEP_MS: '200',
      COMMANDS_LEASE_S: '2',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  child.stdout?.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => lines.push(`stderr ${d}`));
  return { child, lines };
}

beforeAll(async () => {
  s = await commandStack();
}, 60_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await fleet?.close().catch(() => undefined);
  await s?.close();
});

describe('fleet jobs across a workers restart', () => {
  it('should complete a job after the workers process is SIGKILLed mid-job: every device executes the command exactly once, nothing lost', async () => {
    const t = await siteTenant(s.f, 120);
    fleet = await new TestFleet(t.deviceIds, s.broker.url).connect();
    await fleet.announce();
    const job = (
      await s.f.ok(t.operator, SEND_SITE, { i: { siteId: t.siteId, name: 'reboot', timeoutSeconds: 30, rolloutPerMinute: 240 } })
    ).sendSiteCommand as JobView;
    const first = workers();
    const succeeded = async () => (await jobOf(s.f, t, job.id))?.progress.succeeded ?? 0;
    await until(async () => (await succeeded()) >= 50, 60_000, `50 succeeded (${first.lines.slice(-3).join(' | ')})`);
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const atKill = (await jobOf(s.f, t, job.id)) as JobView;
    expect(atKill.status).toBe('RUNNING');
    expect(atKill.progress.succeeded).toBeLessThan(120);
    // replies keep arriving while no workers run: ingest queues them in Redis
    await new Promise((r) => setTimeout(r, 1000));
    const second = workers();
    await until(
      async () => (await jobOf(s.f, t, job.id))?.status === 'COMPLETED',
      90_000,
      `completed (${second.lines.slice(-3).join(' | ')})`,
    );
    const done = (await jobOf(s.f, t, job.id)) as JobView;
    expect(done.progress).toEqual({ total: 120, queued: 0, sent: 0, delivered: 0, succeeded: 120, failed: 0, expired: 0, canceled: 0 });
    const { rows } = await sql<{ n: number; devices: number }>`
      select count(*)::int as n, count(distinct device_id)::int as devices from commands where job_id = ${job.id}`.execute(s.f.t.db);
    expect(rows[0]).toEqual({ n: 120, devices: 120 });
    // each device executed its one command once (a re-offer after a lapsed claim is answered, not executed again)
    expect(t.deviceIds.map((id) => fleet?.executed.get(id)?.length ?? 0)).toEqual(t.deviceIds.map(() => 1));
    expect(fleet.executions).toBe(120);
  }, 180_000);
});
