import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../../ingest/testing/fixtures.js';
import { type Browser, launchBrowser } from '../support/browser.js';
import { type Platform, startPlatform } from '../support/platform.js';

// The harness the console tests stand on: every role of `rulr start all`, the demo data, the
// simulator and a headless Chromium, all real.
let p: Platform;
let browser: Browser;

beforeAll(async () => {
  p = await startPlatform({ devices: 40, simulate: { rate: 40 }, name: 'harness' });
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await p?.close();
});

describe('platform harness', () => {
  it('serves the gateway with the demo organization, and the simulator’s readings reach the API', async () => {
    const token = await p.login(p.admin);
    await until(
      async () => {
        const r = await p.gql<{ devices: { totalCount: number; edges: { node: { latest: unknown[] } }[] } }>(
          token,
          '{ devices(first: 1, filter: { search: "SL-000001" }) { totalCount edges { node { latest { metric value } } } } }',
        );
        return (r.data?.devices.edges[0]?.node.latest.length ?? 0) > 0;
      },
      30_000,
      'simulated readings of SL-000001',
    );
    const r = await p.gql<{ devices: { totalCount: number } }>(token, '{ devices(first: 1) { totalCount } }');
    // 40 street lights and the demo concentrators
    expect(r.data?.devices.totalCount).toBeGreaterThanOrEqual(40);
  });

  it('gives the viewer a viewer token and the API refuses it a write', async () => {
    const token = await p.login(p.viewer);
    const r = await p.gql(token, 'mutation { createSite(input: { name: "Nope" }) { id } }');
    expect(r.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('publishes a reading as a device would and the API shows it', async () => {
    const token = await p.login(p.operator);
    const id = await p.deviceId('SL-000002');
    // a metric the harness's simulator never sends: its own readings of SL-000002 cannot replace this one as the latest
    await p.publish(id, { harnessProbe: 231.5 });
    await until(
      async () => {
        const r = await p.gql<{ device: { latest: { metric: string; value: number }[] } }>(
          token,
          'query ($id: ID!) { device(id: $id) { latest { metric value } } }',
          { id },
        );
        return r.data?.device.latest.some((l) => l.metric === 'harnessProbe' && l.value === 231.5) ?? false;
      },
      20_000,
      'the published reading',
    );
  });

  it('opens a page of the gateway in headless Chromium and saves a screenshot', async () => {
    const page = await browser.page();
    const res = await page.goto(`${p.url}/healthz`);
    expect(res?.status()).toBe(200);
    expect(await browser.screenshot(page, 'harness-healthz')).toMatch(/harness-healthz\.png$/);
    expect(await page.textContent('body')).toContain('ok');
    // the only complaint of a bare JSON page is the missing favicon, and it is reported with its URL
    expect(browser.errors.filter((e) => !e.includes('/favicon.ico'))).toEqual([]);
  });
});
