#!/usr/bin/env bash
# A three-node Docker Swarm on this machine, for the multi-node tests (tests/integration/test_swarm_cluster.py):
#
#   root namespace ── bridge portero-sw0 198.18.21.1/24 ─┬─ veth ─ netns portero-n1  198.18.21.11  manager
#   (portero, the tests,                                  ├─ veth ─ netns portero-n2  198.18.21.12  worker
#    the registry on 198.18.21.1:5000)                    └─ veth ─ netns portero-n3  198.18.21.13  worker
#
# Each node is a network namespace with its own dockerd (own data-root, exec-root, pidfile, socket, cgroup
# parent and host name), started through `nsenter --net` (`ip netns exec` remounts /sys, and dockerd then fails
# on "Devices cgroup isn't mounted"). Host-network tasks of a node answer on that node's address. 198.18.0.0/15
# is the range set aside for benchmarking networks (RFC 2544): nothing outside uses it, and the namespaces get no
# default route, so no packet of theirs leaves this machine. The registry is Debian's `docker-registry` (the CNCF
# Distribution registry) with basic auth (bcrypt htpasswd; the password is made here, in $RUN/registry.password),
# reached by every node over plain HTTP (each dockerd has the subnet as an insecure registry).
#
#   swarm-cluster.sh up [--holder PID]    idempotent: makes what is missing, heals what died (a killed node's
#                                         dockerd is started again on its data-root and rejoins the swarm)
#   swarm-cluster.sh down [--holder PID]  removes everything, unless another live holder still uses the cluster
#   swarm-cluster.sh status               one line per part
#
# `make test` holds the cluster for its run (up --holder, down --holder): two runs at once share one cluster,
# and the last one out removes it. Every engine here is the project's own; the machine's main dockerd
# (provision-docker.sh) is never touched.
set -euo pipefail

NET=198.18.21
BRIDGE=portero-sw0
NODES=(n1 n2 n3)  # n1 is the manager
RUN=/run/portero-swarm
LIB=/var/lib/portero-swarm
LOGDIR=/var/log/portero-swarm
REGISTRY_PORT=5000
REGISTRY_USER=portero
BASE_IMAGE=${PORTERO_BASE_IMAGE:-portero/base:bookworm}
START_DEADLINE_S=${PORTERO_DOCKERD_DEADLINE_S:-60}
STORAGE=overlay2

say() { echo "swarm-cluster: $*"; }
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
netns() { echo "portero-$1"; }
address() { echo "$NET.1${1#n}"; }
socket() { echo "$RUN/$1.sock"; }
node_docker() { local node=$1; shift; timeout 60 docker -H "unix://$(socket "$node")" "$@"; }
answers() { timeout 10 docker -H "unix://$(socket "$1")" info >/dev/null 2>&1; }

# -- links --------------------------------------------------------------------------------------------------

make_links() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  # Tested on the whole output: `ip ... | grep -q` fails under pipefail when grep quits before ip is done (SIGPIPE).
  [[ "$(ip -o addr show dev "$BRIDGE")" == *"inet $NET.1/24"* ]] || ip addr add "$NET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local node ns veth
  for node in "${NODES[@]}"; do
    ns=$(netns "$node") veth="psw-$node"
    [ -e "/var/run/netns/$ns" ] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    [[ "$(ip -n "$ns" -o addr show dev eth0)" == *"inet $(address "$node")/24"* ]] ||
      ip -n "$ns" addr add "$(address "$node")/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

# -- registry -----------------------------------------------------------------------------------------------

start_registry() {
  mkdir -p "$RUN" "$LIB/registry" "$LOGDIR"
  if [ ! -s "$RUN/registry.password" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$RUN/registry.password")
  fi
  if [ ! -s "$RUN/registry.htpasswd" ]; then
    # bcrypt, the only hash the registry accepts (Python's crypt: libxcrypt has it).
    PASSWORD=$(cat "$RUN/registry.password") python3 -W ignore -c \
      'import crypt, os; print("'"$REGISTRY_USER"':" + crypt.crypt(os.environ["PASSWORD"], crypt.mksalt(crypt.METHOD_BLOWFISH)))' \
      >"$RUN/registry.htpasswd"
  fi
  cat >"$RUN/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $LIB/registry}
  delete: {enabled: true}
http:
  addr: $NET.1:$REGISTRY_PORT
auth:
  htpasswd: {realm: portero-swarm, path: $RUN/registry.htpasswd}
EOF
  if [ -s "$RUN/registry.pid" ] && running "$(cat "$RUN/registry.pid")"; then
    return 0
  fi
  setsid docker-registry serve "$RUN/registry.yml" >>"$LOGDIR/registry.log" 2>&1 </dev/null &
  echo $! >"$RUN/registry.pid"
  local deadline=$((SECONDS + 20))
  # 401 without credentials: it runs and it asks for them.
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' "http://$NET.1:$REGISTRY_PORT/v2/")" = 401 ]; do
    if ! running "$(cat "$RUN/registry.pid")" || [ $SECONDS -ge $deadline ]; then
      say "the registry did not answer; its log ($LOGDIR/registry.log):"
      tail -n 20 "$LOGDIR/registry.log" >&2
      return 1
    fi
    sleep 0.2
  done
  say "registry answers on $NET.1:$REGISTRY_PORT (user $REGISTRY_USER, password in $RUN/registry.password)"
}

# -- engines ------------------------------------------------------------------------------------------------

start_engine() {
  local node=$1 ns pidfile log pid="" from=1
  ns=$(netns "$node") pidfile="$RUN/$node.pid" log="$LOGDIR/$node.log"
  answers "$node" && return 0
  mkdir -p "$RUN/$node" "$LIB/$node" "$LOGDIR"
  if [ -s "$pidfile" ] && running "$(cat "$pidfile")"; then
    pid=$(cat "$pidfile")
  else
    rm -f "$pidfile" "$(socket "$node")"
    clear_containerd "$RUN/$node/containerd/containerd.pid"
    [ -f "$log" ] && from=$(($(wc -l <"$log") + 1))
    say "starting dockerd of $node in netns $ns ($(address "$node"); log $log)"
    # Its own UTS namespace, so that Swarm names the node after it (`docker node ls`, `portero status`).
    setsid nsenter --net="/var/run/netns/$ns" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "portero-$node" \
      dockerd --data-root "$LIB/$node" --exec-root "$RUN/$node" --pidfile "$pidfile" \
      -H "unix://$(socket "$node")" --storage-driver "$STORAGE" --bridge=none --iptables=false --ip-masq=false \
      --cgroup-parent "portero-$node" --insecure-registry "$NET.0/24" \
      --label "portero.engine=unix://$(socket "$node")" >>"$log" 2>&1 </dev/null &
    pid=$!
  fi
  local deadline=$((SECONDS + START_DEADLINE_S))
  until answers "$node"; do
    if ! running "$pid" || [ $SECONDS -ge $deadline ]; then
      say "dockerd of $node did not answer; its log from this start ($log):"
      tail -n +"$from" "$log" | tail -n 20 >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

swarm_state() { node_docker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

form_swarm() {
  local manager=${NODES[0]} state
  state=$(swarm_state "$manager")
  if [ "$state" != active ]; then
    say "initialising the swarm on $manager"
    # A heartbeat of 1 s (5 s by default): a dead node is marked down in seconds, not half a minute.
    node_docker "$manager" swarm init --advertise-addr "$(address "$manager")" --dispatcher-heartbeat 1s >/dev/null
  fi
  local token node
  token=$(node_docker "$manager" swarm join-token -q worker)
  for node in "${NODES[@]:1}"; do
    state=$(swarm_state "$node")
    [ "$state" = active ] && continue
    [ "$state" = pending ] && continue  # a restarted node reconnects on its own
    say "joining $node to the swarm as a worker"
    node_docker "$node" swarm join --token "$token" --advertise-addr "$(address "$node")" \
      "$(address "$manager"):2377" >/dev/null
  done
  # A node killed and started again comes back under its old id; an id left behind by a removed data-root
  # (a node down for good) is dropped, so `docker node ls` lists the three nodes that exist.
  local id
  for id in $(node_docker "$manager" node ls --filter role=worker --format '{{.ID}} {{.Status}}' | awk '$2 == "Down" {print $1}'); do
    node_docker "$manager" node rm --force "$id" >/dev/null 2>&1 || true
  done
}

wait_nodes_ready() {
  local deadline=$((SECONDS + 30)) ready
  while :; do
    ready=$(node_docker "${NODES[0]}" node ls --format '{{.Status}} {{.Availability}}' | grep -c '^Ready Active' || true)
    [ "$ready" -ge ${#NODES[@]} ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      say "only $ready of ${#NODES[@]} nodes are ready:"
      node_docker "${NODES[0]}" node ls >&2
      return 1
    fi
    sleep 0.3
  done
}

load_base_image() {
  # The manager builds; it has no route to any image registry but ours, so it gets the base from the main Engine.
  local manager=${NODES[0]} want have
  want=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) || {
    say "no $BASE_IMAGE on the main Engine (provision-docker.sh makes it)"
    return 1
  }
  have=$(node_docker "$manager" image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)
  [ "$want" = "$have" ] && return 0
  say "loading $BASE_IMAGE into $manager"
  docker save "$BASE_IMAGE" | node_docker "$manager" load >/dev/null
}

# -- holders ------------------------------------------------------------------------------------------------

live_holders() {
  local file
  for file in "$RUN"/holders/*; do
    [ -e "$file" ] || continue
    if running "$(basename "$file")"; then basename "$file"; else rm -f "$file"; fi
  done
}

# -- down ---------------------------------------------------------------------------------------------------

# Processes whose network namespace is the node's: its dockerd, containerd, shims and host-network tasks.
node_pids() {
  local ns=/var/run/netns/$1 inode proc
  [ -e "$ns" ] || return 0
  inode=$(stat -L -c %i "$ns")
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/ns/net" 2>/dev/null)" = "net:[$inode]" ] && basename "$proc"
  done
  return 0
}

stop_node() {
  local node=$1 ns pid deadline
  ns=$(netns "$node")
  if [ -s "$RUN/$node.pid" ] && running "$(cat "$RUN/$node.pid")"; then
    pid=$(cat "$RUN/$node.pid")
    kill -TERM "$pid" 2>/dev/null || true  # dockerd stops its containers on the way out
    deadline=$((SECONDS + 20))
    while running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  fi
  local left
  left=$(node_pids "$ns")
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
  fi
  rm -f "$RUN/$node.pid" "$(socket "$node")"
}

unmount_under() {
  local dir=$1
  awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
}

down() {
  local node
  for node in "${NODES[@]}"; do stop_node "$node"; done
  if [ -s "$RUN/registry.pid" ] && running "$(cat "$RUN/registry.pid")"; then
    kill -TERM "$(cat "$RUN/registry.pid")" 2>/dev/null || true
  fi
  for node in "${NODES[@]}"; do
    [ -e "/var/run/netns/$(netns "$node")" ] && ip netns del "$(netns "$node")"
    ip link del "psw-$node" 2>/dev/null || true
    # cgroups the node's containers lived in (empty once they are gone)
    find /sys/fs/cgroup -depth -type d -path "*/portero-$node*" -exec rmdir {} + 2>/dev/null || true
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  unmount_under "$RUN"
  unmount_under "$LIB"
  rm -rf "$RUN" "$LIB"
  say "removed (logs kept in $LOGDIR)"
}

# -- main ---------------------------------------------------------------------------------------------------

holder=""
command=${1:-up}
shift || true
while [ $# -gt 0 ]; do
  case $1 in
    --holder) holder=$2; shift 2 ;;
    *) say "unknown argument $1"; exit 2 ;;
  esac
done

case $command in
  up)
    [ "$(id -u)" -eq 0 ] || { say "not root: no cluster (the cluster tests will skip)"; exit 0; }
    install_missing "the cluster tests will skip" docker.io docker-registry iproute2 util-linux || exit 0
    command -v dockerd >/dev/null || { say "no dockerd"; exit 0; }
    mkdir -p "$RUN/holders"
    [ -n "$holder" ] && touch "$RUN/holders/$holder"
    started=$SECONDS
    make_links
    start_registry
    for node in "${NODES[@]}"; do start_engine "$node"; done
    form_swarm
    wait_nodes_ready
    load_base_image
    say "3 nodes ($(node_docker "${NODES[0]}" node ls --format '{{.Hostname}}:{{.Status}}' | sort | tr '\n' ' ')), registry $NET.1:$REGISTRY_PORT; $((SECONDS - started)) s"
    ;;
  down)
    [ -d "$RUN" ] || [ -e "/var/run/netns/$(netns n1)" ] || { say "not up"; exit 0; }
    [ -n "$holder" ] && rm -f "$RUN/holders/$holder"
    others=$(live_holders | tr '\n' ' ')
    if [ -n "$others" ]; then
      say "still held by ${others}: left up"
      exit 0
    fi
    down
    ;;
  status)
    for node in "${NODES[@]}"; do
      if answers "$node"; then state="engine answers, swarm $(swarm_state "$node")"; else state="engine down"; fi
      echo "$node $(netns "$node") $(address "$node"): $state"
    done
    echo "registry $NET.1:$REGISTRY_PORT: $(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' "http://$NET.1:$REGISTRY_PORT/v2/" || echo down)"
    ;;
  *)
    say "usage: swarm-cluster.sh up|down|status [--holder PID]"
    exit 2
    ;;
esac
