import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * The import rules of the repository (docs/decisions.md, "Import rules checked by a test"), checked
 * over the import graph read with TypeScript's own parser. Paths are repository-relative with `/`.
 */

/** One relative import: the importing file, the resolved file, and whether it is `import type` only. */
export interface ImportEdge {
  from: string;
  to: string;
  typeOnly: boolean;
}

/** The relative module specifiers of one source file (static imports, re-exports, `import()`). */
export function importsOf(fileName: string, text: string): { specifier: string; typeOnly: boolean }[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: { specifier: string; typeOnly: boolean }[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const c = node.importClause;
      const typeOnly =
        c !== undefined &&
        (c.isTypeOnly ||
          (c.name === undefined &&
            c.namedBindings !== undefined &&
            ts.isNamedImports(c.namedBindings) &&
            c.namedBindings.elements.length > 0 &&
            c.namedBindings.elements.every((e) => e.isTypeOnly)));
      out.push({ specifier: node.moduleSpecifier.text, typeOnly });
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push({ specifier: node.moduleSpecifier.text, typeOnly: node.isTypeOnly });
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = node.arguments;
      if (arg && ts.isStringLiteralLike(arg)) out.push({ specifier: arg.text, typeOnly: false });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out.filter((i) => i.specifier.startsWith('./') || i.specifier.startsWith('../'));
}

/**
 * Resolves a relative specifier the way NodeNext resolves our sources: `./x.js` is `./x.ts` in the
 * source tree (or its `.d.ts`, or the `.js`/`.mjs` itself). Returns null when nothing matches.
 */
export function resolveImport(from: string, specifier: string, exists: (path: string) => boolean): string | null {
  const target = posix.normalize(posix.join(posix.dirname(from), specifier));
  const candidates = /\.(m?)js$/.test(target)
    ? [target.replace(/\.(m?)js$/, '.$1ts'), target.replace(/\.(m?)js$/, '.d.$1ts'), target]
    : [target, `${target}.ts`];
  return candidates.find(exists) ?? null;
}

/** Test code: test files and the helpers that only tests use. */
export const isTestCode = (file: string): boolean => /\.test\.ts$|(^|\/)testing\/|(^|\/)test-fixtures\.ts$/.test(file);

/**
 * The role a file belongs to (`gateway`, `subgraphs/<name>`, `ingest`, `workers`), `shared` for
 * `lib/` and `schema/`, or null for the folders that may import anything (`cli/`, `bench/`,
 * `test/`, `scripts/`, configuration at the root).
 */
export function areaOf(file: string): string | null {
  const [top, second] = file.split('/');
  if (top === 'gateway' || top === 'ingest' || top === 'workers') return top;
  if (top === 'subgraphs' && second && file.split('/').length > 2) return `subgraphs/${second}`;
  if (top === 'lib' || top === 'schema') return 'shared';
  return null;
}

/** Why `edge` breaks the rules, or null. */
export function ruleViolation(edge: ImportEdge): string | null {
  const from = areaOf(edge.from);
  if (from === null) return null;
  const to = areaOf(edge.to);
  if (to === 'shared') return null;
  if (isTestCode(edge.from) && edge.to.startsWith('test/support/')) return null;
  if (from === 'shared') return `${edge.from} imports ${edge.to}: lib/ and schema/ import no role (or cli/, bench/, test/, scripts/)`;
  if (to === from) return null;
  if (to === null) return `${edge.from} imports ${edge.to}: a role imports only itself, lib/ and schema/`;
  return `${edge.from} imports ${edge.to}: role ${from} imports role ${to} (roles share lib/ and schema/, never each other)`;
}

/**
 * Import cycles among `files` (each reported once, as the file path around the loop), found by
 * Tarjan's strongly connected components; a file importing itself is a cycle too.
 */
export function cycles(edges: readonly ImportEdge[]): string[][] {
  const next = new Map<string, string[]>();
  for (const e of edges) {
    const list = next.get(e.from);
    if (list) list.push(e.to);
    else next.set(e.from, [e.to]);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let counter = 0;
  const strong = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (next.get(v) ?? []).includes(v)) out.push(loopThrough(component.sort(), next));
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) strong(v);
  return out;
}

/** One concrete loop inside a strongly connected component, starting at its first file. */
function loopThrough(component: string[], next: Map<string, string[]>): string[] {
  const inside = new Set(component);
  const start = component[0] as string;
  const seen = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift() as string;
    for (const w of next.get(v) ?? []) {
      if (!inside.has(w)) continue;
      if (w === start) {
        const path = [v];
        for (let x = v; x !== start; x = seen.get(x) as string) path.push(seen.get(x) as string);
        return [...path.reverse(), start];
      }
      if (!seen.has(w)) {
        seen.set(w, v);
        queue.push(w);
      }
    }
  }
  return component;
}

const SKIP = new Set(['node_modules', 'dist', '.git', 'deploy', 'docs']);

/** Every `.ts` file under `root` (repository-relative, `/`-separated), skipping build output and dependencies. */
export function sourceFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith('.') || SKIP.has(entry.name)) continue;
      const full = join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(m?)ts$/.test(entry.name) && !entry.name.endsWith('.d.ts')) out.push(relative(root, full).split(sep).join('/'));
    }
  };
  walk(root);
  return out.sort();
}

/** The import graph of the repository at `root`; `unresolved` lists relative imports that match no file. */
export function importGraph(root: string): { edges: ImportEdge[]; unresolved: string[] } {
  const edges: ImportEdge[] = [];
  const unresolved: string[] = [];
  const exists = (p: string) => existsSync(join(root, p));
  for (const file of sourceFiles(root)) {
    for (const i of importsOf(file, readFileSync(join(root, file), 'utf8'))) {
      const to = resolveImport(file, i.specifier, exists);
      if (to) edges.push({ from: file, to, typeOnly: i.typeOnly });
      else unresolved.push(`${file} imports ${i.specifier}, which is no file`);
    }
  }
  return { edges, unresolved };
}

/** Production code: what runs in a role or the CLI (not tests, their helpers, benchmarks or scripts). */
export const isProductionCode = (file: string): boolean => (areaOf(file) !== null && !isTestCode(file)) || file.startsWith('cli/');

export const repositoryRoot = (): string => join(dirname(fileURLToPath(import.meta.url)), '..', '..');
