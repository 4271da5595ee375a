#!/usr/bin/env bash
# Cross-node relay cost on this machine, loopback only: the same relay load against
#
#   single : one node (SINGLE_SHARDS shards), every pair on that node
#   cluster: two nodes (CLUSTER_SHARDS shards each) sharing one redis-server, every pair split
#            across the two nodes (loadtest --pair-tags: clients 2k and 2k+1 share a unique
#            interest and connect to different nodes), so every message goes through Redis
#
# for two loads: closed loop (1 message in flight per client: the most each setup carries)
# and open loop at RATE messages/s (the latency at the same load). Every (load, setup) runs
# REPEAT times on fresh processes, interleaved; summary.md shows medians and the ratios
# cluster / single. CPU is the servers' own (/proc utime+stime of every node, and of Redis
# for the cluster) over the loadtest run, per message received.
#
# Exits non-zero if a run failed the load generator's checks or a cluster pair did not cross
# nodes (scripts/test.sh runs it briefly for that).
#
# Usage: scripts/bench-cluster.sh              (2000 connections, 15 s, RATE 20000, x3)
#        REPEAT=1 CONNS=400 DURATION=5 scripts/bench-cluster.sh   (quick)
# Environment: CONNS DURATION RATE REPEAT SINGLE_SHARDS (2) CLUSTER_SHARDS (1) OUT
#   SKIP_BUILD=1 to use target/release/{roulette,loadtest} as they are
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONNS=${CONNS:-2000}
DURATION=${DURATION:-15}
RATE=${RATE:-20000}
REPEAT=${REPEAT:-3}
SINGLE_SHARDS=${SINGLE_SHARDS:-2}
CLUSTER_SHARDS=${CLUSTER_SHARDS:-1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/roulette
LT=$TARGET/release/loadtest
OUT=${OUT:-$ROOT/target/bench-cluster/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
log() { printf '== %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building roulette and loadtest (release)"
  cargo build --release -q --bin roulette
  cargo build --release -q -p loadtest
fi
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }

PIDS=()
# SIGTERM first: the servers and Redis exit on it by themselves, so the shell has no killed job
# to report; SIGKILL only for one still running after 5 s.
cleanup() {
  local p i
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Start a node; sets ADDR once it listens (and, in a cluster, is linked to Redis).
start_node() { # log shards [cluster-url name]
  local logf=$1 shards=$2 url=${3:-} name=${4:-} args
  # The load comes from a few loopback addresses: every per-client limit is off.
  args=(--listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --shards "$shards" --rate-limit-per-sec 0
    --max-connections-per-ip 0 --handshake-rate-per-ip 0 --interest-wait 120)
  [ -n "$url" ] && args+=(--cluster "$url" --node-name "$name")
  RUST_LOG=info "$BIN" "${args[@]}" >/dev/null 2>"$logf" &
  PIDS+=($!)
  local i
  for i in $(seq 1 200); do
    if grep -q "roulette listening on" "$logf" && { [ -z "$url" ] || grep -q "cluster: connected to Redis" "$logf"; }; then
      ADDR=$(grep -o "roulette listening on [^ ]*" "$logf" | awk '{print $4}')
      return 0
    fi
    sleep 0.05
  done
  echo "node did not start: $(cat "$logf")" >&2; return 1
}

cpu_ticks() { # pid...: sum of utime+stime in clock ticks
  local t=0 p f
  for p in "$@"; do f=$(awk '{print $14+$15}' "/proc/$p/stat"); t=$((t + f)); done
  echo "$t"
}

run_one() { # load setup rep
  local load=$1 setup=$2 rep=$3 urls pids=() a b port rpid
  cleanup
  if [ "$setup" = single ]; then
    start_node "$OUT/$load-$setup-$rep.node.log" "$SINGLE_SHARDS"; a=$ADDR
    pids=("${PIDS[@]}")
    urls="ws://$a/ws"
  else
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --loglevel warning >/dev/null 2>&1 </dev/null &
    rpid=$!; PIDS+=("$rpid")
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    start_node "$OUT/$load-$setup-$rep.n1.log" "$CLUSTER_SHARDS" "redis://127.0.0.1:$port" n1; a=$ADDR
    start_node "$OUT/$load-$setup-$rep.n2.log" "$CLUSTER_SHARDS" "redis://127.0.0.1:$port" n2; b=$ADDR
    pids=("${PIDS[@]}")
    urls="ws://$a/ws,ws://$b/ws"
  fi
  local extra=(--in-flight 1)
  [ "$load" = open ] && extra=(--rate "$RATE")
  local t0 t1
  t0=$(cpu_ticks "${pids[@]}")
  "$LT" relay -c "$CONNS" -d "$DURATION" "${extra[@]}" --pair-tags --url "$urls" --sources 2 \
    --json "$OUT/$load-$setup-$rep.json" >"$OUT/$load-$setup-$rep.lt.log" 2>&1 || log "loadtest reported a failure ($load $setup #$rep)"
  t1=$(cpu_ticks "${pids[@]}")
  echo "$(( t1 - t0 ))" >"$OUT/$load-$setup-$rep.cputicks"
  cleanup
}

for rep in $(seq 1 "$REPEAT"); do
  for load in closed open; do
    for setup in single cluster; do
      log "$load loop, $setup, run $rep/$REPEAT"
      run_one "$load" "$setup" "$rep"
    done
  done
done

status=0
python3 - "$OUT" "$(getconf CLK_TCK)" >"$OUT/summary.md" <<'EOF' || status=$?
import json, os, statistics, sys
out, hz = sys.argv[1], int(sys.argv[2])
rows = {}
bad = []
problems = []
for f in sorted(os.listdir(out)):
    # Every run leaves a .cputicks file; one without its .json is a load generator that
    # never got to report (not built, did not start).
    if f.endswith(".cputicks") and not os.path.exists(os.path.join(out, f[:-9] + ".json")):
        bad.append(f[:-9] + " (no report)")
    if not f.endswith(".json"):
        continue
    load, setup, rep = f[:-5].split("-")
    d = json.load(open(os.path.join(out, f)))
    if not d.get("ok"):
        bad.append(f)
    if setup == "cluster" and (d.get("pairs") is None or d.get("pairs_cross_url") != d.get("pairs")):
        problems.append(f"{f}: {d.get('pairs_cross_url')} of {d.get('pairs')} pairs across nodes")
    m = d["messages"]
    got = m.get("received") or 0
    ticks = int(open(os.path.join(out, f[:-5] + ".cputicks")).read())
    vals = {
        "msgs/s": m.get("per_sec"),
        "p50 one-way (ms)": d["latency"]["p50_us"] / 1000,
        "p99 one-way (ms)": d["latency"]["p99_us"] / 1000,
        "server CPU per msg (µs)": ticks / hz * 1e6 / got if got else None,
        "lost": m.get("lost"),
        "pairs across nodes": d.get("pairs_cross_url"),
    }
    for k, v in vals.items():
        if v is not None:
            rows.setdefault((load, k), {}).setdefault(setup, []).append(v)
med = lambda xs: statistics.median(xs) if xs else None
def fmt(v):
    if v is None: return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
print("| load | metric | single node | 2-node cluster | cluster / single |")
print("|---|---|---|---|---|")
runs = 0
for (load, k), by in rows.items():
    s, c = med(by.get("single", [])), med(by.get("cluster", []))
    ratio = f"{c / s:.2f}" if s and c is not None else "–"
    runs = len(by.get("cluster", []))
    print(f"| {load} | {k} | {fmt(s)} | {fmt(c)} | {ratio} |")
print()
print(f"medians of {runs} runs each; failed runs: {bad if bad else 'none'}")
for p in problems:
    print(f"not every cluster pair crossed nodes: {p}")
sys.exit(1 if bad or problems else 0)
EOF
cat "$OUT/summary.md"
log "results in $OUT"
exit "$status"
