import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BehaviourShares, behaviourOf, type CommandBehaviour } from '../cli/sim-commands.js';
import { type Platform, startPlatform } from './support/platform.js';
import { poll } from './support/poll.js';

// The whole platform (startPlatform: every role, its own database, Redis prefix and broker) with
// `rulr simulate` as a child process, its misbehaving devices chosen by device id, so the test
// knows in advance which lamp is offline, fails or stays silent.
const SHARES: BehaviourShares = { offline: 0.15, fail: 0.15, silent: 0.15, seed: 'simulate-commands' };
const FLAGS = [
  '--offline-fraction',
  '0.15',
  '--fail-fraction',
  '0.15',
  '--silent-fraction',
  '0.15',
  '--behaviour-seed',
  'simulate-commands',
];

let p: Platform;
let token: string;
let lamps: { id: string; serial: string; parent: string | null; behaviour: CommandBehaviour }[];

beforeAll(async () => {
  p = await startPlatform({
    devices: 60,
    simulate: { rate: 20, inProcess: false, args: FLAGS },
    name: 'simulate-commands',
    withoutProgram: true,
  });
  token = await p.login(p.operator);
  const r = await p.sql.query<{ id: string; serial: string; parent_id: string | null }>(
    `select d.id, d.serial, d.parent_id from devices d join device_profiles pr on pr.id = d.profile_id
     where d.org_id = $1 and not pr.is_gateway order by d.serial`,
    [p.orgId],
  );
  lamps = r.rows.map((d) => ({ id: d.id, serial: d.serial, parent: d.parent_id, behaviour: behaviourOf(d.id, SHARES) }));
  // The simulator (a child process, slow to boot on a busy machine) is up once its lamps are online:
  // it subscribes to their command topics before it announces them.
  for (const l of lamps.filter((x) => x.behaviour !== 'offline'))
    await poll(
      `${l.serial} online`,
      () =>
        p.gql<{ device: { status: { online: boolean } | null } }>(token, 'query($id: ID!) { device(id: $id) { status { online } } }', {
          id: l.id,
        }),
      (r) => r.data?.device.status?.online === true,
      120_000,
    );
}, 240_000);

afterAll(async () => {
  await p?.close();
});

const lamp = (behaviour: CommandBehaviour, child = false) => {
  const l = lamps.find((x) => x.behaviour === behaviour && (x.parent !== null) === child);
  if (!l) throw new Error(`no ${behaviour}${child ? ' child' : ''} lamp among ${lamps.length}`);
  return l;
};

interface Cmd {
  id: string;
  status: string;
  error: string | null;
  result: { state?: Record<string, unknown> } | null;
  history: { status: string; evidence: Record<string, unknown> }[];
}

async function send(deviceId: string, name: string, params: Record<string, unknown>): Promise<string> {
  const r = await p.gql<{ sendCommand: { id: string } }>(
    token,
    'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id status } }',
    { i: { deviceId, name, params } },
  );
  if (!r.data) throw new Error(JSON.stringify(r.errors));
  return r.data.sendCommand.id;
}

async function command(id: string): Promise<Cmd> {
  const r = await p.gql<{ command: Cmd }>(
    token,
    'query($id: ID!) { command(id: $id) { id status error result history { status evidence } } }',
    { id },
  );
  if (!r.data?.command) throw new Error(JSON.stringify(r.errors));
  return r.data.command;
}

async function reported(deviceId: string): Promise<{ reported: Record<string, unknown>; inSync: boolean; version: number } | null> {
  const r = await p.gql<{ device: { state: { reported: Record<string, unknown>; inSync: boolean; version: number } | null } }>(
    token,
    'query($id: ID!) { device(id: $id) { state { reported inSync version } } }',
    { id: deviceId },
  );
  return r.data?.device.state ?? null;
}

describe('rulr simulate obeys commands', { timeout: 120_000 }, () => {
  it('a simulated lamp answers setDim received then succeeded, and reports the level on its status state', async () => {
    const l = lamp('normal');
    const id = await send(l.id, 'setDim', { level: 37 });
    const c = await poll(
      'setDim',
      () => command(id),
      (c) => c.status === 'SUCCEEDED' || c.status === 'FAILED',
    );
    expect(c.status).toBe('SUCCEEDED');
    expect(c.history.map((h) => h.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    expect(c.history[1]?.evidence).toMatchObject({ broker: 'PUBACK' });
    expect(c.result?.state).toEqual({ level: 37, on: true });
    const s = await poll(
      'reported state',
      () => reported(l.id),
      (s) => s?.reported.level === 37,
    );
    expect(s?.reported).toMatchObject({ level: 37, on: true });
  });

  it('a lamp behind a concentrator gets its command through gateways/{id}/commands and answers for itself', async () => {
    const l = lamp('normal', true);
    const id = await send(l.id, 'switch', { on: false });
    const c = await poll(
      'switch',
      () => command(id),
      (c) => c.status === 'SUCCEEDED' || c.status === 'FAILED',
    );
    expect(c.status).toBe('SUCCEEDED');
    expect(c.history[1]?.evidence).toMatchObject({ topic: `gateways/${l.parent}/commands` });
    await poll(
      'reported on',
      () => reported(l.id),
      (s) => s?.reported.on === false,
    );
  });

  it('the desired state set through the API reaches the lamp, which then reports it (in sync)', async () => {
    const l = lamps.filter((x) => x.behaviour === 'normal' && !x.parent)[1] ?? lamp('normal');
    const version = (await reported(l.id))?.version ?? 0;
    const r = await p.gql(
      token,
      'mutation($d: ID!, $v: Int!) { setDesiredState(deviceId: $d, patch: {level: 25}, expectedVersion: $v) { version } }',
      {
        d: l.id,
        v: version,
      },
    );
    expect(r.errors).toBeUndefined();
    const s = await poll(
      'in sync',
      () => reported(l.id),
      (s) => s?.inSync === true && s.reported.level === 25,
    );
    expect(s?.reported).toMatchObject({ level: 25, on: true });
  });

  it('the failing, silent and offline fractions behave as their device ids predict', async () => {
    const [fail, silent, offline] = [lamp('fail'), lamp('silent'), lamp('offline')];
    const ids = await Promise.all([fail, silent, offline].map((l) => send(l.id, 'setDim', { level: 80 })));
    const failed = await poll(
      'fail',
      () => command(ids[0] as string),
      (c) => c.status === 'FAILED',
    );
    expect(failed.error).toContain('simulated failure');
    expect(failed.history.map((h) => h.status)).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'FAILED']);
    // by now the silent lamp has had its command as long as the failing one: handed over, never acknowledged
    await new Promise((r) => setTimeout(r, 1500));
    expect((await command(ids[1] as string)).status).toBe('SENT');
    expect((await command(ids[2] as string)).status).toBe('QUEUED');
  });
});

describe('the quick start shows one command end to end', { timeout: 150_000 }, () => {
  const MAIN = fileURLToPath(new URL('../cli/main.ts', import.meta.url));

  it('rulr send-command prints QUEUED, SENT, DELIVERED, SUCCEEDED with their evidence and the console link', async () => {
    const l = lamps.filter((x) => x.behaviour === 'normal')[2] ?? lamp('normal');
    // no --token: the command issues an operator token of the demo organization itself
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        '--import',
        'tsx',
        MAIN,
        'send-command',
        '--url',
        p.url,
        '--serial',
        l.serial,
        '--name',
        'setDim',
        '--params',
        '{"level":40}',
        '--wait',
        '60',
      ],
      { env: { ...process.env, DATABASE_URL: p.t.url, RULR_SECRET: p.cfg.RULR_SECRET, LOG_LEVEL: 'silent' }, timeout: 140_000 },
    );
    const steps = stdout
      .split('\n')
      .map((line) => /^ {2}(QUEUED|SENT|DELIVERED|SUCCEEDED|FAILED)\b/.exec(line)?.[1])
      .filter(Boolean);
    expect(steps).toEqual(['QUEUED', 'SENT', 'DELIVERED', 'SUCCEEDED']);
    expect(stdout).toContain('broker PUBACK on ');
    const result = /^ {2}result: (.*)$/m.exec(stdout)?.[1];
    expect(JSON.parse(result ?? 'null')).toEqual({ state: { level: 40, on: true } });
    expect(stdout).toContain(`in the console: ${p.url}/#/devices/${l.id}`);
  });

  it('scripts/quickstart.sh runs it against a demo lamp after printing the console banner', () => {
    const script = readFileSync(fileURLToPath(new URL('../scripts/quickstart.sh', import.meta.url)), 'utf8');
    const banner = script.indexOf('RULR console: \u0024{console_url}');
    const send = script.indexOf('node bin/rulr.js send-command');
    expect(banner).toBeGreaterThan(0);
    expect(send).toBeGreaterThan(banner);
    expect(script.slice(send, send + 300)).toContain('--name setDim');
  });
});
