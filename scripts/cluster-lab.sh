#!/usr/bin/env bash
# A small data centre on one machine, as root, for trying cluster failures by hand and for
# tests/cluster_lab.rs: one network namespace per roulette node, per Redis, per Sentinel and
# per load-generator host, each with its own address on a private bridge (inside a namespace
# of its own too, so nothing is added to the host's network), and tc netem on chosen links.
#
#   cluster-lab.sh up N [LOADGENS]   build it, start Redis (master + replica) and three
#                                    Sentinels, stay in the foreground; Ctrl-C (or `down`
#                                    from another shell) tears everything down
#   cluster-lab.sh run N [LOADGENS] -- CMD...   the same, run CMD, tear down when it ends
#   cluster-lab.sh netem NODE delay 40ms [JITTER] loss 1%   shape NODE <-> Redis/Sentinels
#                                    (netem, or nftables + scripts/lab-delay.py without it)
#   cluster-lab.sh unshape NODE      remove that shaping
#   cluster-lab.sh partition NODE    cut NODE off from Redis and the Sentinels (clients still
#                                    reach it)
#   cluster-lab.sh heal NODE         end the partition (shaping stays)
#   cluster-lab.sh exec NS CMD...    run CMD in namespace NS (n1.., lg1.., redis1, redis2, s1..)
#   cluster-lab.sh kill NS           stop every process in NS (e.g. kill redis1: the master)
#   cluster-lab.sh addr NS           NS's address
#   cluster-lab.sh status            namespaces, addresses, shaping
#   cluster-lab.sh down              tear down (also cleans up after a crashed `up`)
#
# Addresses: 10.77.0.0/24 (LAB_SUBNET, first three octets). Redis 10 (master) and 11
# (replica), Sentinels 21-23, nodes 101.., load generators 201... Shaping applies only to
# traffic between a node and 10.77.0.0/27 (Redis and Sentinels), in both directions: the
# node's own interface shapes what it sends, the bridge port facing it what it receives.
# Environment: LAB_PREFIX (namespace/link prefix, default rlab), LAB_DIR (state and logs,
# default /tmp/$LAB_PREFIX), LAB_SUBNET (default 10.77.0), DOWN_AFTER (Sentinel
# down-after-milliseconds, default 5000), REDIS_PORT (6379), SENTINEL_PORT (26379),
# MASTER_NAME (roulette).
set -euo pipefail

P=${LAB_PREFIX:-rlab}
DIR=${LAB_DIR:-/tmp/$P}
NET=${LAB_SUBNET:-10.77.0}
DOWN_AFTER=${DOWN_AFTER:-5000}
REDIS_PORT=${REDIS_PORT:-6379}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
MASTER_NAME=${MASTER_NAME:-roulette}
SW=${P}-sw
BR=${P}br0
REDIS_RANGE=$NET.0/27

die() { echo "cluster-lab: $*" >&2; exit 1; }
need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
  command -v ip >/dev/null || die "needs ip (iproute2)"
  command -v tc >/dev/null || die "needs tc (iproute2)"
}

# Host name -> last octet.
octet() {
  case $1 in
    redis1) echo 10 ;;
    redis2) echo 11 ;;
    s[1-3]) echo $((20 + ${1#s})) ;;
    n[0-9]*) local i=${1#n}; [ "$i" -ge 1 ] && [ "$i" -le 99 ] || die "node index 1-99: $1"; echo $((100 + i)) ;;
    lg[0-9]*) local i=${1#lg}; [ "$i" -ge 1 ] && [ "$i" -le 50 ] || die "loadgen index 1-50: $1"; echo $((200 + i)) ;;
    *) die "unknown host $1 (n1.., lg1.., redis1, redis2, s1-s3)" ;;
  esac
}
ns() { echo "$P-$1"; }
addr() { echo "$NET.$(octet "$1")"; }
# Bridge-side end of host $1's link (interface names: at most 15 characters).
port() { echo "${P}p$(octet "$1")"; }

add_host() { # name
  local h=$1 n; n=$(ns "$h")
  ip netns add "$n"
  ip link add "${P}h$(octet "$h")" type veth peer name "$(port "$h")"
  ip link set "${P}h$(octet "$h")" netns "$n"
  ip link set "$(port "$h")" netns "$SW"
  ip -n "$n" link set "${P}h$(octet "$h")" name eth0
  ip -n "$n" addr add "$(addr "$h")/24" dev eth0
  ip -n "$n" link set lo up
  ip -n "$n" link set eth0 up
  ip -n "$SW" link set "$(port "$h")" master "$BR" up
}

teardown() {
  local n
  [ -z "${SLEEP_PID:-}" ] || kill "$SLEEP_PID" 2>/dev/null || true
  [ -z "${CHILD_PID:-}" ] || kill "$CHILD_PID" 2>/dev/null || true
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-" || true); do
    # Every process left in the lab's namespaces (servers, Redis, Sentinels, load generators).
    local pids; pids=$(ip netns pids "$n" 2>/dev/null || true)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
  done
  sleep 0.3
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-" || true); do
    local pids; pids=$(ip netns pids "$n" 2>/dev/null || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    # Deleting a namespace deletes the veth ends inside it, and so their peers.
    ip netns del "$n" 2>/dev/null || true
  done
  rm -f "$DIR/ready" "$DIR/up.pid"
}

start_redis() {
  mkdir -p "$DIR/redis1" "$DIR/redis2"
  ip netns exec "$(ns redis1)" redis-server --bind "$(addr redis1)" --port "$REDIS_PORT" \
    --save '' --appendonly no --dir "$DIR/redis1" --protected-mode no \
    >"$DIR/redis1.log" 2>&1 &
  ip netns exec "$(ns redis2)" redis-server --bind "$(addr redis2)" --port "$REDIS_PORT" \
    --save '' --appendonly no --dir "$DIR/redis2" --protected-mode no \
    --replicaof "$(addr redis1)" "$REDIS_PORT" >"$DIR/redis2.log" 2>&1 &
  local s
  for s in s1 s2 s3; do
    cat >"$DIR/$s.conf" <<EOF
port $SENTINEL_PORT
bind $(addr "$s")
protected-mode no
dir $DIR
sentinel monitor $MASTER_NAME $(addr redis1) $REDIS_PORT 2
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
EOF
    ip netns exec "$(ns "$s")" redis-server "$DIR/$s.conf" --sentinel >"$DIR/$s.log" 2>&1 &
  done
  local i
  for i in $(seq 100); do
    if ip netns exec "$(ns s1)" redis-cli -h "$(addr s1)" -p "$SENTINEL_PORT" \
        sentinel replicas "$MASTER_NAME" 2>/dev/null | grep -q "$(addr redis2)" &&
       ip netns exec "$(ns s3)" redis-cli -h "$(addr s3)" -p "$SENTINEL_PORT" \
        sentinel sentinels "$MASTER_NAME" 2>/dev/null | grep -c "^ip$" | grep -q 2; then
      return 0
    fi
    sleep 0.2
  done
  die "Redis and Sentinels did not come up (logs in $DIR)"
}

build() { # nodes loadgens
  local nodes=$1 lgs=$2 h
  need_root
  command -v redis-server >/dev/null || die "needs redis-server (apt-get install redis-server)"
  if ip netns list | grep -qE "^$P-"; then
    die "a lab with prefix $P is up already (cluster-lab.sh down, or LAB_PREFIX=...)"
  fi
  mkdir -p "$DIR"
  ip netns add "$SW"
  ip -n "$SW" link add "$BR" type bridge
  ip -n "$SW" link set "$BR" up
  for h in redis1 redis2 s1 s2 s3; do add_host "$h"; done
  for h in $(seq "$nodes"); do add_host "n$h"; done
  for h in $(seq "$lgs"); do add_host "lg$h"; done
  start_redis
}

sentinel_url() {
  echo "redis+sentinel://$(addr s1):$SENTINEL_PORT,$(addr s2):$SENTINEL_PORT,$(addr s3):$SENTINEL_PORT/$MASTER_NAME"
}

announce() {
  echo "lab up (prefix $P, state $DIR):"
  ip netns list | awk '{print $1}' | grep -E "^$P-" | grep -v "^$SW$" | sort | while read -r n; do
    printf '  %-12s %s\n' "${n#"$P"-}" "$(ip -n "$n" -4 -o addr show dev eth0 | awk '{print $4}')"
  done
  echo "  --cluster $(sentinel_url)"
}

# Shaping of node $1's traffic to and from Redis and the Sentinels (10.77.0.0/27), in both
# directions. With sch_netem in the kernel: a prio qdisc whose third band alone carries
# netem, u32 filters sending only the Redis range into it, on the node's interface (what it
# sends) and on the bridge port facing it (what it receives). Without (netem is not built
# into every kernel, and modules may not be loadable): nftables drops the lost share of
# packets on the real link, and scripts/lab-delay.py, to which nftables redirects the node's
# new connections to the Redis range, delays each direction (so the delay applies to
# connections opened after `netem`; the lab test shapes before it starts the nodes).
DELAY_MARK=0x77
DELAY_PORT=16379
shape() { # node netem-args...
  local h=$1; shift
  local n; n=$(ns "$h")
  ip netns list | grep -q "^$n\b" || die "no namespace $n (is the lab up?)"
  unshape "$h"
  if set_netem "$n" eth0 dst "$@" 2>/dev/null; then
    set_netem "$SW" "$(port "$h")" src "$@"
    return
  fi
  tc -n "$n" qdisc del dev eth0 root 2>/dev/null || true
  command -v nft >/dev/null || die "no netem in this kernel, and no nft (apt-get install nftables) for the fallback"
  local delay=0 jitter=0 loss=0
  while [ $# -gt 0 ]; do
    case $1 in
      delay) delay=$(ms "$2"); shift 2
        if [ $# -gt 0 ] && [[ $1 =~ ^[0-9.]+(ms|s|us)$ ]]; then jitter=$(ms "$1"); shift; fi ;;
      loss) loss=$(awk -v p="${2%\%}" 'BEGIN{printf "%d", p*100}'); shift 2 ;;
      *) die "fallback shaping knows delay TIME [JITTER] and loss PCT%, not $1" ;;
    esac
  done
  local rules="table ip ${P}shape {"$'\n'
  if [ "$delay" -gt 0 ] || [ "$jitter" -gt 0 ]; then
    ip netns exec "$n" python3 "$(dirname "$0")/lab-delay.py" "$DELAY_PORT" "$delay" "$jitter" \
      "$((DELAY_MARK))" >>"$DIR/delay-$h.log" 2>&1 &
    echo $! >"$DIR/delay-$h.pid"
    rules+=" chain nat { type nat hook output priority -100; ip daddr $REDIS_RANGE meta mark != $DELAY_MARK meta l4proto tcp redirect to :$DELAY_PORT; }"$'\n'
  fi
  if [ "$loss" -gt 0 ]; then
    rules+=" chain out { type filter hook output priority 0; ip daddr $REDIS_RANGE numgen random mod 10000 < $loss drop; }"$'\n'
    rules+=" chain in { type filter hook input priority 0; ip saddr $REDIS_RANGE numgen random mod 10000 < $loss drop; }"$'\n'
  fi
  ip netns exec "$n" nft -f - <<<"$rules }"
  # The proxy listens before anything is redirected to it.
  for _ in $(seq 50); do
    [ "$delay" -gt 0 ] || break
    # Look, do not connect: a connection of its own would not be a redirected one.
    ss -N "$n" -ltn "sport = :$DELAY_PORT" | grep -q LISTEN && break
    sleep 0.1
  done
}
ms() { # 40ms | 0.04s | 500us -> whole milliseconds
  awk -v t="$1" 'BEGIN{ if (t ~ /ms$/) v=t+0; else if (t ~ /us$/) v=(t+0)/1000; else v=(t+0)*1000; printf "%d", v }'
}
set_netem() { # netns dev dst|src netem-args...
  local n=$1 dev=$2 dir=$3; shift 3
  tc -n "$n" qdisc add dev "$dev" root handle 1: prio bands 3 priomap 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 &&
  tc -n "$n" qdisc add dev "$dev" parent 1:3 handle 30: netem "$@" &&
  tc -n "$n" filter add dev "$dev" parent 1: protocol ip prio 1 u32 match ip "$dir" "$REDIS_RANGE" flowid 1:3
}
unshape() {
  local h=$1
  tc -n "$(ns "$h")" qdisc del dev eth0 root 2>/dev/null || true
  tc -n "$SW" qdisc del dev "$(port "$h")" root 2>/dev/null || true
  ip netns exec "$(ns "$h")" nft delete table ip "${P}shape" 2>/dev/null || true
  if [ -f "$DIR/delay-$h.pid" ]; then
    kill "$(cat "$DIR/delay-$h.pid")" 2>/dev/null || true
    rm -f "$DIR/delay-$h.pid"
  fi
}
# A partition drops everything between the node and the Redis range, silently (as a dead
# link does: no reset, no ICMP), existing connections included; clients still reach it.
partition() {
  command -v nft >/dev/null || die "partition needs nft (apt-get install nftables)"
  ip netns exec "$(ns "$1")" nft -f - <<EOF
table ip ${P}cut {
  chain out { type filter hook output priority -10; ip daddr $REDIS_RANGE drop; }
  chain in { type filter hook input priority -10; ip saddr $REDIS_RANGE drop; }
}
EOF
}
heal() {
  ip netns exec "$(ns "$1")" nft delete table ip "${P}cut" 2>/dev/null || true
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  up|run)
    nodes=${1:-3}; lgs=3
    [ $# -gt 0 ] && shift
    if [ $# -gt 0 ] && [ "$1" != -- ]; then lgs=$1; shift; fi
    [[ $nodes =~ ^[0-9]+$ && $lgs =~ ^[0-9]+$ ]] || die "usage: $0 $cmd N [LOADGENS]"
    # Torn down however this ends: normal exit, error half-way through, Ctrl-C, kill.
    trap teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    build "$nodes" "$lgs"
    announce
    if [ "$cmd" = run ]; then
      [ "${1:-}" = -- ] && shift
      [ $# -gt 0 ] || die "usage: $0 run N [LOADGENS] -- CMD..."
      # In the background, so that a signal to this script runs the teardown at once
      # instead of after the command (bash runs traps only between foreground commands).
      LAB_URL=$(sentinel_url) "$@" &
      CHILD_PID=$!
      wait "$CHILD_PID"
    else
      echo $$ >"$DIR/up.pid"
      touch "$DIR/ready"
      echo "Ctrl-C (or $0 down) tears it down"
      # sleep in the background so the traps run at once on a signal.
      while true; do sleep 3600 & SLEEP_PID=$!; wait $SLEEP_PID || true; done
    fi
    ;;
  netem)
    [ $# -ge 2 ] || die "usage: $0 netem NODE delay 40ms [10ms] loss 1%"
    need_root; shape "$@" ;;
  unshape)
    [ $# -eq 1 ] || die "usage: $0 unshape NODE"
    need_root; unshape "$1" ;;
  partition)
    [ $# -eq 1 ] || die "usage: $0 partition NODE"
    need_root; partition "$1" ;;
  heal)
    [ $# -eq 1 ] || die "usage: $0 heal NODE"
    need_root; heal "$1" ;;
  exec)
    [ $# -ge 2 ] || die "usage: $0 exec NS CMD..."
    need_root; h=$1; shift; exec ip netns exec "$(ns "$h")" "$@" ;;
  kill)
    [ $# -eq 1 ] || die "usage: $0 kill NS"
    need_root; pids=$(ip netns pids "$(ns "$1")"); [ -z "$pids" ] || kill $pids ;;
  addr)
    [ $# -eq 1 ] || die "usage: $0 addr NS"; addr "$1" ;;
  url) sentinel_url ;;
  status)
    need_root; announce
    for n in $(ip netns list | awk '{print $1}' | grep -E "^$P-n" || true); do
      tc -n "$n" qdisc show dev eth0 | grep netem | sed "s/^/  ${n#"$P"-}: /" || true
      ip netns exec "$n" nft list tables 2>/dev/null | sed "s/^/  ${n#"$P"-}: /" || true
    done ;;
  down)
    need_root
    if [ -f "$DIR/up.pid" ] && kill -0 "$(cat "$DIR/up.pid")" 2>/dev/null; then
      kill "$(cat "$DIR/up.pid")"
      for _ in $(seq 50); do ip netns list | grep -qE "^$P-" || exit 0; sleep 0.1; done
    fi
    teardown ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
