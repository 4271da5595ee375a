#!/usr/bin/env bash
# Soak run: `loadtest churn` against a release server for SOAK_SECONDS (default 1800), sampling
# the server's resident memory and open fds every SAMPLE_SECONDS (default 10) into a CSV, then
# printing start / peak / end. Loopback only; stops by itself.
#   usage: scripts/soak.sh [OUT_DIR]     env: SOAK_SECONDS, SAMPLE_SECONDS, CHURN_RATE
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d /tmp/roulette-soak.XXXX)}; mkdir -p "$out"
secs=${SOAK_SECONDS:-1800}; every=${SAMPLE_SECONDS:-10}; rate=${CHURN_RATE:-200}
cargo build --release -q -p roulette -p loadtest
logf=$out/server.log
target/release/roulette --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --max-connections-per-ip 0 --handshake-rate-per-ip 0 2>"$logf" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$logf" | head -1)
  [ -n "$addr" ] && break; sleep 0.1
done
[ -n "$addr" ] || { cat "$logf"; exit 1; }
sample() { # seconds rss_kib fds
  printf '%s,%s,%s\n' "$1" "$(awk '/^VmRSS/{print $2}' /proc/$pid/status)" "$(ls /proc/$pid/fd | wc -l)"
}
echo "t_seconds,rss_kib,open_fds" > "$out/samples.csv"
sample 0 >> "$out/samples.csv"
target/release/loadtest churn --url "ws://$addr/ws" --rate "$rate" --duration "$secs" \
  --json "$out/churn.json" --quiet > "$out/loadtest.log" 2>&1 &
lt=$!
start=$(date +%s)
while kill -0 $lt 2>/dev/null; do
  sleep "$every"
  sample $(( $(date +%s) - start )) >> "$out/samples.csv"
done
wait $lt && lt_rc=0 || lt_rc=$?
sleep 3  # let lingering closes finish
sample $(( $(date +%s) - start )) >> "$out/samples.csv"
python3 - "$out" "$lt_rc" <<'PY'
import csv, json, sys
out, rc = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
rss = [int(r["rss_kib"]) for r in rows]; fds = [int(r["open_fds"]) for r in rows]
print(f"soak: {rows[-1]['t_seconds']} s, {len(rows)} samples (CSV: {out}/samples.csv)")
print(f"soak: RSS KiB start {rss[0]}, peak {max(rss)}, end {rss[-1]}")
print(f"soak: open fds start {fds[0]}, peak {max(fds)}, end {fds[-1]}")
try:
    s = json.load(open(f"{out}/churn.json"))
    print(f"soak: loadtest sessions={s.get('sessions')} ({s.get('sessions_per_sec', 0):.1f}/s), "
          f"errors={s.get('errors_total')}, messages={json.dumps(s.get('messages'))}")
except Exception as e:
    print(f"soak: no loadtest summary ({e})")
print(f"soak: loadtest exit code {rc}")
sys.exit(1 if rc else 0)
PY
