import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ES module script without type declarations
import { BUDGET_BYTES, checkBudget, initialJs } from '../scripts/console-budget.mjs';

// The console's bundle budget (docs/console.md): the initial JavaScript of a real build stays under
// 200 KB gzipped, lazily loaded pages are not counted, and a build over the budget fails.

const root = fileURLToPath(new URL('..', import.meta.url));
const dirs: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), 'rulr-budget-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the console bundle budget', () => {
  it('passes for a real build of the console, counting the entry but not the lazily loaded pages', () => {
    const out = temp();
    execFileSync(join(root, 'node_modules/.bin/vite'), ['build', '-c', 'console/vite.config.mjs', '--outDir', out, '--logLevel', 'error'], {
      cwd: root,
      stdio: 'pipe',
    });
    const { files, gzip } = initialJs(out) as { files: { file: string }[]; gzip: number };
    expect(gzip).toBeGreaterThan(1000);
    expect(gzip).toBeLessThan(BUDGET_BYTES);
    expect(files.some((f) => /index-.+\.js$/.test(f.file))).toBe(true);
    // Leaflet (the map page) and uPlot (charts) load on first visit, not with the sign-in page
    expect(files.some((f) => /map-|device-|chart/.test(f.file))).toBe(false);
    expect(checkBudget(out)).toMatch(/^console initial JS: [\d.]+ KB gzipped of 200 KB/);
    // the command-line form fails a build whose budget is smaller than what it ships
    expect(() =>
      execFileSync(process.execPath, [join(root, 'scripts/console-budget.mjs'), out], {
        env: { ...process.env, CONSOLE_JS_BUDGET_KB: '1' },
        stdio: 'pipe',
      }),
    ).toThrow(/over budget/);
  }, 120_000);

  it('fails when the initial JavaScript (entry and its static imports) is over the budget', () => {
    const out = temp();
    mkdirSync(join(out, '.vite'), { recursive: true });
    mkdirSync(join(out, 'assets'));
    // random bytes do not compress: 150 KB + 60 KB gzipped is over 200 KB
    const noise = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(Math.random() * 256)));
    writeFileSync(join(out, 'assets/index-aaaaaaaa.js'), noise(150_000));
    writeFileSync(join(out, 'assets/vendor-bbbbbbbb.js'), noise(60_000));
    writeFileSync(join(out, 'assets/page-cccccccc.js'), noise(500_000));
    writeFileSync(
      join(out, '.vite/manifest.json'),
      JSON.stringify({
        'index.html': { file: 'assets/index-aaaaaaaa.js', isEntry: true, imports: ['_vendor'], dynamicImports: ['page.tsx'] },
        _vendor: { file: 'assets/vendor-bbbbbbbb.js' },
        'page.tsx': { file: 'assets/page-cccccccc.js', isDynamicEntry: true },
      }),
    );
    expect(() => checkBudget(out)).toThrow(/over budget/);
    // the lazily loaded page is not counted: with the vendor chunk alone the entry passes a 160 KB budget
    expect((initialJs(out) as { gzip: number }).gzip).toBeLessThan(220_000);
  });
});
