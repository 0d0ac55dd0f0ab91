# shellcheck shell=bash
# Shared by scripts/quickstart.sh, scripts/test.sh and scripts/test-timescale.sh (sourced, not run).

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

# Prints vitest's JSON report ($1) as one line: `N passed, N failed` (+ skipped, + files that failed to load).
vitest_summary() {
  # shellcheck disable=SC2016 # JavaScript template literals
  node -e '
    const fs = require("node:fs");
    let r;
    try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { r = null; }
    if (!r) { console.log("0 passed, 0 failed (vitest wrote no report)"); process.exit(); }
    const broken = (r.testResults ?? []).filter((f) => f.status === "failed" && (f.assertionResults ?? []).length === 0).length;
    const extra = [];
    if (r.numPendingTests + r.numTodoTests > 0) extra.push(`${r.numPendingTests + r.numTodoTests} skipped`);
    if (broken > 0) extra.push(`including ${broken} test file(s) that failed to load`);
    console.log(`${r.numPassedTests} passed, ${r.numFailedTests + broken} failed${extra.length ? ` (${extra.join(", ")})` : ""}`);
  ' "$1"
}
