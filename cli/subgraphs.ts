import type { SubgraphPackage } from '../lib/subgraph.js';
import { modulePath, type SubgraphName } from '../lib/subgraphs.js';

/**
 * Loads a subgraph of `lib/subgraphs.ts` from its folder (`subgraphs/<name>/index.js`, beside
 * this file's parent: the sources under tsx, `dist/` once built, `/app/dist` in the image). The CLI
 * is the composition root: no other role may import a subgraph, so this is the one place that does.
 */
export async function loadSubgraph(name: SubgraphName): Promise<SubgraphPackage> {
  const mod = (await import(new URL(`../${modulePath(name)}`, import.meta.url).href)) as Partial<SubgraphPackage>;
  if (typeof mod.createSubgraph !== 'function' || mod.typeDefs?.kind !== 'Document') {
    throw new Error(`${modulePath(name)} must export typeDefs (a parsed DocumentNode) and createSubgraph(ctx)`);
  }
  return mod as SubgraphPackage;
}
