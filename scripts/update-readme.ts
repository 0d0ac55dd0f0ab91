// Regenerates the README's configuration table from lib/config.ts (between the config markers),
// `npx tsx scripts/update-readme.ts`
// writes README.md; `--check` exits 1 when the table's contents are stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { configMarkdown } from '../lib/config.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const README = join(ROOT, 'README.md');
const START = '<!-- config:start -->';
const END = '<!-- config:end -->';

function bounds(text: string): [number, number] {
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md must contain ${START} followed by ${END}`);
  return [a + START.length, b];
}

/** The README text with the configuration table between the markers replaced by the current one. */
export function renderReadme(text: string): string {
  const [a, b] = bounds(text);
  return `${text.slice(0, a)}\n${configMarkdown()}\n${text.slice(b)}`;
}

/** A Markdown table as rows of trimmed cells, without the separator row (ignores padding). */
export function tableCells(markdown: string): string[][] {
  return markdown
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('|') && !/^\|[\s|:-]+\|$/.test(l))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}

/** The table between the README's markers, as cells. */
export function readmeConfigCells(text: string): string[][] {
  const [a, b] = bounds(text);
  return tableCells(text.slice(a, b));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const current = readFileSync(README, 'utf8');
  const stale = JSON.stringify(readmeConfigCells(current)) !== JSON.stringify(tableCells(configMarkdown()));
  if (process.argv.includes('--check')) {
    if (stale) {
      console.error('README.md configuration table is stale: run `npx tsx scripts/update-readme.ts`');
      process.exitCode = 1;
    }
  } else if (stale) {
    writeFileSync(README, renderReadme(current));
    console.log('README.md configuration table updated');
  } else {
    console.log('README.md configuration table is up to date');
  }
}
