import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import config from '../vitest.config.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const scripts: Record<string, string> = JSON.parse(readFileSync(`${root}package.json`, 'utf8')).scripts;
const projects = (config.test?.projects ?? []).map((p) => (typeof p === 'object' && 'test' in p ? p.test?.name : undefined));
/** `TEST_PG_POOLER_URL=` (empty) leaves the pgbouncer project out of vitest.config.ts. */
const withPooler = process.env.TEST_PG_POOLER_URL !== '';

describe('package.json scripts', () => {
  it('run only files that exist', () => {
    const files = Object.values(scripts).flatMap((s) =>
      [...s.matchAll(/(?:^|\s)((?:[\w.-]+\/)*[\w.-]+\.(?:ts|mjs|js|json))\b/g)].map((m) => m[1]!),
    );
    expect(files.length).toBeGreaterThan(5);
    for (const f of files) expect(existsSync(`${root}${f}`), f).toBe(true);
  });

  it('name only vitest projects that vitest.config.ts defines, and npm scripts that exist', () => {
    expect(projects).toEqual(expect.arrayContaining(['unit', 'integration', ...(withPooler ? ['pgbouncer'] : [])]));
    for (const [name, s] of Object.entries(scripts)) {
      for (const m of s.matchAll(/--project (\S+)/g)) if (withPooler || m[1] !== 'pgbouncer') expect(projects, name).toContain(m[1]);
      for (const m of s.matchAll(/npm run (\S+)/g)) expect(Object.keys(scripts), name).toContain(m[1]);
    }
  });
});
