#!/usr/bin/env bash
# Installs the system packages portero's tests and benchmarks use. Idempotent: installs only what is missing,
# and runs `apt-get update` once, only then. Where it cannot (not root, no apt-get) it says what it skipped;
# the tests that need a missing tool skip with a reason (and fail under PORTERO_REQUIRE_ALL=1, as in CI).
set -euo pipefail

# redis-server: the Redis store and shared breakers (#9, #10); chromium: the dashboard's real-browser tests;
# prometheus-alertmanager: the `alerts.alertmanager` push, tested against the real API v2 (its service is not
# started: the tests run their own on a loopback port); pebble: Let's Encrypt's ACME test server, which the HTTPS
# tests obtain certificates from (tests/pebble_server.py starts it, with pebble-challtestsrv as its DNS, on loopback);
# libnss3-tools: certutil, which makes Chromium a certificate store that trusts Pebble's root.
PACKAGES=(procps curl redis-server chromium prometheus-alertmanager pebble libnss3-tools)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "provision: system packages present (${PACKAGES[*]})"
elif [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "provision: missing ${missing[*]}; not root with apt-get, so not installing them."
  echo "provision: tests that need them will skip; install them and re-run \`make test\` to enable those tests."
else
  echo "provision: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Docker Engine, the local base image and a single-node swarm (docker and swarm runtimes).
"$(dirname "$0")/provision-docker.sh"
