import { describe, expect, it } from 'vitest';
import {
  areaOf,
  cycles,
  type ImportEdge,
  importGraph,
  importsOf,
  isProductionCode,
  repositoryRoot,
  resolveImport,
  ruleViolation,
} from './support/import-graph.js';

// The import rules of docs/decisions.md ("Import rules checked by a test"): roles (gateway/, each
// subgraphs/<name>/, ingest/, workers/) never import each other, lib/ and schema/ import no role,
// and production code has no import cycles. A failure lists each offending import as
// "<file> imports <file>: <rule>".

const graph = importGraph(repositoryRoot());
const edge = (from: string, to: string, typeOnly = false): ImportEdge => ({ from, to, typeOnly });

describe('import rules of this repository', () => {
  it('resolves every relative import to a file', () => {
    expect(graph.unresolved).toEqual([]);
    expect(graph.edges.length).toBeGreaterThan(300);
  });

  it('has no role importing another role, and no lib/ or schema/ file importing a role', () => {
    expect(graph.edges.map(ruleViolation).filter((v) => v !== null)).toEqual([]);
  });

  it('has no import cycle in production code (type-only imports included)', () => {
    const production = graph.edges.filter((e) => isProductionCode(e.from) && isProductionCode(e.to));
    expect(cycles(production).map((c) => c.join(' → '))).toEqual([]);
  });
});

describe('the import checker', () => {
  it('reads static imports, type-only imports, re-exports and dynamic imports, and skips packages', () => {
    const text = `
      import pg from 'pg';
      import { a } from './a.js';
      import type { B } from '../b.js';
      import { type C, type D } from './c.js';
      import './side-effect.js';
      export { e } from './e.js';
      export type { F } from './f.js';
      const g = await import('../g.js');`;
    expect(importsOf('x/y.ts', text)).toEqual([
      { specifier: './a.js', typeOnly: false },
      { specifier: '../b.js', typeOnly: true },
      { specifier: './c.js', typeOnly: true },
      { specifier: './side-effect.js', typeOnly: false },
      { specifier: './e.js', typeOnly: false },
      { specifier: './f.js', typeOnly: true },
      { specifier: '../g.js', typeOnly: false },
    ]);
  });

  it('maps a .js specifier to the .ts (or .d.ts) source beside the importer', () => {
    const files = new Set(['lib/db.ts', 'schema/db.d.ts', 'scripts/copy-assets.mjs']);
    const exists = (p: string) => files.has(p);
    expect(resolveImport('ingest/index.ts', '../lib/db.js', exists)).toBe('lib/db.ts');
    expect(resolveImport('lib/db.ts', '../schema/db.js', exists)).toBe('schema/db.d.ts');
    expect(resolveImport('scripts/x.ts', './copy-assets.mjs', exists)).toBe('scripts/copy-assets.mjs');
    expect(resolveImport('ingest/index.ts', './gone.js', exists)).toBeNull();
  });

  it('names the role of a file: each subgraph is a role of its own', () => {
    expect(areaOf('gateway/realtime/hub.ts')).toBe('gateway');
    expect(areaOf('subgraphs/alarms/index.ts')).toBe('subgraphs/alarms');
    expect(areaOf('lib/contracts/events.ts')).toBe('shared');
    expect(areaOf('schema/migrate.ts')).toBe('shared');
    expect(areaOf('cli/main.ts')).toBeNull();
    expect(areaOf('test/support/db.ts')).toBeNull();
  });

  it('fails a role importing another role, naming both files', () => {
    expect(ruleViolation(edge('ingest/realtime.ts', 'gateway/realtime/events.ts'))).toBe(
      'ingest/realtime.ts imports gateway/realtime/events.ts: role ingest imports role gateway (roles share lib/ and schema/, never each other)',
    );
    expect(ruleViolation(edge('subgraphs/alarms/index.ts', 'subgraphs/devices/repository.ts', true))).toMatch(
      /^subgraphs\/alarms\/index.ts imports subgraphs\/devices\/repository.ts: role subgraphs\/alarms imports role subgraphs\/devices/,
    );
    expect(ruleViolation(edge('workers/maintenance.test.ts', 'subgraphs/metrics/repository.ts'))).not.toBeNull();
  });

  it('fails lib/ or schema/ importing a role or a tool, and a role importing the CLI', () => {
    expect(ruleViolation(edge('lib/telemetry/writer.test.ts', 'ingest/testing/fixtures.ts'))).toMatch(
      /^lib\/telemetry\/writer.test.ts imports ingest\/testing\/fixtures.ts: lib\/ and schema\/ import no role/,
    );
    expect(ruleViolation(edge('schema/migrate.ts', 'workers/maintenance.ts'))).not.toBeNull();
    expect(ruleViolation(edge('lib/db.ts', 'cli/main.ts'))).not.toBeNull();
    expect(ruleViolation(edge('workers/index.ts', 'cli/roles.ts'))).not.toBeNull();
  });

  it('lets a role import itself, lib/ and schema/, its tests the test support, and the tools anything', () => {
    expect(ruleViolation(edge('subgraphs/metrics/resolvers.ts', 'subgraphs/metrics/series.ts'))).toBeNull();
    expect(ruleViolation(edge('ingest/pipeline.ts', 'lib/telemetry/compactor.ts'))).toBeNull();
    expect(ruleViolation(edge('lib/db.ts', 'schema/db.d.ts'))).toBeNull();
    expect(ruleViolation(edge('workers/rule-eval.test.ts', 'test/support/db.ts'))).toBeNull();
    expect(ruleViolation(edge('ingest/testing/fixtures.ts', 'test/support/env.ts'))).toBeNull();
    expect(ruleViolation(edge('ingest/pipeline.ts', 'test/support/env.ts'))).not.toBeNull();
    for (const tool of ['cli/main.ts', 'bench/ingest.ts', 'test/ingest-flow.test.ts', 'scripts/timescale/compare.ts'])
      expect(ruleViolation(edge(tool, 'subgraphs/metrics/repository.ts'))).toBeNull();
  });

  it('finds import cycles, a file importing itself included, and reports each once as its path', () => {
    expect(cycles([edge('a.ts', 'b.ts'), edge('b.ts', 'c.ts')])).toEqual([]);
    expect(cycles([edge('a.ts', 'b.ts'), edge('b.ts', 'c.ts'), edge('c.ts', 'a.ts'), edge('c.ts', 'd.ts')])).toEqual([
      ['a.ts', 'b.ts', 'c.ts', 'a.ts'],
    ]);
    expect(cycles([edge('a.ts', 'a.ts')])).toEqual([['a.ts', 'a.ts']]);
    expect(cycles([edge('a.ts', 'b.ts'), edge('b.ts', 'a.ts'), edge('x.ts', 'y.ts'), edge('y.ts', 'x.ts')])).toHaveLength(2);
  });
});
