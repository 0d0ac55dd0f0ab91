import { existsSync, readFileSync } from 'node:fs';
import { composeServices } from '@apollo/composition';
import { parse } from 'graphql';

/** Subgraphs RULR knows, in composition order; a folder without `schema.graphql` is skipped. */
export const SUBGRAPH_NAMES = ['devices', 'alarms', 'rules', 'metrics'] as const;
export type SubgraphName = (typeof SUBGRAPH_NAMES)[number];

/**
 * The package root (the folder holding package.json), so the same paths work from the sources (tsx)
 * and from the compiled `dist/` build.
 */
function packageRoot(): URL {
  let dir = new URL('../', import.meta.url);
  for (let i = 0; i < 4; i++) {
    if (existsSync(new URL('package.json', dir))) return dir;
    dir = new URL('../', dir);
  }
  return new URL('../', import.meta.url);
}

const ROOT = packageRoot();

/** Where the checked-in supergraph lives (`npx rulr compose` writes it). */
export const SUPERGRAPH_PATH = new URL('schema/supergraph.graphql', ROOT);

/** Placeholder routing URLs baked into the file; the gateway maps names to `subgraphUrls(cfg)` at runtime. */
const placeholderUrl = (i: number) => `http://127.0.0.1:${4001 + i}/graphql`;

/** The SDLs of the subgraphs that exist in this tree, by name. */
export function readSubgraphSdls(root: URL = ROOT): { name: SubgraphName; sdl: string }[] {
  const out: { name: SubgraphName; sdl: string }[] = [];
  for (const name of SUBGRAPH_NAMES) {
    const file = new URL(`subgraphs/${name}/schema.graphql`, root);
    if (existsSync(file)) out.push({ name, sdl: readFileSync(file, 'utf8') });
  }
  return out;
}

export class CompositionError extends Error {}

/**
 * Composes a Federation 2 supergraph from subgraph SDLs with `@apollo/composition`; throws a
 * CompositionError listing every composition error.
 */
export function composeSupergraph(subgraphs: { name: string; sdl: string; url?: string }[]): string {
  if (subgraphs.length === 0) throw new CompositionError('no subgraph has a schema.graphql yet');
  const result = composeServices(
    subgraphs.map((s) => {
      const i = (SUBGRAPH_NAMES as readonly string[]).indexOf(s.name);
      return { name: s.name, url: s.url ?? placeholderUrl(Math.max(i, 0)), typeDefs: parse(s.sdl) };
    }),
  );
  if (result.errors) throw new CompositionError(`composition failed:\n  ${result.errors.map((e) => e.message).join('\n  ')}`);
  return `${result.supergraphSdl.trimEnd()}\n`;
}

/** The supergraph composed from this tree's subgraph SDLs (what `schema/supergraph.graphql` should hold). */
export function composeFromTree(root: URL = ROOT): string {
  return composeSupergraph(readSubgraphSdls(root));
}

/** The checked-in supergraph the gateway serves. */
export function loadSupergraph(path: URL = SUPERGRAPH_PATH): string {
  if (!existsSync(path)) throw new Error(`${path.pathname} is missing: run \`npx rulr compose\``);
  return readFileSync(path, 'utf8');
}
