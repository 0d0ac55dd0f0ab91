// Copies the files `tsc` does not emit (GraphQL SDL) into dist/ beside the compiled modules, so
// code that reads `new URL('./schema.graphql', import.meta.url)` works from sources and from dist/.
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dirs = ['subgraphs', 'gateway', 'schema', 'ingest', 'workers', 'lib'];

function* graphqlFiles(dir) {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory() && e.name !== 'node_modules') yield* graphqlFiles(p);
    else if (e.isFile() && e.name.endsWith('.graphql')) yield p;
  }
}

let n = 0;
for (const d of dirs) {
  for (const src of graphqlFiles(join(root, d))) {
    const dest = join(root, 'dist', relative(root, src));
    mkdirSync(dirname(dest), { recursive: true });
    copyFileSync(src, dest);
    n++;
  }
}
console.log(`copy-assets: ${n} .graphql file(s) copied to dist/`);
