#!/usr/bin/env bash
# Pairing capacity through the Redis cluster queue, on this machine, loopback only.
#
# Starts one redis-server (no persistence) and two roulette nodes on it with --cluster-hold 0
# and every per-client limit off, then runs `loadtest pairing --pair-tags` over both nodes:
# strangers 2k and 2k+1 join at the same instant on different nodes with one interest of their
# own, so no stranger can pair on its own node and every pairing is made by the Redis pairing
# script. The sweep gives achieved pairings/s, time to pair and CPU per pairing (both nodes,
# Redis, the load generator) per offered rate, and the knee.
#
# Then, unless PROFILE=0, one more step at the knee's rate (or PROFILE_RATE) with Redis's
# statistics reset before and read after, and every Redis command logged with its duration
# (slowlog threshold 0): Redis calls per pairing by command and by script (EVALSHA's SHA1 is
# matched with the scripts in src/cluster/), the microseconds each takes, and the nodes'
# cluster counters (pipelines, publishes, records) per pairing. summary.md has the tables.
#
# Exits non-zero if a sweep step was not clean (errors, timeouts) or a pair did not cross
# nodes (scripts/test.sh runs it briefly for that).
#
# Usage: scripts/bench-pairing.sh                            (the full sweep and the profile)
#        RATES=50,150 STEP=1 WARMUP=0.5 PROFILE=0 scripts/bench-pairing.sh       (brief)
# Environment: RATES (250,500,1000,1500,2000,3000,4000) STEP (5) WARMUP (1) SHARDS (1 per
#   node) PROCESSES (1) SOURCES (2) PROFILE (1) PROFILE_RATE (the knee) PROFILE_STEP (3)
#   OUT (target/bench-pairing/DATE) SKIP_BUILD=1 (use target/release/* as they are)
#   Extra `loadtest pairing` flags go after the script's name, e.g. --keep-going.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATES=${RATES:-250,500,1000,1500,2000,3000,4000}
STEP=${STEP:-5}
WARMUP=${WARMUP:-1}
SHARDS=${SHARDS:-1}
PROCESSES=${PROCESSES:-1}
SOURCES=${SOURCES:-2}
PROFILE=${PROFILE:-1}
PROFILE_STEP=${PROFILE_STEP:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/roulette
LT=$TARGET/release/loadtest
OUT=${OUT:-$ROOT/target/bench-pairing/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
log() { printf '== %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building roulette and loadtest (release)"
  cargo build --release -q --bin roulette
  cargo build --release -q -p loadtest
fi
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server redis-tools)" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --loglevel warning >"$OUT/redis.log" 2>&1 </dev/null &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
rcli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 1 100); do rcli ping >/dev/null 2>&1 && break; sleep 0.05; done
rcli ping >/dev/null

# start_node NAME: sets ADDR, METRICS and NODE_PID once it listens and is linked to Redis.
start_node() {
  local name=$1 logf=$OUT/$1.log i
  RUST_LOG=info "$BIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --shards "$SHARDS" \
    --cluster "redis://127.0.0.1:$PORT" --cluster-hold 0 --node-name "$name" \
    --max-connections-per-ip 0 --handshake-rate-per-ip 0 --rate-limit-per-sec 0 \
    >/dev/null 2>"$logf" &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for i in $(seq 1 200); do
    if grep -q "roulette listening on" "$logf" && grep -q "cluster: connected to Redis" "$logf"; then
      ADDR=$(grep -o "roulette listening on [^ ]*" "$logf" | awk '{print $4}')
      METRICS=$(grep -o "metrics listening on [^ ]*" "$logf" | awk '{print $4}')
      return 0
    fi
    sleep 0.05
  done
  echo "node $name did not start: $(cat "$logf")" >&2
  return 1
}
start_node n1; A=$ADDR; MA=$METRICS; P1=$NODE_PID
start_node n2; B=$ADDR; MB=$METRICS; P2=$NODE_PID
URLS="ws://$A/ws,ws://$B/ws"
log "redis $REDIS_PID on :$PORT; n1 $P1 on $A; n2 $P2 on $B"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "redis: $(redis-server --version)"
  echo "nodes: --shards $SHARDS --cluster-hold 0, revision $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} >"$OUT/setup.txt"

status=0
log "sweep: $RATES pairings/s, ${STEP} s steps after ${WARMUP} s warm-up"
"$LT" pairing --rates "$RATES" --step-duration "$STEP" --warmup "$WARMUP" \
  --url "$URLS" --pair-tags --server-pid "$P1,$P2" --redis-pid "$REDIS_PID" \
  --processes "$PROCESSES" --sources "$SOURCES" \
  --json "$OUT/sweep.json" --plot "$OUT/sweep.svg" --quiet "$@" 2>"$OUT/sweep.log" || status=$?
cat "$OUT/sweep.log" >&2
[ -s "$OUT/sweep.json" ] || { echo "no sweep summary (exit code $status)" >&2; exit 1; }

metrics() { # FILE: both nodes' cluster counters
  { curl -sf "http://$MA/metrics" | sed 's/^/n1 /'; curl -sf "http://$MB/metrics" | sed 's/^/n2 /'; } |
    grep -E '^n[12] roulette_cluster_' >"$1" || true
}

if [ "$PROFILE" = 1 ]; then
  RATE=${PROFILE_RATE:-$(python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["knee"]; print(k["offered_per_s"] if k else "")' "$OUT/sweep.json")}
  if [ -z "$RATE" ]; then
    log "no knee: no profile step (set PROFILE_RATE)"
  else
    log "profile: one ${PROFILE_STEP} s step at $RATE pairings/s, every Redis command logged"
    rcli config set slowlog-log-slower-than 0 >/dev/null
    rcli config set slowlog-max-len 1000000 >/dev/null
    rcli slowlog reset >/dev/null
    rcli config resetstat >/dev/null
    metrics "$OUT/metrics-before.txt"
    "$LT" pairing --rates "$RATE" --step-duration "$PROFILE_STEP" --warmup 0 \
      --url "$URLS" --pair-tags --server-pid "$P1,$P2" --redis-pid "$REDIS_PID" \
      --processes "$PROCESSES" --sources "$SOURCES" \
      --json "$OUT/profile.json" --quiet "$@" 2>"$OUT/profile.log" || true
    # Let the last closes reach Redis.
    sleep 1
    metrics "$OUT/metrics-after.txt"
    rcli info commandstats >"$OUT/commandstats.txt"
    # SLOWLOG GET through a few lines of RESP: redis-cli's JSON output breaks on the binary
    # PUBLISH payloads.
    python3 - "$PORT" "$OUT/slowlog.json" <<'PY'
import json, socket, sys
f = socket.create_connection(("127.0.0.1", int(sys.argv[1]))).makefile("rwb")
f.write(b"SLOWLOG GET 1000000\r\n"); f.flush()
def read():
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"*":
        n = int(rest); return None if n < 0 else [read() for _ in range(n)]
    if t == b"$":
        n = int(rest); return None if n < 0 else f.read(n + 2)[:-2].decode("latin-1")
    if t == b":":
        return int(rest)
    if t == b"+":
        return rest.decode()
    raise SystemExit(f"redis answered {line!r}")
json.dump(read(), open(sys.argv[2], "w"))
PY
    rcli config set slowlog-log-slower-than 10000 >/dev/null
    for s in pair withdraw avoid purge; do
      printf '%s %s\n' "$(cat src/cluster/lib.lua "src/cluster/$s.lua" | sha1sum | cut -d' ' -f1)" "$s"
    done >"$OUT/script-shas.txt"
  fi
fi

python3 - "$OUT" >"$OUT/summary.md" <<'EOF' || status=1
import json, os, re, sys
from collections import defaultdict
out = sys.argv[1]
sweep = json.load(open(os.path.join(out, "sweep.json")))
print(open(os.path.join(out, "setup.txt")).read())
print("## Sweep (every pairing across the two nodes, through Redis)\n")
print("| offered/s | achieved/s | ratio | p50 | p99 | errors | Redis µs CPU/pairing | nodes µs CPU/pairing | loadtest µs CPU/pairing | pairs across nodes | verdict |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
problems = []
def ms(us): return f"{us/1000:.1f} ms" if us < 1_000_000 else f"{us/1e6:.2f} s"
def f(v): return "–" if v is None else f"{v:.1f}"
for s in sweep["steps"]:
    red = (s["cpu"].get("redis") or {}).get("per_pairing_us")
    print(f"| {s['offered_per_s']:.0f} | {s['achieved_per_s']:.1f} | {100*s['ratio']:.1f} % | {ms(s['time_to_pair']['p50_us'])} | {ms(s['time_to_pair']['p99_us'])} | {s['errors_total']} | {f(red)} | {f(s['cpu']['server_per_pairing_us'])} | {f(s['cpu']['loadtest_per_pairing_us'])} | {s['pairs_cross_url']}/{s['pairs']} | {'sustained' if s['sustained'] else 'not: ' + '; '.join(s['why_not'])} |")
    if s["pairs"] is None or s["pairs_cross_url"] != s["pairs"]:
        problems.append(f"step {s['offered_per_s']}/s: {s['pairs_cross_url']} of {s['pairs']} pairs across nodes")
    if not s["clean"]:
        problems.append(f"step {s['offered_per_s']}/s not clean: {s['why_not']}")
k = sweep["knee"]
print()
print(f"knee: {sweep['knee_definition']}\n")
if k:
    print(f"**Knee: {k['offered_per_s']:.0f} pairings/s** (achieved {k['achieved_per_s']:.1f}/s), time to pair p50 {ms(k['time_to_pair_p50_us'])}, p99 {ms(k['time_to_pair_p99_us'])}, Redis {f(k['redis_cpu_per_pairing_us'])} µs CPU per pairing, nodes {f(k['server_cpu_per_pairing_us'])} µs CPU per pairing.\n")
else:
    print("**No knee**: the first step was not sustained.\n")
if sweep.get("not_run"):
    print(f"not run (the sweep stops after the first step not sustained): {sweep['not_run']}\n")

prof = os.path.join(out, "profile.json")
if os.path.exists(prof) and os.path.exists(os.path.join(out, "commandstats.txt")):
    p = json.load(open(prof))
    st = p["steps"][0]
    # Every pairing of the profile step, warm-up and drain included (Redis saw all of them).
    pairings = st["strangers"]["paired"] / 2
    print(f"## Profile: {st['offered_per_s']:.0f} pairings/s for {st['window_s']} s, {pairings:.0f} pairings ({st['errors_total']} errors)\n")
    print("Redis `INFO commandstats` after `CONFIG RESETSTAT` (commands run inside scripts are counted too):\n")
    print("| command | calls | calls per pairing | µs per call | µs per pairing |")
    print("|---|---|---|---|---|")
    for line in open(os.path.join(out, "commandstats.txt")):
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", line.strip())
        if not m: continue
        name, calls, usec, per = m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4))
        if name in ("config", "info", "slowlog", "ping"): continue
        print(f"| {name} | {calls} | {calls/pairings:.2f} | {per:.2f} | {usec/pairings:.2f} |")
    shas = dict(l.split() for l in open(os.path.join(out, "script-shas.txt")))
    log = json.load(open(os.path.join(out, "slowlog.json")))
    by = defaultdict(list)
    for e in log:
        # [id, unix time, duration µs, [args], client address, client name]
        args = e[3] if len(e) > 3 else []
        if not args: continue
        cmd = str(args[0]).upper()
        if cmd in ("EVALSHA", "EVAL") and len(args) > 3:
            key = f"EVALSHA {shas.get(str(args[1]), str(args[1])[:8])} {args[3]}"
        elif cmd in ("CONFIG", "SLOWLOG", "INFO"):
            continue
        else:
            key = cmd
        by[key].append(int(e[2]))
    print()
    print(f"Every top-level command (slowlog at threshold 0; {len(log)} entries), by script and mode (`pair q` = enqueue, `pair o` = interest wait over; `avoid set|clear`):\n")
    print("| command | calls | per pairing | µs per call (mean) | median | p99 | µs per pairing |")
    print("|---|---|---|---|---|---|---|")
    for key, v in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        v.sort()
        n, us = len(v), sum(v)
        print(f"| {key} | {n} | {n/pairings:.2f} | {us/n:.2f} | {v[n//2]} | {v[min(n-1, int(n*0.99))]} | {us/pairings:.2f} |")
    def load(fn):
        d = defaultdict(float)
        for line in open(os.path.join(out, fn)):
            parts = line.split()
            if len(parts) < 3 or parts[1].startswith("#"): continue
            name = re.sub(r"\{.*\}", "", parts[1])
            if name.endswith(("_total", "_sum", "_count")):
                try: d[name] += float(parts[2])
                except ValueError: pass
        return d
    a, b = load("metrics-before.txt"), load("metrics-after.txt")
    print("\nBoth nodes' cluster counters over the profile step, per pairing:\n")
    print("| counter | delta | per pairing |")
    print("|---|---|---|")
    for name in sorted(b):
        d = b[name] - a.get(name, 0)
        if d:
            print(f"| {name} | {d:.4g} | {d/pairings:.3f} |")
    rs, rc = (b.get("roulette_cluster_redis_roundtrip_seconds_sum", 0) - a.get("roulette_cluster_redis_roundtrip_seconds_sum", 0),
              b.get("roulette_cluster_redis_roundtrip_seconds_count", 0) - a.get("roulette_cluster_redis_roundtrip_seconds_count", 0))
    if rc:
        print(f"\nmean pipeline round trip {1e6*rs/rc:.0f} µs over {rc:.0f} pipelines ({rc/pairings:.2f} per pairing)")
for pr in problems:
    print(f"\nPROBLEM: {pr}")
sys.exit(1 if problems else 0)
EOF
cat "$OUT/summary.md"
log "results in $OUT (sweep.svg: the plot)"
exit "$status"
