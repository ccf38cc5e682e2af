#!/usr/bin/env bash
# Installs what `make bench` needs: wrk (load), haproxy and nginx (the proxies portero is compared with, and
# nginx as the backend), and perf (the router's profile: it is compiled C, so a native profiler).
# Idempotent: installs only what is missing, and runs `apt-get update` once, only then. Without root and
# apt-get it says what is missing and fails, since the bench cannot run without them.
set -euo pipefail

PACKAGES=(wrk haproxy nginx-light util-linux procps linux-perf)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bench provision: system packages present (${PACKAGES[*]})"
elif [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "bench provision: missing ${missing[*]}; not root with apt-get, so cannot install them." >&2
  echo "bench provision: install them (Debian: apt-get install ${missing[*]}) and re-run \`make bench\`." >&2
  exit 1
else
  echo "bench provision: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The packaged services must not run on their own: the bench starts its own instances with its own configs.
for service in haproxy nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done
