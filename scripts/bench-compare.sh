#!/usr/bin/env bash
# Peer comparison on this machine, loopback only: roulette against the tokio +
# tokio-tungstenite baseline (baseline/, tungstenite's default 128 KiB read buffer and a
# 4 KiB one) and, when ../shared/uws-chat is present beside the checkout (an optional
# anchor, never a dependency of roulette), against uWebSockets with 1 and 2 event loops,
# each next to roulette with the same number of loops — all driven by the same load
# generator (loadtest/).
#
#   idle : CONNS_IDLE paired connections held IDLE_HOLD s  -> server RSS per connection,
#          connect + handshake rate
#   relay: for each N in CONNS_RELAY, N connections, closed loop, 1 message in flight per
#          client, 64-byte messages, DURATION s -> msgs/s, one-way p50/p99, server and
#          loadtest CPU per message
#
# Every (scenario, server) runs REPEAT times on a freshly started server, interleaved
# (repeat 1 of every server, then repeat 2, ...) so that drift on the machine hits all
# servers alike; the table shows medians and the ratios roulette / baseline.
#
# Usage: scripts/bench-compare.sh                       (full: 15000 idle, 10000 relay, 20 s, x3)
#        REPEAT=1 CONNS_IDLE=2000 CONNS_RELAY=2000 DURATION=5 scripts/bench-compare.sh   (quick)
# Environment:
#   CONNS_IDLE (15000) CONNS_RELAY (10000) DURATION (20) REPEAT (3) IDLE_HOLD (5)
#   IDLE_PROCESSES (2: a process holds at most ~20000 fds here) RELAY_PROCESSES (1)
#   SOURCES (4 loopback source addresses) LT_TIMEOUT (30 s per loadtest wait)
#   SERVERS (default "roulette baseline baseline-4k", or with the anchor present
#     "roulette-s1 uws-1 roulette-s2 uws-2 baseline") ROULETTE_ARGS / BASELINE_ARGS
#     roulette-old: ROULETTE_OLD_BIN, another roulette build with the same flags (before/after)
#     roulette-sN: roulette with --shards N;  uws-N: uws-chat with --threads N
#   UWS_CHAT_DIR (../shared/uws-chat) UWS_BIN (built from it unless given)
#   RATIOS ("roulette/OTHER" for every other server): the ratio columns, as A/B pairs
#   SKIP_BUILD=1 with ROULETTE_BIN / LOADTEST_BIN / BASELINE_BIN to use prebuilt binaries
#   OUT (target/bench-compare/DATE): where the JSON of every run, the logs and summary.md go
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '== %s\n' "$*" >&2; }

CONNS_IDLE=${CONNS_IDLE:-15000}
CONNS_RELAY=${CONNS_RELAY:-10000}
DURATION=${DURATION:-20}
REPEAT=${REPEAT:-3}
IDLE_HOLD=${IDLE_HOLD:-5}
IDLE_PROCESSES=${IDLE_PROCESSES:-2}
RELAY_PROCESSES=${RELAY_PROCESSES:-1}
SOURCES=${SOURCES:-4}
LT_TIMEOUT=${LT_TIMEOUT:-30}
UWS_CHAT_DIR=${UWS_CHAT_DIR:-$ROOT/../shared/uws-chat}
if [ -z "${UWS_BIN:-}" ] && [ -x "$UWS_CHAT_DIR/build.sh" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building the optional uWebSockets anchor ($UWS_CHAT_DIR/build.sh)"
  UWS_BIN=$(bash "$UWS_CHAT_DIR/build.sh" | tail -n 1)
fi
UWS_BIN=${UWS_BIN:-}
if [ -n "$UWS_BIN" ]; then
  SERVERS=${SERVERS:-roulette-s1 uws-1 roulette-s2 uws-2 baseline}
  RATIOS=${RATIOS:-roulette-s1/uws-1 roulette-s2/uws-2 roulette-s2/baseline}
else
  SERVERS=${SERVERS:-roulette baseline baseline-4k}
fi
ROULETTE_ARGS=${ROULETTE_ARGS:-}
BASELINE_ARGS=${BASELINE_ARGS:-}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROULETTE_BIN=${ROULETTE_BIN:-$TARGET/release/roulette}
LOADTEST_BIN=${LOADTEST_BIN:-$TARGET/release/loadtest}
BASELINE_BIN=${BASELINE_BIN:-$ROOT/baseline/target/release/baseline}
OUT=${OUT:-$ROOT/target/bench-compare/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building roulette and loadtest (release)"
  cargo build --release -q --bin roulette
  cargo build --release -q -p loadtest
  log "building baseline (release, own Cargo.lock and target dir)"
  (cd baseline && env -u CARGO_TARGET_DIR cargo build --release -q)
fi
bins=("$ROULETTE_BIN" "$LOADTEST_BIN")
case " $SERVERS " in *" baseline"*) bins+=("$BASELINE_BIN") ;; esac
for bin in "${bins[@]}"; do
  [ -x "$bin" ] || { echo "missing binary: $bin" >&2; exit 1; }
done
"$LOADTEST_BIN" --help | grep -q relay || { echo "$LOADTEST_BIN has no relay scenario" >&2; exit 1; }

SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# start_server NAME LOGFILE: sets SERVER_PID and SERVER_ADDR.
start_server() {
  local name=$1 logf=$2 pattern
  : >"$logf" # exists before the server's shell opens it, so the poll below can read it
  case $name in
    uws-*)
      local port
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      "${UWS_BIN:?uws-N needs the uws-chat anchor}" --host 127.0.0.1 --port "$port" \
        --threads "${name#uws-}" 2>"$logf" &
      pattern='uws-chat listening on' ;;
    roulette|roulette-old|roulette-s*)
      local bin=$ROULETTE_BIN extra=()
      [ "$name" = roulette-old ] && bin=${ROULETTE_OLD_BIN:?roulette-old needs ROULETTE_OLD_BIN}
      case $name in roulette-s*) extra=(--shards "${name#roulette-s}") ;; esac
      # shellcheck disable=SC2086
      # The load comes from a few loopback addresses: every per-client limit is off (the
      # per-address flags exist from the admission release on; older builds lack them).
      local per_ip=()
      "$bin" --help | grep -q -- --max-connections-per-ip &&
        per_ip=(--max-connections-per-ip 0 --handshake-rate-per-ip 0)
      # shellcheck disable=SC2086
      "$bin" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
        --rate-limit-per-sec 0 --max-connections 100000 "${per_ip[@]}" "${extra[@]}" $ROULETTE_ARGS 2>"$logf" &
      pattern='roulette listening on' ;;
    baseline)
      # shellcheck disable=SC2086
      "$BASELINE_BIN" --listen 127.0.0.1:0 $BASELINE_ARGS 2>"$logf" &
      pattern='baseline listening on' ;;
    baseline-4k)
      # shellcheck disable=SC2086
      "$BASELINE_BIN" --listen 127.0.0.1:0 --read-buffer 4096 $BASELINE_ARGS 2>"$logf" &
      pattern='baseline listening on' ;;
    *) echo "unknown server $name" >&2; exit 1 ;;
  esac
  SERVER_PID=$!
  SERVER_ADDR=""
  for _ in $(seq 1 100); do
    SERVER_ADDR=$(sed -n "s/.*$pattern \([0-9.]*:[0-9]*\).*/\1/p" "$logf" | head -n1 || true)
    [ -n "$SERVER_ADDR" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not start; its log:" >&2
  cat "$logf" >&2
  exit 1
}

# run SCENARIO SERVER REP (SCENARIO: idle, or relay-N for N connections)
run() {
  local scenario=$1 server=$2 rep=$3 base="$OUT/$1-$2-$3" rc=0
  start_server "$server" "$base.server.log"
  local args=(--url "ws://$SERVER_ADDR/ws" --sources "$SOURCES" --timeout "$LT_TIMEOUT"
    --server-pid "$SERVER_PID" --json "$base.json" -q)
  if [ "$scenario" = idle ]; then
    args=(idle -c "$CONNS_IDLE" -d "$IDLE_HOLD" --processes "$IDLE_PROCESSES" "${args[@]}")
  else
    args=(relay -c "${scenario#relay-}" -d "$DURATION" --in-flight 1 --message-bytes 64
      --processes "$RELAY_PROCESSES" "${args[@]}")
  fi
  log "$scenario / $server / run $rep: loadtest ${args[*]}"
  "$LOADTEST_BIN" "${args[@]}" 2>"$base.loadtest.log" || rc=$?
  [ "$rc" = 0 ] || log "  loadtest exit code $rc (see $base.loadtest.log)"
  grep -E 'throughput|latency \(|server \(|result' "$base.loadtest.log" | sed 's/^/   /' >&2 || true
  stop_server
  sleep 2 # let the closed sockets leave the kernel's tables
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1), $(free -g | awk '/Mem:/{print $2}') GiB, Linux $(uname -r)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc: $(rustc --version)"
  echo "roulette: $ROULETTE_BIN $ROULETTE_ARGS"
  [ -z "$UWS_BIN" ] || echo "uws-chat: $UWS_BIN (uWebSockets, the optional anchor)"
  echo "baseline: $BASELINE_BIN $BASELINE_ARGS ($(grep -A1 'name = "tokio-tungstenite"' baseline/Cargo.lock | sed -n 's/version = //p' | tr -d '"') tokio-tungstenite)"
  echo "params: CONNS_IDLE=$CONNS_IDLE IDLE_HOLD=$IDLE_HOLD IDLE_PROCESSES=$IDLE_PROCESSES CONNS_RELAY=$CONNS_RELAY DURATION=$DURATION RELAY_PROCESSES=$RELAY_PROCESSES SOURCES=$SOURCES REPEAT=$REPEAT"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

SCENARIOS="idle"
for n in $CONNS_RELAY; do SCENARIOS="$SCENARIOS relay-$n"; done
for rep in $(seq 1 "$REPEAT"); do
  for scenario in $SCENARIOS; do
    for server in $SERVERS; do
      run "$scenario" "$server" "$rep"
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

python3 - "$OUT" "$SERVERS" "${RATIOS:-}" "$SCENARIOS" >"$OUT/summary.md" <<'EOF'
import json, os, re, statistics, sys
out, servers = sys.argv[1], sys.argv[2].split()
scenarios = sys.argv[4].split()
ratios = [tuple(r.split("/", 1)) for r in sys.argv[3].split()] if len(sys.argv) > 3 and sys.argv[3].strip() else \
    ([("roulette", s) for s in servers if s != "roulette"] if "roulette" in servers else [])

def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d

def metrics(scenario, d):
    if scenario == "idle":
        rss = get(d, "server", "rss_per_conn_bytes")
        return {"idle: server RSS per paired conn (bytes)": rss,
                "idle: connect+handshake rate (conn/s)": get(d, "connections", "connect_rate_per_s")}
    msgs = get(d, "messages", "window_received") or 0
    cpu = get(d, "server", "window_cpu") or {}
    per = lambda k: cpu.get(k) * 1e6 / msgs if msgs and cpu.get(k) is not None else None
    r = scenario.replace("relay-", "relay ") + ":"
    return {
        f"{r} msgs/s": get(d, "messages", "per_sec"),
        f"{r} mean one-way (ms)": get(d, "latency", "mean_us") / 1000 if get(d, "latency", "mean_us") is not None else None,
        f"{r} p50 one-way (ms)": (get(d, "latency", "p50_us") or 0) / 1000 if get(d, "latency", "p50_us") is not None else None,
        f"{r} p99 one-way (ms)": (get(d, "latency", "p99_us") or 0) / 1000 if get(d, "latency", "p99_us") is not None else None,
        f"{r} server CPU per msg (µs)": get(d, "server", "cpu_per_msg_us"),
        f"{r} server user CPU per msg (µs)": per("user_s"),
        f"{r} server sys CPU per msg (µs)": per("system_s"),
        f"{r} loadtest CPU per msg (µs)": get(d, "loadtest_cpu", "per_msg_us"),
    }

rows, runs, failed = {}, [], []
for scenario in scenarios:
    for server in servers:
        pat = re.compile(rf"{scenario}-{re.escape(server)}-\d+\.json")
        names = sorted(n for n in os.listdir(out) if pat.fullmatch(n))
        for f in (os.path.join(out, n) for n in names):
            try:
                d = json.load(open(f))
            except Exception:
                failed.append(os.path.basename(f) + " (unreadable)")
                continue
            if not d.get("ok"):
                failed.append(os.path.basename(f))
            for k, v in metrics(scenario, d).items():
                if v is not None:
                    rows.setdefault(k, {}).setdefault(server, []).append(v)
            runs.append((os.path.basename(f)[:-5], metrics(scenario, d)))

def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

head = ["metric (median of runs)"] + servers + [f"{a} / {b}" for a, b in ratios]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for k, by in rows.items():
    med = {s: statistics.median(by[s]) if by.get(s) else None for s in servers}
    cells = [k] + [fmt(med[s]) + (f" (n={len(by[s])})" if by.get(s) and len(by[s]) != max(len(v) for v in by.values()) else "") for s in servers]
    for x, y in ratios:
        a, b = med.get(x), med.get(y)
        cells.append(f"{a / b:.3g}×" if a is not None and b else "–")
    print("| " + " | ".join(cells) + " |")
print()
print("Spread (min – max over the runs):")
print()
print("| metric | " + " | ".join(servers) + " |")
print("|" + "---|" * (len(servers) + 1))
for k, by in rows.items():
    print("| " + k + " | " + " | ".join(f"{fmt(min(by[s]))} – {fmt(max(by[s]))}" if by.get(s) else "–" for s in servers) + " |")
print()
print("Every run:")
print()
for name, m in runs:
    print(f"- {name}: " + ", ".join(f"{k.split(': ', 1)[1]} {fmt(v)}" for k, v in m.items()))
if failed:
    print()
    print("Runs whose loadtest verdict was not OK (errors, lost or reordered messages): " + ", ".join(failed))
EOF
echo
cat "$OUT/machine.txt"
echo
cat "$OUT/summary.md"
echo
echo "(JSON of every run, loadtest and server logs: $OUT)"
