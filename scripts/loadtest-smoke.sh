#!/usr/bin/env bash
# Smoke test of the load generator (loadtest/) against a release build of the server.
#
# Builds both in release mode, starts the server on a free loopback port (echo on, no rate
# limit), runs every scenario briefly with --json, and checks each summary with python3:
# no error of any kind, no lost, duplicated, reordered or corrupt message, every connection
# set up, and the scenario's own expectations (messages flowed, sessions completed).
# Exits non-zero on the first failure. Runtime: about 20 s after the build.
#
# Usage: scripts/loadtest-smoke.sh            (honours CARGO_TARGET_DIR)
set -euo pipefail

cd "$(dirname "$0")/.."

echo "loadtest-smoke: building (release)"
cargo build --release -p roulette -p loadtest

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
SERVER="$TARGET_DIR/release/roulette"
LT="$TARGET_DIR/release/loadtest"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/loadtest-smoke.XXXXXX")
SERVER_PID=""

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$SERVER" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --enable-echo \
    --rate-limit-per-sec 0 --max-connections-per-ip 0 --handshake-rate-per-ip 0 2>"$WORK/server.log" &
SERVER_PID=$!

ADDR=""
for _ in $(seq 1 100); do
    ADDR=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$WORK/server.log" | head -n 1)
    [ -n "$ADDR" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "loadtest-smoke: the server exited early:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ADDR" ]; then
    echo "loadtest-smoke: no 'roulette listening on' line from the server:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "loadtest-smoke: server pid $SERVER_PID on $ADDR"

# check NAME: verify $WORK/NAME.json.
check() {
    python3 - "$WORK/$1.json" "$1" <<'EOF'
import json, sys

path, name = sys.argv[1], sys.argv[2]
with open(path) as f:
    s = json.load(f)
problems = []
if s.get("errors_total", 1) != 0:
    bad = {k: v for k, v in s.get("errors", {}).items() if v}
    problems.append(f"errors {bad}: {s.get('error_samples', [])[:3]}")
m = s["messages"]
for k in ("lost", "duplicated", "out_of_order", "corrupt"):
    if m.get(k, 1) != 0:
        problems.append(f"{k} = {m.get(k)}")
c = s["connections"]
if c["failed"] != 0:
    problems.append(f"{c['failed']} connections failed")
scenario = s["scenario"]
target = c["target"]
if scenario == "echo":
    if c["connected"] != target:
        problems.append(f"connected {c['connected']} of {target}")
elif c["paired"] != target:
    problems.append(f"paired {c['paired']} of {target}")
if c["closed_clean"] != target:
    problems.append(f"closed cleanly {c['closed_clean']} of {target}")
if scenario in ("relay", "echo", "churn"):
    if m["received"] == 0:
        problems.append("no message received")
    if m["sent"] != m["received"]:
        problems.append(f"sent {m['sent']} != received {m['received']}")
if scenario == "churn" and s["sessions"] != target:
    problems.append(f"sessions {s['sessions']} of {target}")
if scenario == "idle" and s.get("server") and s["server"].get("rss_per_conn_bytes") is None:
    problems.append("no server RSS per connection")
if not s.get("ok"):
    problems.append("summary says ok = false")
rate = m.get("per_sec")
lat = s["latency"]
print(f"loadtest-smoke: {name}: {c['connected']} connected, {m['received']} messages"
      + (f", {rate:.0f} msg/s" if rate else "")
      + (f", p50 {lat['p50_us']} us p99 {lat['p99_us']} us" if lat["count"] else "")
      + (" — FAILED: " + "; ".join(problems) if problems else " — ok"))
sys.exit(1 if problems else 0)
EOF
}

# run NAME SCENARIO ARGS...: run one scenario (bounded by timeout) and check its summary.
run() {
    local name=$1
    shift
    local url_path=/ws
    [ "$1" = echo ] && url_path=/echo
    local rc=0
    timeout 60 "$LT" "$@" --url "ws://$ADDR$url_path" --timeout 5 --quiet \
        --server-pid "$SERVER_PID" --json "$WORK/$name.json" 2>"$WORK/$name.log" || rc=$?
    if [ ! -s "$WORK/$name.json" ]; then
        echo "loadtest-smoke: $name: no summary (exit code $rc)" >&2
        cat "$WORK/$name.log" >&2
        exit 1
    fi
    if ! check "$name"; then
        cat "$WORK/$name.log" >&2
        exit 1
    fi
    if [ "$rc" -ne 0 ]; then
        echo "loadtest-smoke: $name: exit code $rc despite a clean summary" >&2
        cat "$WORK/$name.log" >&2
        exit 1
    fi
}

start=$(date +%s)
run idle idle --connections 400 --duration 1
run relay relay --connections 400 --duration 3 --in-flight 2
run relay-open relay --connections 200 --duration 2 --rate 4000
run churn churn --rate 100 --duration 4 --messages 5
run echo echo --connections 100 --duration 3
run echo-big echo --connections 4 --duration 1 --message-bytes 200000 --binary
run idle-2proc idle --connections 400 --duration 1 --processes 2 --sources 2

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "loadtest-smoke: the server died during the run:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "loadtest-smoke: all scenarios passed in $(($(date +%s) - start)) s"
