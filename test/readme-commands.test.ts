import { accessSync, constants, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(`${root}/README.md`, 'utf8');
const section = (title: string) => readme.split(`\n## ${title}\n`)[1]?.split('\n## ')[0] ?? '';

describe('README commands', () => {
  it('gives the quick start as the two scripts, in one code block', () => {
    expect(section('Quick start')).toContain('```sh\nbash scripts/quickstart.sh\nbash scripts/test.sh\n```');
    for (const f of ['scripts/quickstart.sh', 'scripts/test.sh', 'scripts/setup-services.sh', '.ci/run']) {
      expect(() => accessSync(`${root}/${f}`, constants.X_OK), f).not.toThrow();
    }
  });

  it('runs the README test command at the end of CI', () => {
    const lines = readFileSync(`${root}/.ci/run`, 'utf8').trim().split('\n');
    expect(lines.at(-1)).toBe('bash scripts/setup-services.sh && npm ci && bash scripts/test.sh');
  });

  it('mentions only npm scripts that package.json defines', () => {
    const scripts = Object.keys(JSON.parse(readFileSync(`${root}/package.json`, 'utf8')).scripts);
    const mentioned = [...readme.matchAll(/npm run ([a-z:-]+)/g)].map((m) => m[1]!);
    expect(mentioned.length).toBeGreaterThan(3);
    for (const s of mentioned) expect(scripts, s).toContain(s);
  });

  it('lists only CLI commands that cli/main.ts defines', () => {
    const cli = readFileSync(`${root}/cli/main.ts`, 'utf8');
    const defined = [...cli.matchAll(/\.command\('([a-z-]+)'\)/g)].map((m) => m[1]!);
    const listed = [...section('CLI').matchAll(/^\| `rulr ([a-z-]+)/gm)].map((m) => m[1]!);
    expect(listed.length).toBeGreaterThan(4);
    for (const c of listed) expect(defined, c).toContain(c);
  });
});
