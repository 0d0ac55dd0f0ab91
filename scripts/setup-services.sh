#!/usr/bin/env bash
# Makes sure the services RULR needs answer on this machine:
#   PostgreSQL 15+ with PostGIS and ltree on 127.0.0.1:5432 (user postgres, no password, database rulr)
#   Redis on 127.0.0.1:6379
#   Mosquitto 2 on 127.0.0.1:1883 (+ mosquitto-clients)
#   PgBouncer on 127.0.0.1:6433 in transaction mode in front of that PostgreSQL (the tests' second
#   pass runs through it; see docs/operations.md, PgBouncer)
#   Debian's Chromium at /usr/bin/chromium (the console's browser tests and bench:console drive it
#   with playwright-core; see docs/console-tests.md)
# Idempotent: a service that already answers is reused and nothing is installed; with everything
# present the script takes a second or two. Installs with apt (Debian/Ubuntu) only what is missing,
# and starts services without systemd when systemd is not running (containers, CI).
#
# Environment:
#   RULR_PG_TRUST=0   do not add a `trust` line for postgres@127.0.0.1 to pg_hba.conf; set
#                     DATABASE_URL (with a password) for RULR and TEST_PG_URL for the tests instead.
#   RULR_DB_NAME      database to create if missing (default rulr)
#   RULR_PGBOUNCER=0  do not install or start PgBouncer (then run the tests with TEST_PG_POOLER_URL=
#                     empty, or pointing at a PgBouncer of yours in transaction mode)
#   RULR_PGBOUNCER_PORT  its port (default 6433: Debian's own pgbouncer service takes 6432)
#   RULR_CHROMIUM=0   do not install Chromium (the browser tests then fail with a message saying so)
#   RULR_MOSQUITTO21=0  do not build Mosquitto 2.1.2 into .cache/ (scripts/mosquitto-2.1.sh, about half a
#                     minute once); without it the vitest project mosquitto-2.1 (the broker tests against
#                     the version docker-compose.yml pins) is left out
set -euo pipefail

PG_PORT=5432
REDIS_PORT=6379
MQTT_PORT=1883
PGBOUNCER_PORT="${RULR_PGBOUNCER_PORT:-6433}"
DB_NAME="${RULR_DB_NAME:-rulr}"
MIN_PG=15
export DEBIAN_FRONTEND=noninteractive

log() { printf '[setup-services] %s\n' "$*"; }
die() { printf '[setup-services] error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif have sudo; then
  SUDO=(sudo -n)
else
  SUDO=()
fi
as_root() {
  if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then die "needs root (or sudo) to run: $*"; fi
  "${SUDO[@]}" "$@"
}

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp: no nc needed).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

systemd_running() { [ -d /run/systemd/system ]; }

APT_UPDATED=0
apt_install() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  have apt-get || die "apt-get not found; install ${missing[*]} yourself (see README, Services)"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Runs `service NAME start` (or systemctl), then FALLBACK, until CHECK succeeds (30 s).
start_service() {
  local name=$1 check=$2
  shift 2
  if systemd_running; then
    as_root systemctl start "$name" || true
  elif have service; then
    as_root service "$name" start >/dev/null 2>&1 || true
  fi
  if ! wait_for "$check" 5 && [ $# -gt 0 ]; then
    as_root "$@" || true
  fi
  wait_for "$check" 30 || die "$name did not start (check its log)"
}

wait_for() {
  local check=$1 seconds=$2 i
  for ((i = 0; i < seconds * 4; i++)); do
    if $check; then return 0; fi
    sleep 0.25
  done
  return 1
}

# ---------------------------------------------------------------- PostgreSQL + PostGIS
pg_up() { port_open "$PG_PORT" && { ! have pg_isready || pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }; }
psql_su() { psql -X -w -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

# The PostgreSQL major version apt would install (0 when unknown).
pg_candidate() {
  apt-cache policy postgresql 2>/dev/null | awk '/Candidate:/ {print $2}' | sed -E 's/^[0-9]+://; s/[^0-9].*//' | head -n1
}

# The major version of the local cluster (pg_lsclusters), or of the running server.
pg_local_version() {
  if have pg_lsclusters; then
    pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port {print $1; exit}'
  fi
}

install_postgres() {
  local ver
  apt_install ca-certificates postgresql-common
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  ver=$(pg_candidate)
  if [ -z "$ver" ] || [ "$ver" -lt "$MIN_PG" ]; then
    # Older distributions (Ubuntu 22.04 ships 14): use the PostgreSQL project's apt repository.
    log "distribution PostgreSQL is ${ver:-unknown}; adding apt.postgresql.org for PostgreSQL $MIN_PG"
    as_root /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y >/dev/null
    ver=$MIN_PG
  fi
  apt_install "postgresql-$ver" "postgresql-client-$ver" "postgresql-$ver-postgis-3"
}

start_postgres() {
  local ver
  ver=$(pg_local_version)
  [ -n "$ver" ] || die "no PostgreSQL cluster on port $PG_PORT (pg_lsclusters); create one with pg_createcluster"
  log "starting PostgreSQL $ver"
  if systemd_running; then
    as_root systemctl start "postgresql@$ver-main" || true
  else
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  wait_for pg_up 30 || die "PostgreSQL did not start (see /var/log/postgresql/)"
}

# Adds `host all postgres 127.0.0.1/32 trust` (and ::1) at the top of pg_hba.conf and reloads.
pg_trust_local() {
  local ver hba
  ver=$(pg_local_version)
  [ -n "$ver" ] || return 1
  hba=$(psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -c 'show hba_file' 2>/dev/null ||
    as_root su postgres -c "psql -X -At -p $PG_PORT -c 'show hba_file'" 2>/dev/null || true)
  [ -n "$hba" ] || hba="/etc/postgresql/$ver/main/pg_hba.conf"
  [ -f "$hba" ] || return 1
  log "allowing postgres@127.0.0.1 without a password (trust) in $hba"
  as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  as_root su postgres -c "psql -X -q -p $PG_PORT -c 'select pg_reload_conf()'" >/dev/null 2>&1 ||
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  sleep 0.5
}

setup_postgres() {
  if ! pg_up; then
    if ! have pg_lsclusters || [ -z "$(pg_local_version)" ]; then install_postgres; fi
    start_postgres
  fi
  have psql || apt_install postgresql-client
  if ! psql_su -c 'select 1' >/dev/null 2>&1; then
    if [ "${RULR_PG_TRUST:-1}" = 0 ]; then
      log "postgres@127.0.0.1 needs a password: set DATABASE_URL and TEST_PG_URL (see README)"
      return 0
    fi
    pg_trust_local || die "cannot log in as postgres@127.0.0.1; set DATABASE_URL/TEST_PG_URL or allow trust in pg_hba.conf"
    psql_su -c 'select 1' >/dev/null || die "still cannot log in as postgres@127.0.0.1"
  fi
  local num ver
  num=$(psql_su -c 'show server_version_num')
  ver=$((num / 10000))
  [ "$ver" -ge "$MIN_PG" ] || die "PostgreSQL $ver on port $PG_PORT; RULR needs $MIN_PG or newer"
  if [ "$(psql_su -c "select count(*) from pg_available_extensions where name in ('postgis','ltree')")" != 2 ]; then
    apt_install "postgresql-$ver-postgis-3"
  fi
  [ "$(psql_su -c "select count(*) from pg_available_extensions where name = 'postgis'")" = 1 ] ||
    die "PostGIS is not available to PostgreSQL $ver"
  if [ "$(psql_su -c "select count(*) from pg_database where datname = '$DB_NAME'")" != 1 ]; then
    log "creating database $DB_NAME"
    psql_su -c "create database \"$DB_NAME\""
  fi
  log "PostgreSQL $ver + PostGIS ready on 127.0.0.1:$PG_PORT (database $DB_NAME)"
}

# ---------------------------------------------------------------- Redis
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

setup_redis() {
  if port_open "$REDIS_PORT"; then
    have redis-cli || apt_install redis-tools
  else
    apt_install redis-server redis-tools
    log "starting Redis"
    start_service redis-server redis_up redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
  fi
  redis_up || die "something listens on port $REDIS_PORT but does not answer PING"
  log "Redis ready on 127.0.0.1:$REDIS_PORT"
}

# ---------------------------------------------------------------- Mosquitto
# A QoS 1 publish that the broker acknowledges (works with $SYS topics disabled too).
mqtt_up() { timeout 5 mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -t rulr/setup-services/ping -m ping -q 1 >/dev/null 2>&1; }

setup_mosquitto() {
  if port_open "$MQTT_PORT"; then
    have mosquitto_sub || apt_install mosquitto-clients
  else
    apt_install mosquitto mosquitto-clients
    # Debian's mosquitto.conf includes conf.d: listen on loopback without authentication (development
    # only) and never drop queued QoS 1 messages for a slow subscriber (see deploy/mosquitto/).
    if [ -d /etc/mosquitto/conf.d ] && [ ! -f /etc/mosquitto/conf.d/rulr.conf ] &&
      ! grep -rqs '^listener' /etc/mosquitto/mosquitto.conf /etc/mosquitto/conf.d; then
      as_root tee /etc/mosquitto/conf.d/rulr.conf >/dev/null <<EOF
# written by RULR scripts/setup-services.sh (development broker)
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 100
persistent_client_expiration 1d
EOF
    fi
    as_root install -d -o mosquitto -g mosquitto /run/mosquitto 2>/dev/null || as_root mkdir -p /run/mosquitto
    if port_open "$MQTT_PORT"; then
      # The package started the broker (systemd) before rulr.conf existed: restart to apply it.
      if systemd_running; then as_root systemctl restart mosquitto; else as_root service mosquitto restart >/dev/null 2>&1 || true; fi
      wait_for mqtt_up 30 || die "mosquitto did not restart (see /var/log/mosquitto/)"
    else
      log "starting Mosquitto"
      start_service mosquitto mqtt_up mosquitto -d -c /etc/mosquitto/mosquitto.conf
    fi
  fi
  mqtt_up || die "something listens on port $MQTT_PORT but does not acknowledge an MQTT publish"
  log "Mosquitto ready on 127.0.0.1:$MQTT_PORT"
}

# ---------------------------------------------------------------- PgBouncer
# A PgBouncer of RULR's own (its own config, port and run directory; Debian's pgbouncer service and
# /etc/pgbouncer are left alone), in transaction mode like production, for any database name (the
# tests clone databases with random names) as user postgres (trust, like the tests' direct URL).
PGBOUNCER_DIR="${TMPDIR:-/tmp}/rulr-pgbouncer-$PGBOUNCER_PORT"
pgbouncer_up() { psql -X -w -q -At -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres -d "$DB_NAME" -c 'select 1' >/dev/null 2>&1; }

write_pgbouncer_ini() {
  cat >"$PGBOUNCER_DIR/pgbouncer.ini" <<EOF
;; written by RULR scripts/setup-services.sh: development/test PgBouncer (production: deploy/pgbouncer/)
[databases]
* = host=127.0.0.1 port=$PG_PORT user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
logfile = $PGBOUNCER_DIR/pgbouncer.log
pidfile = $PGBOUNCER_DIR/pgbouncer.pid
;; development only: no password check, every client logs in to PostgreSQL as postgres (trust)
auth_type = any
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
;; tests drop their databases: let go of idle server connections and pools soon
server_idle_timeout = 10
autodb_idle_timeout = 30
EOF
}

setup_pgbouncer() {
  if [ "${RULR_PGBOUNCER:-1}" = 0 ]; then
    log "PgBouncer skipped (RULR_PGBOUNCER=0)"
    return 0
  fi
  if pgbouncer_up; then
    log "PgBouncer ready on 127.0.0.1:$PGBOUNCER_PORT"
    return 0
  fi
  port_open "$PGBOUNCER_PORT" &&
    die "something listens on port $PGBOUNCER_PORT but does not pass queries to PostgreSQL; stop it or set RULR_PGBOUNCER_PORT"
  if ! psql_su -c 'select 1' >/dev/null 2>&1; then
    log "PgBouncer skipped: postgres@127.0.0.1 needs a password (set TEST_PG_POOLER_URL, see README)"
    return 0
  fi
  have pgbouncer || [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
  local bin
  bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  mkdir -p "$PGBOUNCER_DIR"
  # Nothing listens on the port, so a pid file left by a killed PgBouncer is stale (PgBouncer
  # refuses to start while its pid still names a process, a zombie included).
  rm -f "$PGBOUNCER_DIR/pgbouncer.pid"
  write_pgbouncer_ini
  log "starting PgBouncer ($("$bin" --version | head -n1)) on 127.0.0.1:$PGBOUNCER_PORT"
  if [ "$(id -u)" -eq 0 ]; then
    # PgBouncer refuses to run as root: it switches to postgres, which must write its log and pid.
    chown -R postgres "$PGBOUNCER_DIR"
    "$bin" -q -d -u postgres "$PGBOUNCER_DIR/pgbouncer.ini"
  else
    "$bin" -q -d "$PGBOUNCER_DIR/pgbouncer.ini"
  fi
  wait_for pgbouncer_up 30 || die "PgBouncer did not start (see $PGBOUNCER_DIR/pgbouncer.log)"
  log "PgBouncer ready on 127.0.0.1:$PGBOUNCER_PORT (transaction mode, config $PGBOUNCER_DIR/pgbouncer.ini)"
}

# ---------------------------------------------------------------- Chromium
# Debian's own build (playwright-core downloads no browser): the package is `chromium` on Debian;
# Ubuntu's is a snap stub, so there the tests need CHROMIUM_PATH pointing at a real Chromium.
CHROMIUM_BIN="${CHROMIUM_PATH:-/usr/bin/chromium}"
setup_chromium() {
  if [ "${RULR_CHROMIUM:-1}" = 0 ]; then
    log "Chromium skipped (RULR_CHROMIUM=0)"
    return 0
  fi
  if [ ! -x "$CHROMIUM_BIN" ]; then
    apt_install chromium
  fi
  [ -x "$CHROMIUM_BIN" ] || die "no Chromium at $CHROMIUM_BIN (install Debian's chromium or set CHROMIUM_PATH)"
  log "Chromium ready ($("$CHROMIUM_BIN" --version 2>/dev/null | head -n1))"
}

setup_postgres
setup_redis
setup_mosquitto
setup_pgbouncer
setup_chromium
# Mosquitto 2.1.2 from Debian's source package, next to the machine's 2.0: the broker tests run
# against both (vitest project mosquitto-2.1), and bench:auth measures the sync on both.
if [ "${RULR_MOSQUITTO21:-1}" != 0 ]; then
  bash "$(dirname "$0")/mosquitto-2.1.sh" >/dev/null || die "building Mosquitto 2.1.2 failed (RULR_MOSQUITTO21=0 skips it)"
  log "Mosquitto 2.1.2 built in .cache/mosquitto-2.1.2 (broker tests and bench:auth)"
fi
# the tests and scripts/dev-certs.sh make certificates with openssl
have openssl || apt_install openssl

if have node; then
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || log "warning: Node.js $(node -v) found; RULR needs Node.js 20.19 or newer"
else
  log "warning: Node.js not found; install Node.js 20 (https://nodejs.org) to run RULR"
fi
