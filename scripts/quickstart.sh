#!/usr/bin/env bash
# Quick start: services, dependencies, build, database, demo data, then every role in one process.
# Safe to run again (each step is skipped or idempotent). Stop with Ctrl-C.
# Prints the console URL and the demo login first; the platform's JSON log goes to a file
# (RULR_LOG_FILE, default /tmp/rulr-quickstart.log; RULR_LOG_FILE=- keeps it in the terminal).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# the demo needs no Mosquitto 2.1 build (that is for the broker tests and bench:auth)
RULR_MOSQUITTO21="${RULR_MOSQUITTO21:-0}" bash scripts/setup-services.sh
ensure_node_modules
ensure_build

echo "[rulr] npx rulr migrate"
npx rulr migrate
echo "[rulr] npx rulr seed --demo"
seed_out=$(npx rulr seed --demo)
echo "$seed_out"

port="${GATEWAY_PORT:-3000}"
url="http://127.0.0.1:${port}/graphql"

log_file="${RULR_LOG_FILE:-/tmp/rulr-quickstart.log}"
echo "[rulr] npx rulr start all$([ "$log_file" = - ] || printf ' (log: %s)' "$log_file")"
# Same as `npx rulr start all`, without the npx wrapper so that signals reach the process.
if [ "$log_file" = - ]; then
  node bin/rulr.js start all &
else
  : >"$log_file"
  node bin/rulr.js start all >>"$log_file" 2>&1 &
fi
rulr_pid=$!
sim_pid=""
stop() {
  [ -n "$sim_pid" ] && kill -TERM "$sim_pid" 2>/dev/null || true
  kill -TERM "$rulr_pid" 2>/dev/null || true
  wait "$rulr_pid" 2>/dev/null || true
  exit 0
}
# The last lines of the log, when the platform stops on its own.
show_log() { [ "$log_file" = - ] || { echo "[rulr] last lines of $log_file:" >&2; tail -n 20 "$log_file" >&2; }; }
trap stop INT TERM

ready=0
for _ in $(seq 1 120); do
  kill -0 "$rulr_pid" 2>/dev/null || { echo "[rulr] rulr start all exited" >&2; show_log; exit 1; }
  if node -e "fetch('http://127.0.0.1:${port}/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; then
    ready=1
    break
  fi
  sleep 0.5
done
[ "$ready" = 1 ] || { echo "[rulr] the gateway did not answer /healthz within 60 s" >&2; show_log; stop; }

# The fleet simulator: street lights publishing over MQTT (lamps on at night, dimming, energy
# counters, occasional faults and a few malformed messages for the dead-letter store).
sim_devices="${RULR_SIM_DEVICES:-1000}"
sim_rate="${RULR_SIM_RATE:-200}"
echo "[rulr] node bin/rulr.js simulate --org demo --devices ${sim_devices} --rate ${sim_rate} --bad-fraction 0.01"
node bin/rulr.js simulate --org demo --devices "$sim_devices" --rate "$sim_rate" --bad-fraction 0.01 >/tmp/rulr-simulate.log 2>&1 &
sim_pid=$!

token=$(npx rulr token --org demo --role admin | tail -n1)
email=$(printf '%s\n' "$seed_out" | grep -Eo '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+' | head -n1 || true)
password=$(printf '%s\n' "$seed_out" | sed -nE 's/.*[Pp]assword[^:]*:[[:space:]]*([^[:space:]]+).*/\1/p' | head -n1 || true)
email=${email:-admin@demo.rulr.io}
password=${password:-${RULR_DEMO_PASSWORD:-<the password printed by the seed above>}}

console_url="http://127.0.0.1:${port}/"
cat <<INFO

================================================================================
  RULR console: ${console_url}
  sign in as:   ${email} / ${password}
================================================================================

RULR is running (all roles in one process; Ctrl-C stops it).
  GraphQL (HTTP and WebSocket): ${url}
  health: http://127.0.0.1:${port}/healthz   metrics: http://127.0.0.1:${port}/metrics
  log: $([ "$log_file" = - ] && echo 'this terminal' || echo "${log_file} (JSON; dead letters summed up once a minute)")

First page of devices, with an admin token (npx rulr token --org demo --role admin):

curl -s ${url} -H 'content-type: application/json' \\
  -H 'authorization: Bearer ${token}' \\
  -d '{"query":"{ devices(first: 5) { totalCount edges { node { id serial name site { name } location { lat lng } } } pageInfo { hasNextPage endCursor } } }"}'

Live values of the first device (the simulator publishes ${sim_rate} messages/s; run it twice to see them move):

curl -s ${url} -H 'content-type: application/json' \\
  -H 'authorization: Bearer ${token}' \\
  -d '{"query":"{ devices(first: 1, filter: {search: \\"SL-000001\\"}) { edges { node { serial status { online lastSeen } latest { metric value text ts } } } } }"}'

Alarms raised by the demo rules (the simulator's lamp faults show up within a minute or two):

curl -s ${url} -H 'content-type: application/json' \\
  -H 'authorization: Bearer ${token}' \\
  -d '{"query":"{ alarmCounts { active major critical } alarms(first: 5) { edges { node { id type severity status message raisedAt device { serial site { name } } } } } }"}'

Subscriptions (graphql-ws) on ws://127.0.0.1:${port}/graphql with connectionParams {"authorization": "Bearer <token>"}:
  subscription { telemetryUpdated { device { serial site { name } } readings { metric value } } }
  subscription { alarmChanged { kind alarm { type severity status device { serial site { name } } } } }
Simulator log: /tmp/rulr-simulate.log

Log in instead:

curl -s ${url} -H 'content-type: application/json' \\
  -d '{"query":"mutation { login(email: \"${email}\", password: \"${password}\") { token } }"}'

Console again: ${console_url}  (${email} / ${password})
INFO

# One command end to end: a demo lamp told to dim, followed from the API to the lamp's own answer.
echo
echo "One command, end to end (npx rulr send-command): the simulated lamp SL-000001 dims to 40 %"
node bin/rulr.js send-command --url "http://127.0.0.1:${port}" --token "$token" --serial SL-000001 --name setDim \
  --params '{"level":40}' --wait 30 || echo "[rulr] the demo command did not succeed (see the statuses above)" >&2

status=0
wait "$rulr_pid" || status=$?
[ -n "$sim_pid" ] && kill -TERM "$sim_pid" 2>/dev/null || true
echo "[rulr] rulr start all stopped (exit ${status})" >&2
show_log
exit "$status"
