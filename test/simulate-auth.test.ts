import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCredentials } from '../cli/credentials.js';
import { readCredentialsFile, writeCredentialsFile } from '../cli/credentials-file.js';
import { type SimulateCliOptions, type SimulateResult, simulateCli } from '../cli/simulate.js';
import { freePort } from '../ingest/testing/broker.js';
import { ARTIFACTS, type Platform, startPlatform } from './support/platform.js';
import { poll } from './support/poll.js';

// The whole platform on the Mosquitto configuration RULR ships (anonymous off, dynamic security kept
// by the workers' sync, ingest and workers on their service accounts), and `rulr simulate` in
// per-device mode: every lamp and concentrator connects as itself with credentials that an operator
// issued (`rulr credentials issue`) or that the device claimed through provisioning.

let p: Platform;
let dir: string;
let file: string;
let token: string;
let ingestUrl: string;
let provision: { key: string; secret: string };
let lights: { id: string; serial: string; parent: string | null }[];
/** a direct lamp of the first ten whose secret the test spoils in the file */
let spoiled: { id: string; serial: string };

beforeAll(async () => {
  const ingestPort = await freePort();
  ingestUrl = `http://127.0.0.1:${ingestPort}`;
  p = await startPlatform({
    devices: 20,
    broker: 'secured',
    withoutProgram: true,
    name: 'simulate-auth',
    env: { INGEST_PORT: String(ingestPort), PROVISION_RATE_LIMIT: '100' },
  });
  token = await p.login(p.operator);
  dir = mkdtempSync(join(tmpdir(), 'rulr-sim-auth-'));
  file = join(dir, 'credentials.json');
  const r = await p.sql.query<{ id: string; serial: string; parent_id: string | null }>(
    `select d.id, d.serial, d.parent_id from devices d join device_profiles pr on pr.id = d.profile_id
     where d.org_id = $1 and not pr.is_gateway order by d.serial`,
    [p.orgId],
  );
  lights = r.rows.map((d) => ({ id: d.id, serial: d.serial, parent: d.parent_id }));
  const profile = await p.sql.query<{ id: string }>(
    `select id from device_profiles where org_id = $1 and name = 'Street-light controller'`,
    [p.orgId],
  );
  const admin = await p.login(p.admin);
  const set = await p.gql<{ setProfileProvisioning: { key: string; secret: string } }>(
    admin,
    'mutation($p: ID!) { setProfileProvisioning(profileId: $p, mode: PRE_REGISTERED) { key secret } }',
    { p: profile.rows[0]?.id },
  );
  if (!set.data) throw new Error(JSON.stringify(set.errors));
  provision = set.data.setProfileProvisioning;
}, 120_000);

/** the simulator's output of every run, kept beside the platform's log */
const simLog: string[] = [];

afterAll(async () => {
  writeFileSync(join(ARTIFACTS, 'simulate-auth.simulate.log'), simLog.join('\n'));
  await p?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** readings stored for a device (taken at or after `since`) */
const readings = async (deviceId: string, since = new Date(0)) =>
  Number(
    (await p.sql.query<{ n: string }>('select count(*) as n from device_metrics where device_id = $1 and time >= $2', [deviceId, since]))
      .rows[0]?.n,
  );

/** Waits for a reading of `lamp` taken at or after `since`. */
const talking = (lamp: { id: string }, since: Date) =>
  poll(
    `${lamp.id} talking since ${since.toISOString()}`,
    () => readings(lamp.id, since),
    (n) => n > 0,
    60_000,
  );

const audits = async (action: string) =>
  Number(
    (await p.sql.query<{ n: string }>('select count(*) as n from audit_logs where org_id = $1 and action = $2', [p.orgId, action])).rows[0]
      ?.n,
  );

/** `rulr simulate --devices 20 --credentials <file> --provision-url …` in this process, until `stop`. */
function run(extra: Partial<SimulateCliOptions> = {}) {
  const stop = new AbortController();
  const lines: string[] = [];
  const options: SimulateCliOptions = {
    devices: '20',
    rate: '40',
    org: 'demo',
    credentials: file,
    provisionUrl: ingestUrl,
    provisionKey: provision.key,
    connectBatch: '5',
    refusedRetryS: '8',
    ...extra,
  };
  const done: Promise<SimulateResult> = simulateCli(p.cfg, options, {
    signal: stop.signal,
    log: (l) => {
      lines.push(l);
      simLog.push(`${new Date().toISOString()} ${l}`);
    },
    env: { RULR_PROVISION_SECRET: provision.secret },
  });
  return { stop: () => stop.abort(), done, lines };
}

describe('rulr simulate against a broker that authenticates devices', { timeout: 180_000 }, () => {
  let first: SimulateResult;
  let claimed: string[];

  it('connects each lamp as itself (issued or claimed credentials), stores their telemetry, answers a command, and counts the refused one', async () => {
    // an operator issues credentials for the first ten lamps and their concentrators (a 0600 file)
    const issued = await issueCredentials(p.cfg, { org: 'demo', devices: 10, out: file, log: () => undefined });
    expect(issued.issued).toBeGreaterThanOrEqual(10);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const f = readCredentialsFile(file, 'demo');
    spoiled = lights.slice(0, 10).find((l) => !l.parent) as { id: string; serial: string };
    const good = lights.slice(0, 10).filter((l) => !l.parent && l.id !== spoiled.id);
    const theirs = f.devices.get(spoiled.id);
    if (!theirs) throw new Error(`${spoiled.serial} has no issued credential`);
    f.devices.set(spoiled.id, { ...theirs, secret: 'not-the-secret' });
    writeCredentialsFile(file, f);
    const before = new Set(f.devices.keys());

    const sim = run();
    // the other ten claim their own credentials at ingest (single-use), written to the file as they come
    const claimedLamp = lights.slice(10).find((l) => !l.parent);
    const child = lights.find((l) => l.parent && before.has(l.parent));
    expect(claimedLamp && child && good[0]).toBeTruthy();
    for (const l of [good[0], claimedLamp, child] as { id: string; serial: string }[])
      await poll(
        `${l.serial}'s telemetry stored`,
        () => readings(l.id),
        (n) => n > 0,
        90_000,
      );

    // a command end to end: the platform's workers publish on the lamp's own topic, the lamp answers as itself
    const lamp = good[0] as { id: string };
    const sent = await p.gql<{ sendCommand: { id: string } }>(token, 'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }', {
      i: { deviceId: lamp.id, name: 'setDim', params: { level: 42 } },
    });
    if (!sent.data) throw new Error(JSON.stringify(sent.errors));
    const c = await poll(
      'setDim',
      () =>
        p.gql<{ command: { status: string; result: { state?: unknown } | null } }>(
          token,
          'query($id: ID!) { command(id: $id) { status result } }',
          {
            id: sent.data?.sendCommand.id,
          },
        ),
      (r) => ['SUCCEEDED', 'FAILED', 'EXPIRED'].includes(r.data?.command.status ?? ''),
    );
    expect(c.data?.command.status).toBe('SUCCEEDED');
    expect(c.data?.command.result?.state).toEqual({ level: 42, on: true });

    // the spoiled lamp is given up after its retry window; the rest kept going
    await poll(
      'the refusal',
      async () => sim.lines.join('\n'),
      (t) => t.includes(`${spoiled.serial} (${spoiled.id}) refused`),
      30_000,
    );
    await talking(lamp, new Date());
    sim.stop();
    first = await sim.done;
    expect(first.refused).toBe(1);
    expect(first.refusedDevices[0]?.serial).toBe(spoiled.serial);
    expect(first.refusedDevices[0]?.reason).toMatch(/Bad User Name or Password|Not authorized/);
    expect(await readings(spoiled.id)).toBe(0);
    expect(first.executed).toBeGreaterThanOrEqual(1);

    const after = readCredentialsFile(file, 'demo');
    claimed = [...after.devices.keys()].filter((id) => !before.has(id));
    expect(claimed).toContain(claimedLamp?.id);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // every lamp with a credential (its own or its concentrator's) was simulated, the others counted
    const speaking = lights.filter((l) => after.devices.has(l.parent ?? l.id));
    expect(first.noCredentials).toBe(lights.length - speaking.length);
    expect(first.connected).toBe(new Set(speaking.map((l) => l.parent ?? l.id)).size - 1);
  });

  it('reuses the saved credentials after a restart: nothing is claimed again', async () => {
    expect(claimed.length).toBeGreaterThan(0);
    const provisioned = await audits('device.provisioned');
    const lamp = lights.find((l) => claimed.includes(l.id)) as { id: string; serial: string };
    const restart = new Date();
    const sim = run({ refusedRetryS: '1' });
    await talking(lamp, restart);
    sim.stop();
    const again = await sim.done;
    expect(await audits('device.provisioned')).toBe(provisioned);
    expect(again.connected).toBe(first.connected);
  });

  it("lets no simulated device publish as another: the broker refuses A on B's topics and under B's client id", async () => {
    const f = readCredentialsFile(file, 'demo');
    const [a, b] = lights.filter((l) => !l.parent && l.id !== spoiled.id && f.devices.has(l.id));
    if (!a || !b) throw new Error('two direct lamps with credentials expected');
    const ca = f.devices.get(a.id) as { username: string; secret: string };
    const connect = (clientId: string) =>
      mqtt.connectAsync(p.broker.url, { clientId, username: ca.username, password: ca.secret, protocolVersion: 5, reconnectPeriod: 0 });
    await expect(connect(b.id)).rejects.toThrow();
    const c = await connect(a.id);
    c.on('error', () => undefined);
    try {
      const code = await c.publishAsync(`devices/${b.id}/telemetry`, JSON.stringify({ power: 1 }), { qos: 1 }).then(
        () => 0,
        (e: { code?: number }) => e.code ?? -1,
      );
      expect(code).toBe(135);
    } finally {
      await c.endAsync(true);
    }
    const stored = await readings(b.id);
    await new Promise((r) => setTimeout(r, 300));
    expect(await readings(b.id)).toBe(stored);
  });
});
