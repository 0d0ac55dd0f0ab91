#!/usr/bin/env bash
# Self-signed certificates for the brokers' TLS listener (8883) in development and on one host:
# a CA (ca.crt, ca.key) and a server certificate signed by it (server.crt, server.key) for
# localhost, 127.0.0.1, mosquitto and emqx, plus the names in RULR_CERT_HOSTS (comma-separated,
# DNS names or IP addresses). Devices and services trust ca.crt (MQTT_CA_FILE for ingest and
# workers). Production uses certificates from a real CA instead.
#
#   bash scripts/dev-certs.sh [out-dir]        default deploy/certs; keeps existing files
#   RULR_CERT_FORCE=1 bash scripts/dev-certs.sh  makes new ones
#   bash scripts/dev-certs.sh device <device-id> [out-dir]
#       a client certificate for a device, signed by that CA (device-<id>.crt/.key), and prints its
#       SHA-256 fingerprint for registerDeviceCertificate (EMQX verifies client certificates
#       against the CA, RULR then the fingerprint)
#
# The keys are readable by everyone (the broker container runs as its own user): development only.
set -euo pipefail

days="${RULR_CERT_DAYS:-825}"

if [ "${1:-}" = "device" ]; then
  id="${2:?usage: dev-certs.sh device <device-id> [out-dir]}"
  out="${3:-deploy/certs}"
  [ -f "$out/ca.key" ] || { echo "[dev-certs] error: no CA in $out (run scripts/dev-certs.sh first)" >&2; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$id" \
    -keyout "$out/device-$id.key" -out "$tmp/device.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >"$tmp/ext"
  openssl x509 -req -in "$tmp/device.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -extfile "$tmp/ext" -out "$out/device-$id.crt" 2>/dev/null
  rm -f "$out/ca.srl"
  fp="$(openssl x509 -in "$out/device-$id.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d ':' | tr 'A-F' 'a-f')"
  echo "[dev-certs] wrote $out/device-$id.crt and .key; fingerprint $fp"
  echo "$fp"
  exit 0
fi

out="${1:-deploy/certs}"
mkdir -p "$out"

if [ -f "$out/server.crt" ] && [ -f "$out/ca.crt" ] && [ "${RULR_CERT_FORCE:-0}" != "1" ]; then
  echo "[dev-certs] $out already has certificates (RULR_CERT_FORCE=1 to replace them)"
  exit 0
fi
command -v openssl >/dev/null || { echo "[dev-certs] error: openssl is required" >&2; exit 1; }

san="DNS:localhost,IP:127.0.0.1,DNS:mosquitto,DNS:emqx"
IFS=',' read -r -a extra <<<"${RULR_CERT_HOSTS:-}"
for h in "${extra[@]}"; do
  [ -z "$h" ] && continue
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san="$san,IP:$h"; else san="$san,DNS:$h"; fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=RULR development CA" \
  -keyout "$out/ca.key" -out "$out/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=rulr-broker" -keyout "$out/server.key" -out "$tmp/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" >"$tmp/ext"
openssl x509 -req -in "$tmp/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days "$days" -extfile "$tmp/ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/ca.srl"
chmod 644 "$out/ca.crt" "$out/server.crt" "$out/server.key"
chmod 600 "$out/ca.key"
echo "[dev-certs] wrote $out/ca.crt, $out/server.crt, $out/server.key (names: $san)"
