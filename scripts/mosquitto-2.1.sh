#!/usr/bin/env bash
# Builds Mosquitto 2.1.2 (broker and dynamic-security plugin) from Debian's source package, for
# `npm run bench:auth`'s dynamic-security sync and for checking the 2.1 path by hand.
#
# Why: Debian 12 ships Mosquitto 2.0.11, whose dynamic-security plugin saves its whole file after
# every command (docs/broker-auth.md), so a 10,000-device sync takes minutes there whatever the
# platform sends; 2.1 saves once per control message. docker-compose.yml pins eclipse-mosquitto:2.1;
# this script gives a Debian machine the same version without Docker. The source is Debian's
# (`mosquitto_2.1.2.orig.tar.gz` of sid's 2.1.2-3, checked against the SHA-256 of Debian's Sources
# index), built with cmake into .cache/mosquitto-2.1.2 (not committed). Nothing is installed system
# wide except the build dependencies (cmake, a C compiler, libssl-dev, libcjson-dev) from apt.
#
# Prints the two paths bench:auth takes (BENCH_MOSQUITTO, BENCH_DYNSEC_PLUGIN). Idempotent: a
# finished build is reused (about a minute otherwise).
set -euo pipefail

VERSION=2.1.2
SHA256=a8e37cc4c1d4141e56c5a8729c5fa36b1f0b1ca95378a12131d68f0509de122a
URL="${RULR_MOSQUITTO_SOURCE_URL:-http://deb.debian.org/debian/pool/main/m/mosquitto/mosquitto_${VERSION}.orig.tar.gz}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${RULR_MOSQUITTO_BUILD_DIR:-$ROOT/.cache/mosquitto-$VERSION}"
BROKER="$DEST/build/src/mosquitto"
PLUGIN="$DEST/build/plugins/dynamic-security/mosquitto_dynamic_security.so"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[mosquitto-%s] %s\n' "$VERSION" "$*" >&2; }
die() { printf '[mosquitto-%s] error: %s\n' "$VERSION" "$*" >&2; exit 1; }

print_paths() {
  echo "BENCH_MOSQUITTO=$BROKER"
  echo "BENCH_DYNSEC_PLUGIN=$PLUGIN"
}

if [ -x "$BROKER" ] && [ -f "$PLUGIN" ]; then
  print_paths
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else die "needs root (or sudo) to run: $*"; fi
}
missing=()
for p in cmake make gcc g++ libssl-dev libcjson-dev ca-certificates curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} yourself"
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$DEST"
TARBALL="$DEST/mosquitto_${VERSION}.orig.tar.gz"
if [ ! -f "$TARBALL" ] || ! echo "$SHA256  $TARBALL" | sha256sum -c --status; then
  log "downloading $URL"
  curl -fsSL --retry 3 -o "$TARBALL.part" "$URL"
  echo "$SHA256  $TARBALL.part" | sha256sum -c --status || die "checksum mismatch for $URL (expected $SHA256)"
  mv "$TARBALL.part" "$TARBALL"
fi

rm -rf "$DEST/src" "$DEST/build"
mkdir -p "$DEST/src" "$DEST/build"
tar xzf "$TARBALL" -C "$DEST/src" --strip-components=1
log "building (cmake; broker and plugins only)"
cmake -S "$DEST/src" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release \
  -DWITH_TESTS=OFF -DWITH_DOCS=OFF -DWITH_CLIENTS=OFF -DWITH_APPS=OFF -DWITH_CTRL_SHELL=OFF \
  -DWITH_WEBSOCKETS=OFF -DWITH_LTO=OFF -DWITH_DLT=OFF -DWITH_SRV=OFF >"$DEST/cmake.log" 2>&1 \
  || { tail -30 "$DEST/cmake.log" >&2; die "cmake failed (full log: $DEST/cmake.log)"; }
cmake --build "$DEST/build" -j "$(nproc)" >"$DEST/build.log" 2>&1 \
  || { tail -30 "$DEST/build.log" >&2; die "build failed (full log: $DEST/build.log)"; }
[ -x "$BROKER" ] && [ -f "$PLUGIN" ] || die "build finished without $BROKER and $PLUGIN"
log "built: $("$BROKER" -h 2>/dev/null | head -1 || true)"
print_paths
