import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { composeFromTree, SUPERGRAPH_PATH } from '../gateway/supergraph.js';

/**
 * `rulr compose`: writes `schema/supergraph.graphql` from the subgraph SDLs; with `--check`, exits 1
 * (without writing) when the checked-in file differs from a fresh composition.
 */
export async function composeCli(o: { check?: boolean }): Promise<void> {
  const fresh = composeFromTree();
  const file = fileURLToPath(SUPERGRAPH_PATH);
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '';
  if (o.check) {
    if (current !== fresh) {
      console.error(`${file} is stale: run \`npx rulr compose\``);
      process.exit(1);
    }
    console.log(`${file} is up to date`);
    return;
  }
  if (current === fresh) {
    console.log(`${file} is up to date`);
    return;
  }
  writeFileSync(file, fresh);
  console.log(`wrote ${file}`);
}
