import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configMarkdown, configSpec } from '../lib/config.js';
import { README, readmeConfigCells, renderReadme, tableCells } from '../scripts/update-readme.js';

describe('README configuration table', () => {
  const readme = readFileSync(README, 'utf8');

  it('holds what lib/config.ts declares (run `npx tsx scripts/update-readme.ts` when it fails)', () => {
    expect(readmeConfigCells(readme)).toEqual(tableCells(configMarkdown()));
  });

  it('lists every configuration variable', () => {
    const names = readmeConfigCells(readme).map((row) => row[0]);
    for (const name of Object.keys(configSpec)) expect(names).toContain(`\`${name}\``);
  });
});

describe('renderReadme', () => {
  it('replaces only what lies between the markers', () => {
    const out = renderReadme('before\n<!-- config:start -->\nold table\n<!-- config:end -->\nafter\n');
    expect(out.startsWith('before\n<!-- config:start -->\n| variable |')).toBe(true);
    expect(out.endsWith('\n<!-- config:end -->\nafter\n')).toBe(true);
    expect(out).not.toContain('old table');
  });

  it('refuses a README without the markers', () => {
    expect(() => renderReadme('no markers here')).toThrow(/config:start/);
  });
});

describe('tableCells', () => {
  it('reads a padded table the same as an unpadded one', () => {
    expect(tableCells('| a   | b |\n| --- | - |\n| `x` | y |')).toEqual(tableCells('| a | b |\n| --- | --- |\n| `x` | y |'));
    expect(tableCells('| a | b |\n| --- | --- |\n| `x` | y |')).toEqual([
      ['a', 'b'],
      ['`x`', 'y'],
    ]);
  });
});
