#!/usr/bin/env bash
# Runs the TimescaleDB tests (test/timescale-mode.test.ts) against a TimescaleDB server you already
# have; RULR does not install TimescaleDB (it is in neither Debian nor npm) and CI skips these tests.
#
#   TEST_TIMESCALE_URL=postgres://postgres@127.0.0.1:5433/postgres bash scripts/test-timescale.sh
#
# The server: PostgreSQL 15+ with `timescaledb` in shared_preload_libraries and PostGIS installed; the
# URL's role creates databases (the tests create and drop their own) and roles (`rulr_app`). Run it
# once per license: `timescaledb.license = 'timescale'` and `= 'apache'` in that server's
# postgresql.conf (it cannot be changed per database). The file's plain-PostgreSQL half uses the
# services of scripts/setup-services.sh, as scripts/test.sh does. Extra arguments go to vitest.
# Ends with one line: the server, its TimescaleDB version and license, then `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

if [ -z "${TEST_TIMESCALE_URL:-}" ]; then
  echo "usage: TEST_TIMESCALE_URL=postgres://user@host:port/database bash scripts/test-timescale.sh [vitest args]" >&2
  exit 2
fi
bash scripts/setup-services.sh || exit 1
ensure_node_modules || exit 1

# What the server is, or why it cannot run the tests (before vitest skips or fails on it).
server=$(psql "$TEST_TIMESCALE_URL" -XAtq -v ON_ERROR_STOP=1 -c "
  select case
    when not exists (select 1 from pg_available_extensions where name = 'timescaledb') then 'error: the timescaledb extension is not installed'
    when current_setting('shared_preload_libraries') !~ 'timescaledb' then 'error: timescaledb is not in shared_preload_libraries'
    when not exists (select 1 from pg_available_extensions where name = 'postgis') then 'error: PostGIS is not installed'
    else format('TimescaleDB %s on PostgreSQL %s, license %s',
      (select default_version from pg_available_extensions where name = 'timescaledb'),
      current_setting('server_version'), coalesce(current_setting('timescaledb.license', true), 'unknown'))
  end") || { echo "[test-timescale] cannot query TEST_TIMESCALE_URL" >&2; exit 1; }
case "$server" in error:*) echo "[test-timescale] $server" >&2; exit 1 ;; esac

report=$(mktemp -t rulr-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" test/timescale-mode.test.ts "$@" || status=1

echo
echo "$server: $(vitest_summary "$report")"
exit "$status"
