import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../ingest/testing/fixtures.js';
import { eventsChannel } from '../lib/contracts/events.js';
import { createDb } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { subscriptionRequirement } from '../lib/subgraphs.js';
import { CommandJobRunner } from '../workers/command-jobs.js';
import { codes } from './devices-fixtures.js';
import { TestFleet } from './support/command-fleet.js';
import {
  type CommandStack,
  commandStack,
  inProcessWorkers,
  JOB,
  type JobView,
  jobOf,
  SEND_SITE,
  type SiteTenant,
  siteTenant,
} from './support/command-stack.js';

let s: CommandStack;
let workers: Awaited<ReturnType<typeof inProcessWorkers>>;
const fleets: TestFleet[] = [];

beforeAll(async () => {
  s = await commandStack();
  workers = await inProcessWorkers(s);
}, 60_000);

afterAll(async () => {
  for (const fl of fleets) await fl.close().catch(() => undefined);
  await workers?.close();
  await s?.close();
});

const PAUSE = `mutation($id: ID!) { pauseCommandJob(id: $id) { id status } }`;
const RESUME = `mutation($id: ID!) { resumeCommandJob(id: $id) { id status } }`;
const CANCEL = `mutation($id: ID!) { cancelCommandJob(id: $id) { id status progress { total canceled } } }`;

async function sendSite(t: SiteTenant, input: Record<string, unknown>): Promise<JobView> {
  return (await s.f.ok(t.operator, SEND_SITE, { i: { siteId: t.siteId, timeoutSeconds: 10, ...input } })).sendSiteCommand as JobView;
}

/** A fleet for the tenant's devices, connected and announced online (ingest has their status in Redis). */
async function fleetOf(t: SiteTenant): Promise<TestFleet> {
  const fl = await new TestFleet(t.deviceIds, s.broker.url).connect();
  fleets.push(fl);
  await fl.announce();
  const prefix = s.f.ctx.config.REDIS_PREFIX;
  await until(
    async () => {
      const p = s.f.ctx.redis.pipeline();
      for (const id of t.deviceIds) p.hget(`${prefix}status:${id}`, 'online');
      return ((await p.exec()) ?? []).every(([, v]) => v === '1');
    },
    30_000,
    'fleet online',
  );
  return fl;
}

const statusIs = (t: SiteTenant, id: string, status: string, ms = 30_000) =>
  until(async () => (await jobOf(s.f, t, id))?.status === status, ms, `job ${status}`);

const sentCount = async (jobId: string) =>
  (await sql<{ n: number }>`select count(*)::int as n from commands where job_id = ${jobId} and sent_at is not null`.execute(s.f.t.db))
    .rows[0]?.n;

const sum = (p: JobView['progress']) => p.queued + p.sent + p.delivered + p.succeeded + p.failed + p.expired + p.canceled;

describe('fleet jobs: API, validation and access', () => {
  it('should refuse unknown commands, bad parameters and bad rollout settings with BAD_USER_INPUT naming the field', async () => {
    const t = await siteTenant(s.f, 3);
    const fieldOf = async (i: Record<string, unknown>) => {
      const r = await s.f.run(t.operator, SEND_SITE, { i: { siteId: t.siteId, timeoutSeconds: 10, ...i } });
      expect(codes(r)).toEqual(['BAD_USER_INPUT']);
      return r.errors?.[0]?.extensions?.field;
    };
    expect(await fieldOf({ name: 'selfDestruct' })).toBe('input.name');
    expect(await fieldOf({ name: 'setDim', params: { level: 101 } })).toBe('input.params.level');
    expect(await fieldOf({ name: 'setDim', profileId: t.profileId, params: {} })).toBe('input.params.level');
    expect(await fieldOf({ name: 'reboot', timeoutSeconds: 0 })).toBe('input.timeoutSeconds');
    expect(await fieldOf({ name: 'reboot', rolloutPerMinute: 0 })).toBe('input.rolloutPerMinute');
    expect(await fieldOf({ name: 'reboot', rolloutIncrease: { factor: 2, everySucceeded: 10 } })).toBe('input.rolloutIncrease');
    expect(await fieldOf({ name: 'reboot', abortWhen: { failedPercent: 0, minDevices: 10 } })).toBe('input.abortWhen.failedPercent');
    // a site with no device accepting it
    const empty = await siteTenant(s.f, 0);
    const r = await s.f.run(empty.operator, SEND_SITE, {
      i: { siteId: empty.siteId, name: 'reboot', timeoutSeconds: 5, profileId: empty.profileId },
    });
    expect(r.errors?.[0]?.extensions?.field).toBe('input.siteId');
    const { rows } = await sql<{
      n: number;
    }>`select count(*)::int as n from command_jobs where org_id in (${t.orgId}, ${empty.orgId})`.execute(s.f.t.db);
    expect(rows[0]?.n).toBe(0);
  });

  it('should snapshot the devices of the whole site subtree whose profile declares the command, and audit every job action', async () => {
    const t = await siteTenant(s.f, 4);
    // a meter in the same district whose profile declares no setDim is left out
    await sql`with p as (insert into device_profiles (org_id, name) values (${t.orgId}, 'meter') returning id)
      insert into devices (org_id, serial, name, profile_id, site_id) select ${t.orgId}, 'M-1', 'Meter', p.id, ${t.districtId} from p`.execute(
      s.f.t.db,
    );
    const job = await sendSite(t, { name: 'setDim', params: { level: 30 }, rolloutPerMinute: 1 });
    expect(job).toMatchObject({ status: 'RUNNING', name: 'setDim', params: { level: 30 }, rolloutPerMinute: 1, abortReason: null });
    expect(job.progress).toEqual({ total: 4, queued: 4, sent: 0, delivered: 0, succeeded: 0, failed: 0, expired: 0, canceled: 0 });
    expect((await s.f.ok(t.operator, PAUSE, { id: job.id })).pauseCommandJob.status).toBe('PAUSED');
    expect((await s.f.ok(t.operator, PAUSE, { id: job.id })).pauseCommandJob.status).toBe('PAUSED'); // repeat: nothing changes
    expect((await s.f.ok(t.operator, RESUME, { id: job.id })).resumeCommandJob.status).toBe('RUNNING');
    const canceled = (await s.f.ok(t.operator, CANCEL, { id: job.id })).cancelCommandJob;
    expect(canceled.status).toBe('CANCELED');
    expect(canceled.progress.canceled).toBe(4);
    expect(codes(await s.f.run(t.operator, RESUME, { id: job.id }))).toEqual(['CONFLICT']);
    const { rows } = await sql<{ action: string; actor: string }>`
      select action, actor from audit_logs where entity_id = ${job.id} order by at`.execute(s.f.t.db);
    expect(rows.map((r) => r.action)).toEqual(['command-job.send', 'command-job.pause', 'command-job.resume', 'command-job.cancel']);
    const list = await s.f.ok(t.viewer, 'query($s: ID) { commandJobs(filter: { siteId: $s }) { edges { node { id status } } } }', {
      s: t.districtId,
    });
    expect(list.commandJobs.edges).toEqual([]); // the job is the city's, not the district's
    const all = await s.f.ok(t.viewer, 'query($s: ID) { commandJobs(filter: { siteId: $s }) { edges { node { id status } } } }', {
      s: t.siteId,
    });
    expect(all.commandJobs.edges).toEqual([{ node: { id: job.id, status: 'CANCELED' } }]);
    const byStatus = (status: string[]) =>
      s.f.ok(
        t.viewer,
        'query($st: [CommandJobStatus!]) { commandJobs(filter: { status: $st }, first: 1) { edges { node { id } } pageInfo { hasNextPage } } }',
        {
          st: status,
        },
      );
    expect((await byStatus(['RUNNING', 'PAUSED'])).commandJobs.edges).toEqual([]);
    expect((await byStatus(['CANCELED'])).commandJobs).toEqual({ edges: [{ node: { id: job.id } }], pageInfo: { hasNextPage: false } });
  });

  it('should let another organization see, send, pause, resume and cancel nothing; viewers and read keys only read', async () => {
    const t = await siteTenant(s.f, 2);
    const other = await siteTenant(s.f, 2);
    const job = await sendSite(t, { name: 'reboot', rolloutPerMinute: 1 });
    expect(await jobOf(s.f, other, job.id)).toBeNull();
    expect(
      (await s.f.ok(other.viewer, 'query($ids: [ID!]!) { commandJobsByIds(ids: $ids) { id } }', { ids: [job.id] })).commandJobsByIds,
    ).toEqual([null]);
    expect((await s.f.ok(other.viewer, '{ commandJobs { edges { node { id } } } }')).commandJobs.edges).toEqual([]);
    const entity = await s.f.ok(other.viewer, 'query($r: [_Any!]!) { _entities(representations: $r) { ... on CommandJob { id } } }', {
      r: [{ __typename: 'CommandJob', id: job.id }],
    });
    expect(entity._entities).toEqual([null]);
    // another organization's site (and profile) is NOT_FOUND, and nothing is queued for its devices
    expect(codes(await s.f.run(other.operator, SEND_SITE, { i: { siteId: t.siteId, name: 'reboot', timeoutSeconds: 5 } }))).toEqual([
      'NOT_FOUND',
    ]);
    expect(
      codes(
        await s.f.run(other.operator, SEND_SITE, {
          i: { siteId: other.siteId, profileId: t.profileId, name: 'reboot', timeoutSeconds: 5 },
        }),
      ),
    ).toEqual(['NOT_FOUND']);
    for (const m of [PAUSE, RESUME, CANCEL]) expect(codes(await s.f.run(other.operator, m, { id: job.id }))).toEqual(['NOT_FOUND']);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from command_jobs where org_id = ${other.orgId}`.execute(s.f.t.db);
    expect(rows[0]?.n).toBe(0);
    // roles and scopes
    const input = { i: { siteId: t.siteId, name: 'reboot', timeoutSeconds: 5 } };
    expect(codes(await s.f.run(t.viewer, SEND_SITE, input))).toEqual(['FORBIDDEN']);
    for (const m of [PAUSE, RESUME, CANCEL]) expect(codes(await s.f.run(t.viewer, m, { id: job.id }))).toEqual(['FORBIDDEN']);
    const readKey = s.f.as(t.orgId, 'admin', 'apikey', ['commands:read']);
    expect(codes(await s.f.run(readKey, SEND_SITE, input))).toEqual(['FORBIDDEN']);
    expect((await s.f.ok(readKey, JOB, { id: job.id })).commandJob.id).toBe(job.id);
    expect(codes(await s.f.run(s.f.as(t.orgId, 'admin', 'apikey', ['devices:read']), JOB, { id: job.id }))).toEqual(['FORBIDDEN']);
    const writeKey = s.f.as(t.orgId, 'admin', 'apikey', ['commands:write']);
    expect((await s.f.ok(writeKey, CANCEL, { id: job.id })).cancelCommandJob.status).toBe('CANCELED');
    expect(subscriptionRequirement('commandJobUpdated')).toEqual({ role: 'viewer', scope: 'commands:read' });
  });

  it("should publish commandJobUpdated on the job's organization's channel only", async () => {
    const t = await siteTenant(s.f, 2);
    const other = await siteTenant(s.f, 2);
    const sub = s.f.ctx.redis.duplicate();
    const got: { channel: string; event: { field: string; orgId: string; filter: Record<string, unknown>; data: { status: string } } }[] =
      [];
    sub.on('message', (channel, msg) => got.push({ channel, event: JSON.parse(msg) }));
    const prefix = s.f.ctx.config.REDIS_PREFIX;
    await sub.subscribe(eventsChannel(prefix, t.orgId), eventsChannel(prefix, other.orgId));
    try {
      const job = await sendSite(t, { name: 'reboot', rolloutPerMinute: 1 });
      await s.f.ok(t.operator, PAUSE, { id: job.id });
      const jobEvents = () => got.filter((g) => g.event.field === 'commandJobUpdated');
      // the send's event, the runner's first step (woken at once) and the pause's, in some order
      await until(() => jobEvents().some((g) => g.event.data.status === 'PAUSED'), 5000, 'the PAUSED job event');
      expect(jobEvents().length).toBeGreaterThanOrEqual(2);
      expect(jobEvents().every((g) => g.channel === eventsChannel(prefix, t.orgId) && g.event.orgId === t.orgId)).toBe(true);
      expect(jobEvents()[0]?.event.filter).toEqual({ jobId: job.id });
      expect(jobEvents().map((g) => g.event.data.status)).toContain('PAUSED');
    } finally {
      sub.disconnect();
    }
  });
});

describe('fleet jobs: rollout (the runner stepped by hand)', () => {
  /**
   * Moves the job's rollout clock an hour ahead with an empty bucket: the background runner (real
   * clock) then releases nothing, and a runner stepped with a clock from that point decides alone.
   */
  async function handClock(jobId: string, db = s.f.t.db) {
    const base = new Date(Date.now() + 3_600_000);
    await sql`update command_jobs set rollout_at = ${base}, rollout_credit = 0 where id = ${jobId}`.execute(db);
    const runner = new CommandJobRunner({ db, redis: s.f.ctx.redis, prefix: s.f.ctx.config.REDIS_PREFIX, logger: createLogger('silent') });
    const orgId = (await sql<{ org_id: string }>`select org_id from command_jobs where id = ${jobId}`.execute(db)).rows[0]
      ?.org_id as string;
    /** one step at `ms` after the base (waiting while the background runner holds the row) */
    const step = async (ms: number) => {
      for (;;) {
        const r = await runner.step(orgId, jobId, new Date(base.getTime() + ms));
        if (r) return r;
        await new Promise((res) => setTimeout(res, 20));
      }
    };
    return { runner, step, at: (ms: number) => new Date(base.getTime() + ms) };
  }

  it('should release devices at the rollout rate, counted per tick, catching up at most 10 s after a stall', async () => {
    const t = await siteTenant(s.f, 40);
    const job = await sendSite(t, { name: 'reboot', rolloutPerMinute: 60 });
    const { runner, step } = await handClock(job.id);
    // the background runner may have stepped it first, releasing what the bucket had (one device)
    const already = (await sql<{ n: number }>`select count(*)::int as n from commands where job_id = ${job.id}`.execute(s.f.t.db)).rows[0]
      ?.n;
    const released = async (ms: number) => (await step(ms)).released.length;
    // 1 device a second: 0 at once, 3 after 3 s, none half a second later, the next after another half,
    // and after a 60 s stall only 10 s worth (10)
    expect([await released(0), await released(3000), await released(3500), await released(4000), await released(64_000)]).toEqual([
      0, 3, 0, 1, 10,
    ]);
    await runner.close();
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from commands where job_id = ${job.id}`.execute(s.f.t.db);
    expect(rows[0]?.n).toBe((already ?? 0) + 14);
    expect((await jobOf(s.f, t, job.id))?.progress).toMatchObject({ total: 40, queued: 40 });
  });

  it('should handle a 10,000-device site with a constant number of statements: one to snapshot, a few per released slice', async () => {
    const t = await siteTenant(s.f, 10_000);
    const before = s.f.t.queries.length;
    const job = await sendSite(t, { name: 'switch', params: { on: true }, rolloutPerMinute: 100_000 });
    const created = s.f.t.queries.slice(before);
    expect(job.progress.total).toBe(10_000);
    expect(created.filter((q) => /insert into command_job_targets/.test(q))).toHaveLength(1);
    const queries: string[] = [];
    const db = createDb({ url: s.f.t.url, poolSize: 2, onQuery: (q) => queries.push(q) });
    try {
      const { runner, at } = await handClock(job.id, db);
      let r: Awaited<ReturnType<typeof runner.step>> = null;
      let used = 0;
      while (!r) {
        const from = queries.length;
        r = await runner.step(t.orgId, job.id, at(10_000));
        used = queries.length - from;
      }
      expect(r.released).toHaveLength(2000); // one slice
      expect(used).toBeLessThanOrEqual(12);
      expect(queries.filter((q) => /insert into commands/.test(q))).toHaveLength(1);
      await runner.close();
    } finally {
      await db.destroy();
    }
    const { rows } = await sql<{ n: number; devices: number }>`
      select count(*)::int as n, count(distinct device_id)::int as devices from commands where job_id = ${job.id}`.execute(s.f.t.db);
    expect(rows[0]?.devices).toBe(rows[0]?.n);
    expect(rows[0]?.n).toBeGreaterThanOrEqual(2000);
    await s.f.ok(t.operator, CANCEL, { id: job.id });
    expect((await jobOf(s.f, t, job.id))?.progress).toMatchObject({ total: 10_000, canceled: 10_000 });
  }, 60_000);
});

describe('fleet jobs with devices (Mosquitto, ingest, workers)', () => {
  it('should stop sending on pause and continue on resume until every device succeeded once', async () => {
    const t = await siteTenant(s.f, 30);
    const fl = await fleetOf(t);
    const job = await sendSite(t, { name: 'setDim', params: { level: 20 }, rolloutPerMinute: 300 });
    await until(async () => ((await sentCount(job.id)) ?? 0) >= 3, 20_000, 'some sent');
    await s.f.ok(t.operator, PAUSE, { id: job.id });
    await new Promise((r) => setTimeout(r, 1500)); // what was being handed to the broker at the pause lands
    const [sent, received] = [await sentCount(job.id), fl.received];
    await new Promise((r) => setTimeout(r, 2000)); // ten ticks of the runner and the sweep
    expect(await sentCount(job.id)).toBe(sent);
    expect(fl.received).toBe(received);
    expect((await jobOf(s.f, t, job.id))?.status).toBe('PAUSED');
    await s.f.ok(t.operator, RESUME, { id: job.id });
    await statusIs(t, job.id, 'COMPLETED');
    const done = (await jobOf(s.f, t, job.id)) as JobView;
    expect(done.progress).toEqual({ total: 30, queued: 0, sent: 0, delivered: 0, succeeded: 30, failed: 0, expired: 0, canceled: 0 });
    expect(t.deviceIds.every((id) => fl.executed.get(id)?.length === 1)).toBe(true);
    // the job's commands, each pointing back at its job
    const page = await s.f.ok(
      t.viewer,
      'query($id: ID!) { commandJob(id: $id) { commands(first: 25, status: [SUCCEEDED]) { edges { node { status device { id } job { id } } } pageInfo { hasNextPage } } } }',
      { id: job.id },
    );
    const edges = page.commandJob.commands.edges as { node: { status: string; device: { id: string }; job: { id: string } } }[];
    expect(edges).toHaveLength(25);
    expect(page.commandJob.commands.pageInfo.hasNextPage).toBe(true);
    expect(edges.every((e) => e.node.job.id === job.id && t.deviceIds.includes(e.node.device.id))).toBe(true);
  }, 60_000);

  it('should claim at the release only the commands of online devices with nothing active: a busy device gets its command after the other ends, an offline one keeps it QUEUED', async () => {
    const t = await siteTenant(s.f, 4);
    const [busy, idle1, idle2, offline] = t.deviceIds as [string, string, string, string];
    const fl = await new TestFleet([busy, idle1, idle2], s.broker.url).connect();
    fleets.push(fl);
    await fl.announce();
    const prefix = s.f.ctx.config.REDIS_PREFIX;
    await until(async () => (await s.f.ctx.redis.hget(`${prefix}status:${idle2}`, 'online')) === '1', 30_000, 'fleet online');
    // another command in flight on `busy` that its device never answers: the sweep fails it at its due time
    const { rows: other } = await sql<{ id: string }>`
      insert into commands (org_id, device_id, name, params, timeout_s, created_by, expires_at, due_at, status, attempts, lease_until, sent_at, history)
      values (${t.orgId}, ${busy}, 'reboot', '{}', 5, 'test', now() + interval '1 hour', now() + interval '5 seconds', 'SENT', 1,
              now() + interval '1 hour', now(), '[]')
      returning id`.execute(s.f.t.db);
    const job = await sendSite(t, { name: 'setDim', params: { level: 20 } });
    type Row = { device_id: string; status: string; attempts: number; sent_at: Date | null };
    const rows = async () =>
      new Map(
        (await sql<Row>`select device_id, status, attempts, sent_at from commands where job_id = ${job.id}`.execute(s.f.t.db)).rows.map(
          (r) => [r.device_id, r],
        ),
      );
    await until(async () => ['SUCCEEDED'].includes((await rows()).get(idle2)?.status ?? ''), 20_000, 'the idle devices succeeded');
    const early = await rows();
    expect(early.get(idle1)).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(early.get(busy)).toMatchObject({ status: 'QUEUED', attempts: 0, sent_at: null }); // one in flight per device
    await until(async () => (await rows()).get(busy)?.status === 'SUCCEEDED', 20_000, 'the busy device succeeded');
    const { rows: ended } = await sql<{ status: string; completed_at: Date }>`
      select status, completed_at from commands where id = ${other[0]?.id}`.execute(s.f.t.db);
    expect(ended[0]?.status).toBe('FAILED');
    const late = await rows();
    expect(Number(late.get(busy)?.sent_at)).toBeGreaterThanOrEqual(Number(ended[0]?.completed_at));
    expect(late.get(offline)).toMatchObject({ status: 'QUEUED', attempts: 0, sent_at: null });
    expect([busy, idle1, idle2].every((id) => fl.executed.get(id)?.length === 1)).toBe(true);
    expect((await jobOf(s.f, t, job.id))?.status).toBe('RUNNING'); // the offline device's command is still active
  }, 60_000);

  it('should cancel a job: its queued commands and unreleased devices are CANCELED and nothing more is sent', async () => {
    const t = await siteTenant(s.f, 20);
    const fl = await fleetOf(t);
    const job = await sendSite(t, { name: 'reboot', rolloutPerMinute: 120 });
    await until(async () => ((await sentCount(job.id)) ?? 0) >= 2, 20_000, 'some sent');
    const canceled = (await s.f.ok(t.operator, CANCEL, { id: job.id })).cancelCommandJob;
    expect(canceled.status).toBe('CANCELED');
    await new Promise((r) => setTimeout(r, 1500)); // what was being handed to the broker lands
    const received = fl.received;
    await new Promise((r) => setTimeout(r, 1500));
    expect(fl.received).toBe(received);
    const p = ((await jobOf(s.f, t, job.id)) as JobView).progress;
    expect(sum(p)).toBe(20);
    expect(p.canceled).toBeGreaterThanOrEqual(20 - fl.executions);
    expect(p.queued).toBe(0);
    expect((await s.f.ok(t.operator, CANCEL, { id: job.id })).cancelCommandJob.status).toBe('CANCELED'); // repeat: unchanged
  }, 60_000);

  it('should abort a 1,000-device job with 5 % failing devices at its threshold: ABORTED with the reason, the rest CANCELED, no more sent', async () => {
    const t = await siteTenant(s.f, 1000);
    const failing = new Set(t.deviceIds.filter((_, i) => i % 20 === 0)); // 5 %, spread over the release order
    const fl = await fleetOf(t);
    fl.behaviourOf = (id) => (failing.has(id) ? 'fail' : 'succeed');
    const job = await sendSite(t, { name: 'reboot', rolloutPerMinute: 1200, abortWhen: { failedPercent: 4, minDevices: 100 } });
    await statusIs(t, job.id, 'ABORTED', 90_000);
    const aborted = (await jobOf(s.f, t, job.id)) as JobView;
    expect(aborted.abortReason).toMatch(/failed or expired .* at or above the abort threshold of 4 % after at least 100 devices/);
    await new Promise((r) => setTimeout(r, 1500)); // what was being handed to the broker lands
    const [sent, received] = [await sentCount(job.id), fl.received];
    await new Promise((r) => setTimeout(r, 2000));
    expect(await sentCount(job.id)).toBe(sent);
    expect(fl.received).toBe(received);
    const p = ((await jobOf(s.f, t, job.id)) as JobView).progress;
    expect(sum(p)).toBe(1000);
    expect(p.queued).toBe(0);
    const ended = p.succeeded + p.failed + p.expired;
    expect(ended).toBeGreaterThanOrEqual(100);
    expect(ended).toBeLessThan(500); // it stopped near the threshold, not at the end
    expect(p.canceled).toBe(1000 - ended - p.sent - p.delivered);
    expect(p.failed).toBeGreaterThanOrEqual(4);
    const { rows } = await sql<{ action: string; actor: string }>`
      select action, actor from audit_logs where entity_id = ${job.id} order by at`.execute(s.f.t.db);
    expect(rows.map((r) => [r.action, r.actor])).toEqual([
      ['command-job.send', `user:${t.operator.subject}`],
      ['command-job.abort', 'system:command-jobs'],
    ]);
  }, 120_000);
});
