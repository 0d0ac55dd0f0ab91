# shellcheck shell=bash
# Shared by scripts/quickstart.sh and scripts/test.sh (sourced, not run).

# Runs `npm ci` when node_modules is missing or older than package-lock.json.
ensure_node_modules() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "[rulr] npm ci (node_modules missing or older than package-lock.json)"
    npm ci --no-audit --no-fund
  fi
}

# Runs `npm run build` when dist/ is missing or a source file is newer than it.
ensure_build() {
  local stamp=dist/cli/main.js
  if [ ! -f "$stamp" ] || [ -n "$(find gateway subgraphs ingest workers schema lib cli package.json tsconfig.json tsconfig.build.json \
    -newer "$stamp" \( -name '*.ts' -o -name '*.graphql' -o -name '*.json' \) ! -name '*.test.ts' -print -quit 2>/dev/null)" ]; then
    echo "[rulr] npm run build (dist/ missing or older than the sources)"
    npm run build --silent
  fi
}
