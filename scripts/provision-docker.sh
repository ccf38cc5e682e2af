#!/usr/bin/env bash
# The Docker part of provisioning (called by provision.sh). Idempotent, and each step runs only when needed:
#   1. the Engine and mmdebstrap from Debian (docker.io, mmdebstrap);
#   2. dockerd, started in the background with its own pid and log files when `docker info` does not answer
#      (no default bridge, no iptables: what works inside this kind of VM), waited for on a deadline. Storage is
#      overlay2 where the kernel has overlayfs, else vfs: vfs copies the whole image for every container (6 s
#      to create one here, against 0.4 s with overlay2), too slow to restart a killed replica within 5 s;
#   3. the local Python base image portero/base:bookworm (mmdebstrap + `docker import`, ~30 s, once per machine:
#      no image registry is reachable, Debian's package mirror is);
#   4. a single-node swarm (`docker swarm init --advertise-addr 127.0.0.1`) for the swarm runtime;
#   5. the three-node test swarm of the multi-node tests (swarm-cluster.sh: a dockerd per network namespace, and
#      Debian's docker-registry), beside the main Engine and never touching it; `make test` removes it after.
# Where it cannot (not root, no apt-get), it says what it skipped; the Docker tests then skip with a reason
# (and fail under PORTERO_REQUIRE_ALL=1, as in CI).
set -euo pipefail

BASE_IMAGE=${PORTERO_BASE_IMAGE:-portero/base:bookworm}
PIDFILE=/var/run/portero-dockerd.pid
LOGFILE=/var/log/portero-dockerd.log
START_DEADLINE_S=${PORTERO_DOCKERD_DEADLINE_S:-60}
if [ -z "${PORTERO_DOCKER_STORAGE_DRIVER:-}" ]; then
  grep -qw overlay /proc/filesystems 2>/dev/null && PORTERO_DOCKER_STORAGE_DRIVER=overlay2 || PORTERO_DOCKER_STORAGE_DRIVER=vfs
fi

say() { echo "provision-docker: $*"; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

start_dockerd() {
  engine_answers && return 0
  local pid="" from=1
  if [ -s "$PIDFILE" ] && running "$(cat "$PIDFILE")"; then
    pid=$(cat "$PIDFILE")
    say "dockerd (pid $pid) is running but does not answer yet; waiting"
  else
    rm -f "$PIDFILE"  # a killed dockerd's: the new one writes its own
    clear_containerd /var/run/docker/containerd/containerd.pid
    [ -f "$LOGFILE" ] && from=$(($(wc -l <"$LOGFILE") + 1))
    say "starting dockerd with $PORTERO_DOCKER_STORAGE_DRIVER storage (log: $LOGFILE)"
    setsid dockerd --storage-driver="$PORTERO_DOCKER_STORAGE_DRIVER" --bridge=none --iptables=false --ip-masq=false \
      --pidfile "$PIDFILE" >>"$LOGFILE" 2>&1 </dev/null &
    pid=$!
  fi
  local deadline=$((SECONDS + START_DEADLINE_S))
  until engine_answers; do
    if ! running "$pid" || [ $SECONDS -ge $deadline ]; then
      running "$pid" && say "dockerd did not answer within ${START_DEADLINE_S} s" || say "dockerd exited"
      say "its log from this start ($LOGFILE):"
      tail -n +"$from" "$LOGFILE" | tail -n 20 >&2 || true
      return 1
    fi
    sleep 0.5
  done
  say "dockerd answers (pid $pid)"
}

# Bump when the recipe below changes: an image of an older recipe is rebuilt.
BASE_RECIPE=3

build_base_image() {
  local have
  have=$(docker image inspect --format '{{index .Config.Labels "org.portero.base-recipe"}}' "$BASE_IMAGE" 2>/dev/null || true)
  [ "$have" = "$BASE_RECIPE" ] && return 0
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  say "creating $BASE_IMAGE with mmdebstrap (once per machine, ~30 s)"
  # The machine's own CAs (a TLS-inspecting egress proxy's, say) go into the image's trust store, and pip and
  # Python are pointed at that store: pip inside `docker build` then reaches PyPI the way the host does.
  # Nothing else of the host's pip configuration (local file indexes) is copied in.
  mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
    --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
        cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" &&
        chroot "$1" update-ca-certificates >/dev/null 2>&1; fi' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$work/base.tar"
  local bundle=/etc/ssl/certs/ca-certificates.crt
  docker import \
    --change "LABEL org.portero.base-recipe=$BASE_RECIPE" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT=$bundle SSL_CERT_FILE=$bundle REQUESTS_CA_BUNDLE=$bundle" \
    --change 'CMD ["python3"]' \
    "$work/base.tar" "$BASE_IMAGE" >/dev/null
  say "created $BASE_IMAGE"
}

init_swarm() {
  local state
  state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
  [ "$state" = "active" ] && return 0
  say "initialising a single-node swarm (was: $state)"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
}

install_missing "the Docker tests will skip" docker.io mmdebstrap || exit 0
start_dockerd || { say "no Docker Engine: the Docker tests will skip (or fail under PORTERO_REQUIRE_ALL=1)"; exit 0; }
build_base_image
init_swarm
say "Docker Engine $(docker version --format '{{.Server.Version}}'), $BASE_IMAGE and a swarm are ready"
"$(dirname "$0")/swarm-cluster.sh" up || say "no test cluster: the multi-node tests will skip (or fail in CI)"
