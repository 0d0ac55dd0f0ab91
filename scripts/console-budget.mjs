// The console's bundle budget (docs/console.md): the JavaScript a first visit loads (the entry chunk
// and every chunk it imports statically, as Vite's manifest lists them; lazily loaded pages are not
// counted) must stay under CONSOLE_JS_BUDGET_KB kilobytes gzipped. `npm run build` fails when it does not.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

/** The budget: 200 KB (200,000 bytes) of gzipped initial JavaScript. */
export const BUDGET_BYTES = 200_000;

/**
 * The initial JavaScript of the build in `dir`: `{ files: [{ file, bytes, gzip }], gzip }`.
 * @param {string} dir
 */
export function initialJs(dir) {
  const manifest = JSON.parse(readFileSync(join(dir, '.vite', 'manifest.json'), 'utf8'));
  const entries = Object.keys(manifest).filter((k) => manifest[k].isEntry);
  if (entries.length === 0) throw new Error(`no entry chunk in ${dir}/.vite/manifest.json`);
  const seen = new Set();
  const visit = (key) => {
    if (seen.has(key)) return;
    seen.add(key);
    for (const i of manifest[key]?.imports ?? []) visit(i);
  };
  for (const e of entries) visit(e);
  const files = [...seen]
    .map((k) => manifest[k].file)
    .filter((f) => f.endsWith('.js'))
    .map((file) => {
      const text = readFileSync(join(dir, file));
      return { file, bytes: text.length, gzip: gzipSync(text, { level: 9 }).length };
    });
  return { files, gzip: files.reduce((n, f) => n + f.gzip, 0) };
}

/**
 * Checks `dir` against `budget` bytes; returns the message, throws when over.
 * @param {string} dir
 * @param {number} [budget]
 */
export function checkBudget(dir, budget = BUDGET_BYTES) {
  const { files, gzip } = initialJs(dir);
  const list = files.map((f) => `${f.file} ${(f.gzip / 1000).toFixed(1)} KB`).join(', ');
  const msg = `console initial JS: ${(gzip / 1000).toFixed(1)} KB gzipped of ${(budget / 1000).toFixed(0)} KB (${list})`;
  if (gzip > budget) throw new Error(`over budget: ${msg}`);
  return msg;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = process.argv[2] ?? join(fileURLToPath(new URL('..', import.meta.url)), 'dist', 'console');
  const budget = process.env.CONSOLE_JS_BUDGET_KB ? Number(process.env.CONSOLE_JS_BUDGET_KB) * 1000 : BUDGET_BYTES;
  try {
    console.log(checkBudget(dir, budget));
  } catch (e) {
    console.error(`console-budget: ${e.message}`);
    process.exit(1);
  }
}
