import type { Page, Request } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Browser, launchBrowser } from '../support/browser.js';
import { signIn, submitSignIn } from '../support/console.js';
import { type Platform, startPlatform } from '../support/platform.js';

// The console in headless Chromium against the whole platform (every role, demo data, the
// simulator) — as a person uses it. console/README.md lists the routes and labels used here.
let p: Platform;
let browser: Browser;
let page: Page;
let name = '';
/** GraphQL requests the page made: operation text and whether it carried a bearer token. */
let requests: { op: string; token: boolean }[] = [];

beforeAll(async () => {
  p = await startPlatform({ devices: 200, simulate: { rate: 50 }, name: 'console' });
});
afterAll(async () => {
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
  // the page as it was when the test failed (CI keeps test-results/)
  if (ctx.task.result?.state === 'fail') await browser.screenshot(page, `failed-${name}`).catch(() => undefined);
  await browser?.close();
});

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
  it.todo(
    'opens a device and watches a value change after an MQTT publish made by the test (device page merged at 20:40; not written in time)',
  );
  it.todo('acknowledges an alarm raised by a rule (alarms page not merged in time)');
  it.todo(
    'sends a dim command and sees it reach SUCCEEDED (the demo profile declares no commands and the simulator does not answer commands yet)',
  );
  it.todo('opens the programs page and sees the year chart (programs page not merged in time)');
  it.todo('a viewer sees no write controls (device and alarms pages not merged in time)');
});
