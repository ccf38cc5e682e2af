# Helpers sourced by the provisioning scripts (which define `say`).

# A pid that runs (a zombie does not: a killed daemon whose parent was not waiting for it stays one).
running() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]; }

# install_missing "WHAT SKIPS WITHOUT THEM" PACKAGE...: the Debian packages that are missing. Idempotent: asks
# apt only when one is missing, and `apt-get update`s once, then. policy-rc.d answers 101 meanwhile: a package
# must not start its own daemon through init scripts (dockerd with a bridge, a registry on every address's port
# 5000). Returns 1 where it cannot install (not root, no apt-get) and says what skips.
install_missing() {
  local skips=$1 missing=() package
  shift
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]}; not root with apt-get, so not installing them ($skips)"
    return 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_policy" -eq 1 ] && rm -f "$policy"
  return 0
}

# clear_containerd PIDFILE: a dockerd starts its own containerd unless the one in its pidfile still runs. The
# containerd of a dockerd that died may still be there a moment (exiting, or a zombie not yet reaped), and a new
# dockerd then waits on its socket and gives up ("timeout waiting for containerd to start", seen after a killed
# node and after a dockerd that panicked). Wait for it to end; end it if it lives on and is that dockerd's own
# (its config lies beside the pidfile); drop the pidfile.
clear_containerd() {
  local pidfile=$1 pid deadline config
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  config="$(dirname "$pidfile")/containerd.toml"
  deadline=$((SECONDS + 5))
  while running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  if running "$pid" && [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"$config"* ]]; then
    say "ending containerd (pid $pid), left by a dockerd that is gone"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
