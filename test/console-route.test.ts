import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway } from '../gateway/index.js';
import { consoleCsp, tileOrigin } from '../gateway/routes/console.js';
import { testContext } from '../gateway/test-fixtures.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';

// The gateway serving the built console at `/` (docs/console.md): a real Vite build of console/ into
// a temporary folder, served by a real gateway on an ephemeral port.

const root = fileURLToPath(new URL('..', import.meta.url));
const TILES = 'https://{s}.tiles.example.org/{z}/{x}/{y}.png';

describe('the console route of the gateway', () => {
  let dir = '';
  let base = '';
  let ctx: RoleContext;
  let gw: RoleHandle;
  let jsAsset = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rulr-console-'));
    execFileSync(join(root, 'node_modules/.bin/vite'), ['build', '-c', 'console/vite.config.mjs', '--outDir', dir, '--logLevel', 'error'], {
      cwd: root,
      stdio: 'pipe',
    });
    jsAsset = readdirSync(join(dir, 'assets')).find((f) => /^index-.+\.js$/.test(f)) ?? '';
    ctx = testContext({ CONSOLE_DIR: dir, CONSOLE_TILE_URL: TILES });
    gw = await startGateway(ctx, { port: 0, local: {}, realtime: false });
    base = `http://127.0.0.1:${gw.port}`;
  }, 120_000);

  afterAll(async () => {
    await gw?.close();
    await ctx?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves index.html at / with no-cache and the strict content-security policy', async () => {
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self';");
    expect(csp).toContain("style-src 'self';");
    expect(csp).toContain("connect-src 'self' ws: wss:");
    expect(csp).toContain("img-src 'self' data: https://*.tiles.example.org");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
  });

  it('has no inline script, inline style or inline event handler in index.html', async () => {
    const html = await (await fetch(`${base}/`)).text();
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/\ssrc="\/assets\/[^"]+\.js"/);
      expect(body?.trim()).toBe('');
    }
    expect(html).not.toMatch(/<style\b/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(html).toMatch(/<link rel="stylesheet"[^>]* href="\/assets\/index-[^"]+\.css"/);
  });

  it('gives the map its tile URL in a meta tag', async () => {
    const html = await (await fetch(`${base}/`)).text();
    expect(html).toContain(`<meta name="rulr-tile-url" content="${TILES}">`);
  });

  it('serves hashed assets as immutable with their content type', async () => {
    expect(jsAsset).not.toBe('');
    const res = await fetch(`${base}/assets/${jsAsset}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect((await res.text()).length).toBeGreaterThan(1000);
    const head = await fetch(`${base}/assets/${jsAsset}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('answers index.html for any other path (single-page fallback), but 404 for a missing asset', async () => {
    for (const path of ['/map', '/devices/0b7e6a52-1111-4c1a-9a55-000000000001', '/alarms?x=1']) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(200);
      expect(await res.text(), path).toContain('<div id="app"></div>');
      expect(res.headers.get('cache-control')).toBe('no-cache');
    }
    const missing = await fetch(`${base}/assets/index-AAAAAAAA.js`);
    expect(missing.status).toBe(404);
  });

  it('never serves a file outside the console folder', async () => {
    for (const path of ['/..%2f..%2fpackage.json', '/%2e%2e/%2e%2e/package.json', '/assets/..%2f..%2f..%2fpackage.json']) {
      const res = await fetch(`${base}${path}`);
      expect(await res.text(), path).not.toContain('"name": "rulr"');
    }
  });

  it('leaves /graphql, /healthz and /metrics as they were', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(await health.json()).toEqual({ status: 'ok', role: 'gateway' });
    const get = await fetch(`${base}/graphql`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    const anonymous = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    expect(anonymous.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const answer = (await anonymous.json()) as Record<string, unknown>;
    expect('data' in answer || 'errors' in answer).toBe(true);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('rulr_console_requests_total');
  });
});

describe('the console content-security policy', () => {
  it('names the tile server origin only when one is configured', () => {
    expect(consoleCsp()).toContain("img-src 'self' data:;");
    expect(consoleCsp('https://tile.example.org/{z}/{x}/{y}.png')).toContain("img-src 'self' data: https://tile.example.org;");
    expect(tileOrigin('http://127.0.0.1:8080/tiles/{z}/{x}/{y}.png')).toBe('http://127.0.0.1:8080');
    expect(tileOrigin("javascript:alert('x')")).toBeNull();
    expect(tileOrigin("https://evil.example.org;script-src 'unsafe-inline'/{z}")).toBeNull();
  });
});
