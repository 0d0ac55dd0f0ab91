#!/usr/bin/env node
// Runs the compiled CLI; `npm run build` (done by the quick-start script) produces dist/.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const compiled = join(root, 'dist', 'cli', 'main.js');
if (!existsSync(compiled)) {
  console.error('rulr: dist/ is missing; run `npm run build` first');
  process.exit(1);
}
await import(compiled);
