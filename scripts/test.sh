#!/usr/bin/env bash
# Runs the whole suite the way CI does: services, dependencies, then what `npm test` runs
# (lint, typecheck, vitest: the unit and integration projects, and the integration tests again
# through PgBouncer, project pgbouncer) and a one-line summary `N passed, N failed` at the end.
# Arguments are passed to vitest (e.g. `bash scripts/test.sh lib/` runs only those test files).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

bash scripts/setup-services.sh || exit 1
if [ "${RULR_PGBOUNCER:-1}" = 0 ] && [ -z "${TEST_PG_POOLER_URL+set}" ]; then
  echo "[rulr] RULR_PGBOUNCER=0: the PgBouncer pass (vitest project pgbouncer) is left out"
  export TEST_PG_POOLER_URL=
fi
ensure_node_modules || exit 1

report=$(mktemp -t rulr-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT

status=0
lint=passed
typecheck=passed
npm run lint || { lint=failed; status=1; }
npm run typecheck || { typecheck=failed; status=1; }
# The same vitest run as `npm test`, plus a JSON report to count results from.
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=1

summary=$(vitest_summary "$report")

echo
echo "lint: ${lint}, typecheck: ${typecheck}"
echo "$summary"
exit "$status"
