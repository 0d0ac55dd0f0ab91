import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (f: string) => readFileSync(`${root}${f}`, 'utf8');

/** `key = value` lines of an ini file's section (PgBouncer's syntax: `;` comments). */
function section(text: string, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith(';') || line.startsWith('#')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) current = head[1] as string;
    else if (current === name) {
      const i = line.indexOf('=');
      out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
  }
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are checked field by field below.
const docs = (f: string): any[] => parseAllDocuments(read(f)).map((d) => d.toJS());

describe('deploy/pgbouncer', () => {
  const ini = read('deploy/pgbouncer/pgbouncer.ini');

  it('pools by transaction, the mode RULR is tested behind', () => {
    expect(section(ini, 'pgbouncer').pool_mode).toBe('transaction');
  });

  it("is where the Kubernetes roles' DATABASE_URL points, while the migrate job connects to PostgreSQL directly", () => {
    const port = section(ini, 'pgbouncer').listen_port;
    const secret = docs('deploy/k8s/config.yaml').find((d) => d.kind === 'Secret' && d.metadata.name === 'rulr-secret');
    expect(new URL(secret.stringData.DATABASE_URL).port).toBe(port);
    const migrate = docs('deploy/k8s/migrate-job.yaml');
    const job = migrate.find((d) => d.kind === 'Job');
    const env = job.spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === 'DATABASE_URL');
    const ref = env.valueFrom.secretKeyRef;
    const direct = migrate.find((d) => d.kind === 'Secret' && d.metadata.name === ref.name).stringData[ref.key];
    expect(new URL(direct).port).toBe('5432');
    expect(new URL(direct).hostname).toBe(section(ini, 'databases').rulr?.match(/host=(\S+)/)?.[1]);
  });
});
