import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { ARTIFACTS } from './platform.js';

/** Debian's Chromium (scripts/setup-services.sh installs it); CHROMIUM_PATH overrides. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Flags for a headless Chromium in a container or CI: no sandbox (root, no user namespaces), no
 * GPU, and nothing that calls out to the internet (these machines have none).
 */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface Browser {
  context: BrowserContext;
  /** a new page whose console errors and uncaught exceptions land in {@link errors} */
  page(): Promise<Page>;
  /** `console.error` lines, uncaught exceptions and failed requests of every page, as text */
  errors: string[];
  /** saves a full-page screenshot as `<ARTIFACTS>/<name>.png` and returns its path */
  screenshot(page: Page, name: string): Promise<string>;
  close(): Promise<void>;
}

export interface BrowserOptions {
  /** viewport @default 1280×800 */
  viewport?: { width: number; height: number };
  /** extra Chromium flags (the bench adds --enable-precise-memory-info) */
  args?: string[];
}

/** A headless Chromium with a fresh profile (its user-data-dir is removed on close). */
export async function launchBrowser(o: BrowserOptions = {}): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run scripts/setup-services.sh (installs Debian's chromium) or set CHROMIUM_PATH`);
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'rulr-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...(o.args ?? [])],
    viewport: o.viewport ?? { width: 1280, height: 800 },
  });
  const errors: string[] = [];
  const watch = (p: Page) => {
    p.on('console', (m) => {
      if (m.type() === 'error') errors.push(`console.error: ${m.text()}${m.location().url ? ` (${m.location().url})` : ''}`);
    });
    p.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`));
  };
  for (const p of context.pages()) watch(p);
  context.on('page', watch);
  return {
    context,
    errors,
    async page() {
      // a persistent context opens with one blank page: use it first
      const blank = context.pages().find((p) => p.url() === 'about:blank');
      return blank ?? (await context.newPage());
    },
    async screenshot(page, name) {
      const path = join(ARTIFACTS, `${name.replace(/[^A-Za-z0-9._-]+/g, '-')}.png`);
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    async close() {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
