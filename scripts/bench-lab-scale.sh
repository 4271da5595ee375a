#!/usr/bin/env bash
# The scale run of BENCHMARKS.md ("Cluster at scale in namespaces"), as root: six nodes in
# the namespace lab (scripts/cluster-lab.sh), Redis + replica + three Sentinels, and seven
# load-generator hosts. Half of the pairs span two nodes (loadtest relay --pair-tags over all
# six URLs, three processes on lg1), half stay on one node (one loadtest per node on lg2-lg7,
# --pair-tags with that node's URL only). Everyone chats at a low open-loop rate for
# DURATION seconds; every loadtest checks that each message arrives once and in order.
#
#   OUT=DIR DURATION=300 CROSS=50000 LOCAL_PER_NODE=8334 RATE_CROSS=2500 RATE_LOCAL=400 \
#     scripts/bench-lab-scale.sh
#
# Writes DIR/cross.json, DIR/local-nN.json (loadtest summaries), DIR/samples.txt (RSS and
# clients per node every 10 s, Redis CPU and memory) and DIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
L=$ROOT/scripts/cluster-lab.sh
BIN=${ROULETTE_BIN:-$ROOT/target/release/roulette}
LT=${LOADTEST_BIN:-$ROOT/target/release/loadtest}
export OUT=${OUT:-$(mktemp -d)}
DURATION=${DURATION:-300}
CROSS=${CROSS:-50000}
LOCAL_PER_NODE=${LOCAL_PER_NODE:-8334}
RATE_CROSS=${RATE_CROSS:-2500}
RATE_LOCAL=${RATE_LOCAL:-400}
NODES=6

if [ "${1:-}" != inner ]; then
  [ -x "$BIN" ] && [ -x "$LT" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
  mkdir -p "$OUT"
  exec "$L" run "$NODES" 7 -- env ROULETTE_BIN="$BIN" LOADTEST_BIN="$LT" DURATION="$DURATION" \
    CROSS="$CROSS" LOCAL_PER_NODE="$LOCAL_PER_NODE" RATE_CROSS="$RATE_CROSS" \
    RATE_LOCAL="$RATE_LOCAL" bash "$0" inner
fi

url=$("$L" url)
pids=()
for i in $(seq $NODES); do
  a=$("$L" addr "n$i")
  RUST_LOG=info "$L" exec "n$i" "$BIN" --listen "$a:8080" --metrics-listen "$a:9090" \
    --cluster "$url" --node-name "n$i" --shards 1 --pin-cores false \
    --max-connections-per-ip 0 --handshake-rate-per-ip 0 --rate-limit-per-sec 0 \
    --idle-ping 120 --pong-timeout 120 2>"$OUT/node-n$i.log" &
  pids+=($!)
done
for i in $(seq $NODES); do
  for _ in $(seq 100); do grep -q "connected to Redis" "$OUT/node-n$i.log" && break; sleep 0.2; done
  grep -q "connected to Redis" "$OUT/node-n$i.log" || { echo "node n$i did not connect"; exit 1; }
done
redis_pid=$(ip netns pids "${LAB_PREFIX:-rlab}-redis1" | head -1)
clk=$(getconf CLK_TCK)
redis_cpu() { awk -v t="$clk" '{printf "%.2f", ($14+$15)/t}' "/proc/$redis_pid/stat"; }

urls=$(for i in $(seq $NODES); do printf 'ws://%s:8080/ws,' "$("$L" addr "n$i")"; done)
urls=${urls%,}
lts=()
"$L" exec lg1 "$LT" relay -c "$CROSS" --pair-tags --url "$urls" --processes 3 --threads 1 \
  --rate "$RATE_CROSS" -d "$DURATION" --timeout 120 --max-connecting 256 \
  --json "$OUT/cross.json" 2>"$OUT/cross.log" &
lts+=($!)
for i in $(seq $NODES); do
  "$L" exec "lg$((i + 1))" "$LT" relay -c "$LOCAL_PER_NODE" --pair-tags \
    --url "ws://$("$L" addr "n$i"):8080/ws" --threads 1 --rate "$RATE_LOCAL" -d "$DURATION" \
    --timeout 120 --max-connecting 128 --json "$OUT/local-n$i.json" 2>"$OUT/local-n$i.log" &
  lts+=($!)
done

cpu0=$(redis_cpu); t0=$(date +%s)
: >"$OUT/samples.txt"
while kill -0 "${lts[0]}" 2>/dev/null; do
  line="$(date +%s)"
  for i in $(seq $NODES); do
    rss=$(awk '/VmRSS/{print $2}' "/proc/${pids[$((i - 1))]}/status")
    online=$(ip netns exec "${LAB_PREFIX:-rlab}-lg1" curl -s "http://$("$L" addr "n$i"):9090/metrics" |
      awk '$1=="roulette_online_clients"{print $2}')
    line+=" n$i:rss_kib=$rss,clients=${online:-?}"
  done
  mem=$("$L" exec redis1 redis-cli -h "$("$L" addr redis1)" info memory |
    awk -F: '/^used_memory:|^used_memory_rss:/{gsub("\r","");printf "%s=%s ", $1, $2}')
  line+=" redis_cpu_s=$(redis_cpu) $mem"
  echo "$line" >>"$OUT/samples.txt"
  sleep 10
done
ok=0
for p in "${lts[@]}"; do wait "$p" || ok=1; done
cpu1=$(redis_cpu); t1=$(date +%s)
{
  echo "loadtest exit: $ok (0 = no error, nothing lost, duplicated or reordered)"
  echo "redis cpu: $(awk -v a="$cpu0" -v b="$cpu1" -v s=$((t1 - t0)) 'BEGIN{printf "%.1f s over %d s = %.1f %% of a core", b-a, s, 100*(b-a)/s}')"
  # The sample with the most clients: RSS per client per node.
  sort -t' ' -k2 "$OUT/samples.txt" | awk '
    { n=0; for (i=2;i<=NF;i++) if ($i ~ /^n[0-9]+:/) { split($i,a,/[:=,]/); c+=a[5]; n++ } }
    { if (c > best) { best=c; line=$0 } c=0 }
    END { print "peak sample (" best " clients): " line }'
} | tee "$OUT/summary.txt"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
exit $ok
