#!/usr/bin/env bash
# Smoke test of the load generator (loadtest/) against a release build of the server.
#
# Builds both in release mode, starts the server on a free loopback port (echo on, no rate
# limit), runs every scenario briefly with --json (and a two-step `pairing` sweep with its
# plot), and checks each summary with python3:
# no error of any kind, no lost, duplicated, reordered or corrupt message, every connection
# set up, and the scenario's own expectations (messages flowed, sessions completed).
# Exits non-zero on the first failure. Runtime: about 30 s after the build.
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

# run_pairing NAME ARGS...: a brief `pairing` sweep (every step run) and its summary and plot
# checked: every step clean, every stranger paired and proved by a message each way, one
# point per step in the plot, the knee (when there is one) a step of the sweep and marked.
run_pairing() {
    local name=$1
    shift
    local rc=0
    timeout 60 "$LT" pairing "$@" --url "ws://$ADDR/ws" --keep-going --quiet \
        --server-pid "$SERVER_PID" --json "$WORK/$name.json" --plot "$WORK/$name.svg" \
        2>"$WORK/$name.log" || rc=$?
    if [ ! -s "$WORK/$name.json" ] || [ ! -s "$WORK/$name.svg" ]; then
        echo "loadtest-smoke: $name: no summary or plot (exit code $rc)" >&2
        cat "$WORK/$name.log" >&2
        exit 1
    fi
    if ! python3 - "$WORK/$name.json" "$WORK/$name.svg" "$name" "$rc" <<'EOF2'; then
import json, sys

path, svg_path, name, rc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = json.load(open(path))
svg = open(svg_path).read()
problems = []
steps = s["steps"]
rates = s["params"]["rates"]
if [st["offered_per_s"] for st in steps] != rates:
    problems.append(f"steps {[st['offered_per_s'] for st in steps]} != rates {rates}")
for st in steps:
    n = st["strangers"]
    if st["errors_total"] != 0:
        problems.append(f"step {st['offered_per_s']}: errors {st['errors']} {st['error_samples'][:3]}")
    if not (n["joined"] == n["paired"] == n["proved"] == n["closed_clean"] > 0):
        problems.append(f"step {st['offered_per_s']}: strangers {n}")
    if st["time_to_pair"]["count"] == 0 or st["achieved_per_s"] <= 0:
        problems.append(f"step {st['offered_per_s']}: nothing measured in the window")
    if st["cpu"]["servers"] and st["cpu"]["servers"][0]["cpu"] is None:
        problems.append(f"step {st['offered_per_s']}: no server CPU")
    if s["pair_tags"] and st["pairs"] != n["joined"] // 2:
        problems.append(f"step {st['offered_per_s']}: {st['pairs']} pairs by tag of {n['joined']} strangers")
if not s["ok"] or rc != 0:
    problems.append(f"ok = {s['ok']}, exit code {rc}")
if svg.count('class="achieved"') != len(steps) or 'class="ideal"' not in svg:
    problems.append("the plot lacks a step's point or the ideal line")
k = s["knee"]
if k is not None and (k["index"] >= len(steps) or 'class="knee"' not in svg):
    problems.append(f"knee {k} not a step or not marked")
if k is None and "no knee" not in svg:
    problems.append("no knee, and the plot does not say so")
knee = f"knee {k['offered_per_s']:.0f}/s" if k else "no knee"
print(f"loadtest-smoke: {name}: " + ", ".join(
    f"{st['offered_per_s']:.0f}/s -> {st['achieved_per_s']:.0f}/s p99 {st['time_to_pair']['p99_us']} us"
    for st in steps) + f"; {knee}" + (" — FAILED: " + "; ".join(problems) if problems else " — ok"))
sys.exit(1 if problems else 0)
EOF2
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
run_pairing pairing --rates 100,300 --warmup 0.5 --step-duration 2
# Pair tags over two "nodes" (the one node twice) and two processes.
run_pairing pairing-tags --rates 200 --warmup 0.5 --step-duration 1 --pair-tags \
    --url "ws://$ADDR/ws" --processes 2 --sources 2

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "loadtest-smoke: the server died during the run:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "loadtest-smoke: all scenarios passed in $(($(date +%s) - start)) s"
