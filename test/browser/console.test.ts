import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Supergraph } from '@apollo/federation-internals';
import { Kind, parse } from 'graphql';
import type { Page, Request } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { measureDocument } from '../../gateway/limits.js';
import { SUPERGRAPH_PATH } from '../../gateway/supergraph.js';
import { type Browser, launchBrowser } from '../support/browser.js';
import { TestDevice } from '../support/command-device.js';
import { signIn, submitSignIn } from '../support/console.js';
import { ARTIFACTS, type Platform, startPlatform } from '../support/platform.js';

const DIM = {
  name: 'setDim',
  description: 'Dim level in percent.',
  params: { type: 'object', properties: { level: { type: 'integer', minimum: 0, maximum: 100 } }, required: ['level'] },
  timeoutSeconds: 30,
};

/** Polls `f` until it gives a value (every 500 ms, at most `ms`). */
async function eventually<T>(f: () => Promise<T | undefined | null>, what: string, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

// The console in headless Chromium against the whole platform (every role, demo data, the
// simulator) — as a person uses it. console/README.md lists the routes and labels used here.
let p: Platform;
let browser: Browser;
let page: Page;
let name = '';
/** GraphQL requests the page made: operation text and whether it carried a bearer token. */
let requests: { op: string; token: boolean }[] = [];
const SIMULATED = 180;
/**
 * Demo street lights the simulator leaves alone, one per test that publishes or commands; none
 * behind a concentrator (the seed puts every fourth light behind one: its commands go to the
 * concentrator's topic, and no test device answers there).
 */
const QUIET = ['SL-000191', 'SL-000192', 'SL-000195', 'SL-000194'] as const;

/** The gateway's API schema, to measure each request as its cost limit does (gateway/limits.ts). */
const apiSchema = Supergraph.build(readFileSync(SUPERGRAPH_PATH, 'utf8')).apiSchema().toGraphQLJSSchema();
/** operation name → the largest estimated cost, depth and aliases of the console's requests in this file */
const costs = new Map<string, { cost: number; depth: number; aliases: number }>();

beforeAll(async () => {
  // the simulator publishes for the first SIMULATED street lights; QUIET ones hear only the tests
  p = await startPlatform({ devices: 200, simulate: { rate: 50, devices: SIMULATED }, name: 'console' });
});
afterAll(async () => {
  // what the console asks of the gateway's limits, for docs/console.md
  const rows = [...costs].sort((a, b) => b[1].cost - a[1].cost).map(([op, m]) => ({ op, ...m }));
  writeFileSync(join(ARTIFACTS, 'console-query-costs.json'), `${JSON.stringify(rows, null, 1)}\n`);
  await p?.close();
});

beforeEach(async (ctx) => {
  name = ctx.task.name;
  browser = await launchBrowser();
  page = await browser.page();
  requests = [];
  page.on('request', (r: Request) => {
    if (!r.url().endsWith('/graphql') || r.method() !== 'POST') return;
    requests.push({ op: r.postData() ?? '', token: /^Bearer \S+/.test(r.headers().authorization ?? '') });
  });
});
afterEach(async (ctx) => {
  // every request the page sent fits the gateway's limits, as measured by the gateway itself
  for (const r of requests) {
    const { query } = JSON.parse(r.op) as { query: string };
    const doc = parse(query);
    const m = measureDocument(doc, { schema: apiSchema });
    const op =
      doc.definitions.flatMap((d) => (d.kind === Kind.OPERATION_DEFINITION ? [d.name?.value ?? query.slice(0, 40)] : []))[0] ?? '?';
    if (m.cost > (costs.get(op)?.cost ?? -1)) costs.set(op, m);
    expect(m.cost, op).toBeLessThanOrEqual(p.cfg.GATEWAY_MAX_COST);
    expect(m.aliases, op).toBeLessThanOrEqual(p.cfg.GATEWAY_MAX_ALIASES);
  }
  // the page as it was when the test failed (CI keeps test-results/)
  if (ctx.task.result?.state === 'fail') await browser.screenshot(page, `failed-${name}`).catch(() => undefined);
  await browser?.close();
});

/** Declares setDim on the device's profile (the demo profile declares no commands). */
async function declareDim(deviceId: string): Promise<void> {
  const token = await p.login(p.admin);
  const d = await p.gql<{ device: { profile: { id: string } } }>(token, 'query ($id: ID!) { device(id: $id) { profile { id } } }', {
    id: deviceId,
  });
  const r = await p.gql(token, 'mutation ($p: ID!, $c: [CommandSpecInput!]!) { setProfileCommands(profileId: $p, commands: $c) { id } }', {
    p: d.data?.device.profile.id,
    c: [DIM],
  });
  expect(r.errors).toBeUndefined();
}

/** Requests that need no token: signing in and exchanging a refresh token. */
const anonymous = (op: string) => /\b(login|refreshSession)\s*\(/.test(op);

describe('console', () => {
  it('signs in with e-mail and password and lands on the fleet map with the admin role', async () => {
    await signIn(page, p.url, p.admin);
    await expect.poll(() => page.getByTestId('role').textContent()).toBe('admin');
    await expect.poll(() => page.getByRole('region', { name: 'Fleet map' }).count()).toBe(1);
    await browser.screenshot(page, 'sign-in');
    // every API request after signing in carries the user's token
    expect(requests.filter((r) => !anonymous(r.op)).length).toBeGreaterThan(0);
    expect(requests.filter((r) => !anonymous(r.op) && !r.token)).toEqual([]);
    expect(browser.errors).toEqual([]);
  });

  it('shows the devices on the fleet map, with the site tree beside it', async () => {
    await signIn(page, p.url, p.admin);
    const status = page.getByTestId('map-status');
    // the demo's street lights and concentrators in the first view, loaded by the map's bounding box
    await expect.poll(async () => Number(await status.getAttribute('data-loaded')), { timeout: 30_000 }).toBeGreaterThan(10);
    const drawn = await page.evaluate(() => {
      const e = (
        globalThis as unknown as { performance: { getEntriesByName(n: string): { detail?: { points?: number } }[] } }
      ).performance.getEntriesByName('rulr:map-drawn')[0];
      return e?.detail?.points ?? 0;
    });
    expect(drawn).toBeGreaterThan(10);
    // zoom out (the map's own control) until the loaded devices are in view, as a person would
    const zoomOut = page.getByRole('button', { name: 'Zoom out' });
    for (let i = 0; i < 6 && Number(await status.getAttribute('data-in-view')) === 0; i++) {
      await zoomOut.click();
      await page.waitForTimeout(300);
    }
    await expect.poll(async () => Number(await status.getAttribute('data-in-view')), { timeout: 20_000 }).toBeGreaterThan(10);
    // the points are drawn on the map's canvas (Leaflet's canvas renderer), tiles or not
    expect(await page.getByTestId('fleet-map').locator('canvas').count()).toBeGreaterThan(0);
    await expect.poll(() => page.getByTestId('device-link').count()).toBeGreaterThan(0);
    await expect.poll(() => page.getByTestId('site-tree').getByText('Lumen City').count()).toBeGreaterThan(0);
    await browser.screenshot(page, 'fleet-map');
    expect(browser.errors).toEqual([]);
  });

  it('opens the map on the extent of the organization’s devices and outlines the sites on the plain background', async () => {
    const token = await p.login(p.viewer);
    const ext = await p.gql<{ deviceExtent: { devices: number } }>(token, '{ deviceExtent { devices } }');
    const located = ext.data?.deviceExtent.devices ?? 0;
    expect(located).toBeGreaterThan(100);
    await signIn(page, p.url, p.viewer);
    const status = page.getByTestId('map-status');
    // the first view holds every located device: no zooming needed to see them all
    await expect.poll(async () => Number(await status.getAttribute('data-in-view')), { timeout: 30_000 }).toBe(located);
    // the city, its four districts and their streets, each outlined by the hull of its devices
    await expect.poll(async () => Number(await status.getAttribute('data-outlines')), { timeout: 20_000 }).toBeGreaterThanOrEqual(5);
    const labels = await page.locator('.leaflet-tooltip.site-label').allTextContents();
    expect(labels).toEqual(expect.arrayContaining(['Lumen City', 'Old Town', 'Harbour', 'University', 'Riverside']));
    // no tile server configured: nothing but the canvas the outlines and devices are drawn on
    expect(await page.locator('.leaflet-tile').count()).toBe(0);
    expect(await page.getByTestId('fleet-map').locator('canvas').count()).toBeGreaterThan(0);
    await browser.screenshot(page, 'fleet-map-outlines');
    expect(browser.errors).toEqual([]);
  });

  it('refuses a wrong password with a message and stays on the sign-in page', async () => {
    await submitSignIn(page, p.url, { email: p.admin.email, password: 'wrong password' });
    await expect.poll(() => page.getByRole('alert').count()).toBeGreaterThan(0);
    expect(page.url()).not.toMatch(/#\/map/);
    await expect.poll(() => page.getByRole('form', { name: 'Sign in' }).count()).toBe(1);
  });

  it('signs out and the session is revoked: its refresh token no longer works', async () => {
    await signIn(page, p.url, p.operator);
    const refreshToken = await page.evaluate(() => {
      const s = (
        globalThis as unknown as { localStorage: { length: number; key(i: number): string | null; getItem(k: string): string | null } }
      ).localStorage;
      for (let i = 0; i < s.length; i++) {
        const v = s.getItem(s.key(i) ?? '');
        if (v && v.length > 20) return v;
      }
      return null;
    });
    expect(refreshToken).toBeTruthy();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect.poll(() => page.getByRole('form', { name: 'Sign in' }).count()).toBe(1);
    const r = await p.gql<{ refreshSession: { token: string } }>(
      null,
      'mutation ($t: String!) { refreshSession(refreshToken: $t) { token } }',
      { t: refreshToken },
    );
    expect(r.data?.refreshSession?.token).toBeUndefined();
    expect(r.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });
  it('opens a device and watches a value change after an MQTT publish made by the test', async () => {
    const id = await p.deviceId(QUIET[0]);
    await signIn(page, p.url, p.operator);
    await page.goto(`${p.url}/#/devices/${id}`);
    await expect.poll(() => page.getByTestId('device-page').getAttribute('data-device-id'), { timeout: 20_000 }).toBe(id);
    const voltage = page.getByTestId('latest-voltage');
    // the page subscribes to telemetryUpdated on load; publish until the first value shows (a
    // message published before the subscription is live is only in the next page load)
    await expect
      .poll(
        async () => {
          await p.publish(id, { voltage: 228.25 });
          return (await voltage.count()) ? voltage.textContent() : null;
        },
        { timeout: 30_000, interval: 1000 },
      )
      .toBe('228.25 V');
    await browser.screenshot(page, 'device-before');
    await p.publish(id, { voltage: 241.75, power: 61.5 });
    await expect.poll(() => voltage.textContent(), { timeout: 20_000 }).toBe('241.75 V');
    await expect.poll(() => page.getByTestId('latest-power').textContent(), { timeout: 20_000 }).toBe('61.50 W');
    // the reading went through ingest into storage: the API has it too
    const token = await p.login(p.operator);
    const r = await p.gql<{ device: { latest: { metric: string; value: number }[] } }>(
      token,
      'query ($id: ID!) { device(id: $id) { latest { metric value } } }',
      { id },
    );
    expect(r.data?.device.latest.find((l) => l.metric === 'voltage')?.value).toBe(241.75);
    await browser.screenshot(page, 'device-live');
    expect(browser.errors).toEqual([]);
  });

  it('acknowledges and assigns in the alarms page an alarm raised by a rule created through the API', async () => {
    const id = await p.deviceId(QUIET[1]);
    const token = await p.login(p.operator);
    const type = `E2E overcurrent ${Date.now()}`;
    const rule = await p.gql<{ createRule: { id: string } }>(token, 'mutation ($i: CreateRuleInput!) { createRule(input: $i) { id } }', {
      i: { name: type, metric: 'current', operator: 'GT', threshold: 8, severity: 'MINOR', alarmType: type, autoClear: false },
    });
    expect(rule.errors).toBeUndefined();
    // published until the workers, whose rule cache learns of the new rule, raise its alarm
    const alarmId = await eventually(async () => {
      await p.publish(id, { current: 9.5 });
      const r = await p.gql<{ alarms: { edges: { node: { id: string; type: string } }[] } }>(
        token,
        'query ($d: ID!) { alarms(first: 20, filter: { deviceId: $d }) { edges { node { id type } } } }',
        { d: id },
      );
      return r.data?.alarms.edges.find((e) => e.node.type === type)?.node.id;
    }, 'the rule’s alarm');

    await signIn(page, p.url, p.operator);
    await page.goto(`${p.url}/#/alarms?device=${id}`);
    const row = page.locator(`[data-testid="alarm"][data-alarm-id="${alarmId}"]`);
    await expect.poll(() => row.getAttribute('data-status'), { timeout: 20_000 }).toBe('ACTIVE_UNACK');
    await row.getByLabel(`Comment on ${type}`).fill('crew sent');
    await row.getByRole('button', { name: 'Acknowledge' }).click();
    await expect.poll(() => row.getAttribute('data-status'), { timeout: 20_000 }).toBe('ACTIVE_ACK');
    expect(await row.getByRole('button', { name: 'Acknowledge' }).count()).toBe(0);
    await browser.screenshot(page, 'alarm-acknowledged');
    // assign it to the operator from the row's select (the organization's members)
    const members = await p.gql<{ users: { id: string; email: string; name: string }[] }>(token, '{ users { id email name } }');
    const me = members.data?.users.find((u) => u.email === p.operator.email);
    expect(me).toBeDefined();
    await row.getByLabel(`Assign ${type} to`).selectOption(me?.id ?? '');
    await expect.poll(() => row.getByTestId('alarm-assignee').textContent(), { timeout: 20_000 }).toBe(me?.name || me?.email);
    const a = await p.gql<{
      alarm: { acknowledged: boolean; status: string; rule: { id: string } | null; assignedTo: string | null };
    }>(token, 'query ($id: ID!) { alarm(id: $id) { acknowledged status rule { id } assignedTo } }', { id: alarmId });
    expect(a.data?.alarm).toEqual({
      acknowledged: true,
      status: 'ACTIVE_ACK',
      rule: { id: rule.data?.createRule.id },
      assignedTo: `user:${me?.id}`,
    });
    expect(browser.errors).toEqual([]);
  });

  it('sends a dim command from the device page and sees it reach SUCCEEDED', async () => {
    const id = await p.deviceId(QUIET[2]);
    expect((await p.sql.query('select parent_id from devices where id = $1', [id])).rows[0]?.parent_id).toBeNull();
    await declareDim(id);
    const token = await p.login(p.operator);
    // The city's lighting program gave every light a desired level at start-up and queued a
    // setState for it (held while the light is offline): the light reports that level when it
    // comes online, runs the setState, then the dim (one command in flight per device).
    const r0 = await p.gql<{ device: { state: { desired: Record<string, unknown> } | null } }>(
      token,
      'query ($id: ID!) { device(id: $id) { state { desired } } }',
      { id },
    );
    const device = await new TestDevice(id, p.broker.url).connect({ state: r0.data?.device.state?.desired ?? {} });
    try {
      await signIn(page, p.url, p.operator);
      await page.goto(`${p.url}/#/devices/${id}`);
      const form = page.getByRole('form', { name: 'Command setDim' });
      await expect.poll(() => form.count(), { timeout: 20_000 }).toBe(1);
      await form.getByRole('spinbutton').fill('40');
      await form.getByRole('button', { name: 'Send setDim' }).click();
      const row = page.getByRole('table', { name: 'Recent commands' }).locator('tbody tr', { hasText: 'setDim' });
      await expect.poll(() => row.count(), { timeout: 20_000 }).toBe(1);
      // the status moves live (commandUpdated) to SUCCEEDED once the test's device answers
      await expect.poll(() => row.getByTestId('command-status').textContent(), { timeout: 30_000 }).toBe('SUCCEEDED');
      const commandId = await row.getAttribute('data-command-id');
      expect(device.received.filter((m) => m.name === 'setDim').map((m) => [m.id, m.params])).toEqual([[commandId, { level: 40 }]]);
      expect(device.executed).toContain(commandId);
      await browser.screenshot(page, 'command-succeeded');
      const r = await p.gql<{ command: { name: string; status: string; params: unknown } }>(
        token,
        'query ($id: ID!) { command(id: $id) { name status params } }',
        { id: commandId },
      );
      expect(r.data?.command).toEqual({ name: 'setDim', status: 'SUCCEEDED', params: { level: 40 } });
      expect(browser.errors).toEqual([]);
    } finally {
      await device.close();
    }
  });

  it('opens the programs page and sees the year chart with its sunrise and sunset series', async () => {
    await signIn(page, p.url, p.admin);
    await page.goto(`${p.url}/#/programs`);
    const chart = page.getByTestId('year-chart');
    // a point per day of the year (365 or 366)
    await expect.poll(async () => Number(await chart.getAttribute('data-points')), { timeout: 30_000 }).toBeGreaterThanOrEqual(365);
    expect(await chart.locator('canvas').count()).toBeGreaterThan(0);
    const labels = await chart.locator('.u-legend .u-label').allTextContents();
    expect(labels).toEqual(expect.arrayContaining(['sunrise', 'sunset', 'switch on', 'switch off']));
    await expect.poll(() => page.getByTestId('assignment').count()).toBeGreaterThan(0);
    expect((await page.getByTestId('assignment').allTextContents()).join(' ')).toContain('Street lighting');
    await browser.screenshot(page, 'programs-year-chart');
    expect(browser.errors).toEqual([]);
  });

  it('dry-runs a demo rule over the last day of stored readings from the programs page', async () => {
    await signIn(page, p.url, p.operator);
    await page.goto(`${p.url}/#/programs`);
    const button = page.getByRole('button', { name: 'Dry run Undervoltage' });
    await expect.poll(() => button.count(), { timeout: 20_000 }).toBe(1);
    // the simulator's voltages of the last minutes are stored readings of the last day
    const token = await p.login(p.operator);
    await eventually(async () => {
      const r = await p.gql<{ device: { series: unknown[] } }>(
        token,
        'query ($id: ID!, $from: DateTime!, $to: DateTime!) { device(id: $id) { series(metric: "voltage", from: $from, to: $to) { ts } } }',
        { id: await p.deviceId('SL-000001'), from: new Date(Date.now() - 86_400_000).toISOString(), to: new Date().toISOString() },
      );
      return (r.data?.device.series.length ?? 0) > 0 ? true : undefined;
    }, 'stored voltages of SL-000001');
    await button.click();
    const result = page.getByTestId('dry-run-result');
    await expect.poll(() => result.textContent(), { timeout: 30_000 }).toMatch(/over the last 24 hours/);
    const text = (await result.textContent()) ?? '';
    const m =
      /(\d+) alarm\(s\) on (\d+) of (\d+) devices over the last 24 hours \(([\d,]+) stored readings replayed, (\d+) devices in scope/.exec(
        text,
      );
    expect(m, text).not.toBeNull();
    const [, , , evaluated, readings, inScope] = m as RegExpExecArray;
    expect(Number(readings?.replaceAll(',', ''))).toBeGreaterThan(0);
    expect(Number(evaluated)).toBeGreaterThan(0);
    expect(Number(inScope)).toBeGreaterThanOrEqual(200);
    await browser.screenshot(page, 'programs-dry-run');
    expect(browser.errors).toEqual([]);
  });

  it('shows a viewer no write controls, and the API refuses the viewer a write anyway', async () => {
    const id = await p.deviceId(QUIET[3]);
    await declareDim(id);
    // an alarm for the viewer to look at: the demo Overvoltage rule on a breaching reading
    const adminToken = await p.login(p.admin);
    const alarmId = await eventually(async () => {
      await p.publish(id, { voltage: 262 });
      const r = await p.gql<{ alarms: { edges: { node: { id: string } }[] } }>(
        adminToken,
        'query ($d: ID!) { alarms(first: 5, filter: { deviceId: $d }) { edges { node { id } } } }',
        { d: id },
      );
      return r.data?.alarms.edges[0]?.node.id;
    }, 'the Overvoltage alarm');

    await signIn(page, p.url, p.viewer);
    await expect.poll(() => page.getByTestId('role').textContent()).toBe('viewer');
    await page.goto(`${p.url}/#/alarms?device=${id}`);
    const row = page.locator(`[data-testid="alarm"][data-alarm-id="${alarmId}"]`);
    await expect.poll(() => row.count(), { timeout: 20_000 }).toBe(1);
    for (const name of ['Acknowledge', 'Clear', 'Comment']) expect(await row.getByRole('button', { name, exact: true }).count()).toBe(0);
    expect(await row.getByRole('textbox').count()).toBe(0);
    expect(await row.getByRole('combobox').count()).toBe(0);
    // its History stays readable
    expect(await row.getByRole('button', { name: 'History' }).count()).toBe(1);
    await browser.screenshot(page, 'viewer-alarms');

    await page.goto(`${p.url}/#/devices/${id}`);
    await expect.poll(() => page.getByTestId('command-panel').count(), { timeout: 20_000 }).toBe(1);
    expect(await page.getByTestId('command-panel').getByRole('form').count()).toBe(0);
    expect(await page.getByRole('button', { name: /^Send / }).count()).toBe(0);
    await browser.screenshot(page, 'viewer-device');

    await page.goto(`${p.url}/#/programs`);
    await expect.poll(() => page.getByText('Dry runs need the operator role.').count(), { timeout: 20_000 }).toBe(1);
    expect(await page.getByRole('button', { name: /^Dry run / }).count()).toBe(0);

    const viewerToken = await p.login(p.viewer);
    const ack = await p.gql(viewerToken, 'mutation ($id: ID!) { acknowledgeAlarm(id: $id) { id } }', { id: alarmId });
    expect(ack.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const send = await p.gql(viewerToken, 'mutation ($i: SendCommandInput!) { sendCommand(input: $i) { id } }', {
      i: { deviceId: id, name: 'setDim', params: { level: 10 } },
    });
    expect(send.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    // nothing changed: the alarm is still unacknowledged and no setDim was queued (the only
    // command the light may have is the lighting program's setState)
    const after = await p.gql<{ alarm: { acknowledged: boolean }; device: { commands: { edges: { node: { name: string } }[] } } }>(
      adminToken,
      'query ($a: ID!, $d: ID!) { alarm(id: $a) { acknowledged } device(id: $d) { commands(first: 20) { edges { node { name } } } } }',
      { a: alarmId, d: id },
    );
    expect(after.data?.alarm).toEqual({ acknowledged: false });
    expect(after.data?.device.commands.edges.map((e) => e.node.name)).not.toContain('setDim');
    expect(browser.errors).toEqual([]);
  });
});
