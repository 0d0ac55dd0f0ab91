import { existsSync, readFileSync } from 'node:fs';
import { composeServices } from '@apollo/composition';
import { parse } from 'graphql';
import { SUBGRAPHS, type SubgraphName, sdlPath } from '../lib/subgraphs.js';

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

export class CompositionError extends Error {}

/** Where the checked-in supergraph lives (`npx rulr compose` writes it). */
export const SUPERGRAPH_PATH = new URL('schema/supergraph.graphql', ROOT);

/**
 * Placeholder routing URLs baked into the file (each subgraph's default port); the gateway maps
 * names to `subgraphUrls(cfg)` at runtime.
 */
const placeholderUrl = (name: string) => `http://127.0.0.1:${SUBGRAPHS.find((s) => s.name === name)?.port ?? 4000}/graphql`;

/** The SDL of every subgraph in `lib/subgraphs.ts`, in the list's order; a listed subgraph without one is an error. */
export function readSubgraphSdls(root: URL = ROOT): { name: SubgraphName; sdl: string }[] {
  return SUBGRAPHS.map(({ name }) => {
    const file = new URL(sdlPath(name), root);
    if (!existsSync(file)) throw new CompositionError(`subgraph ${name} is listed in lib/subgraphs.ts but ${sdlPath(name)} is missing`);
    return { name, sdl: readFileSync(file, 'utf8') };
  });
}

/**
 * Composes a Federation 2 supergraph from subgraph SDLs with `@apollo/composition`; throws a
 * CompositionError listing every composition error.
 */
export function composeSupergraph(subgraphs: { name: string; sdl: string; url?: string }[]): string {
  if (subgraphs.length === 0) throw new CompositionError('no subgraph has a schema.graphql yet');
  const result = composeServices(subgraphs.map((s) => ({ name: s.name, url: s.url ?? placeholderUrl(s.name), typeDefs: parse(s.sdl) })));
  if (result.errors) throw new CompositionError(`composition failed:\n  ${result.errors.map((e) => e.message).join('\n  ')}`);
  return `${result.supergraphSdl.trimEnd()}\n`;
}

/** The supergraph composed from this tree's subgraph SDLs (what `schema/supergraph.graphql` should hold). */
export function composeFromTree(root: URL = ROOT): string {
  return composeSupergraph(readSubgraphSdls(root));
}

/**
 * The supergraph beside this module's tree: the checked-in file when running from the sources, the
 * copy `npm run build` put in `dist/schema/` otherwise. The image holds only `dist/`, so the package
 * root's `schema/` is not there.
 */
const BUILT_SUPERGRAPH = new URL('../schema/supergraph.graphql', import.meta.url);

/** The supergraph the gateway serves (composed from the same SDLs as the code it runs with). */
export function loadSupergraph(path: URL = existsSync(BUILT_SUPERGRAPH) ? BUILT_SUPERGRAPH : SUPERGRAPH_PATH): string {
  if (!existsSync(path)) throw new Error(`${path.pathname} is missing: run \`npx rulr compose\``);
  return readFileSync(path, 'utf8');
}
