#!/usr/bin/env bash
# The one test command (README "Tests"; .ci/run calls exactly this). Installs what it needs on
# a fresh Debian machine, then: format and lint, unit + integration tests, the Autobahn
# conformance suite against the release binary (diffed case by case with a committed golden
# file), the Prometheus exposition checked by promtool and the Python parser, and the web
# client's end-to-end tests in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\n== %s ==\n' "$*"; }

log "prerequisites"
need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v redis-server >/dev/null || need_apt+=(redis-server redis-tools)
command -v openssl >/dev/null || need_apt+=(openssl) # tests/cluster_tls.rs makes its certificates
command -v nft >/dev/null || need_apt+=(nftables) # tests/cluster_lab.rs without sch_netem
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (run as root or install them)" >&2; exit 1
  fi
fi
# Python tools go into a venv of their own, never into the system interpreter (PEP 668).
VENV=$ROOT/target/venv-test
if ! "$VENV/bin/python" -c 'import prometheus_client' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check prometheus-client==0.26.0
fi

log "the repository stands alone"
bash scripts/check-self-contained.sh

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --workspace -q -- -D warnings

log "cargo build --release"
cargo build --release --workspace -q
BIN=$ROOT/target/release/roulette

log "cargo test (unit, property and integration tests)"
cargo test --workspace -q 2>&1 | tee /tmp/roulette-cargo-test.log

log "hostile clients (tests/hostile.rs, release binary)"
cargo test --release --test hostile -- --ignored --test-threads=1

log "cargo bench (each criterion benchmark once, as a smoke test; BENCHMARKS.md has the numbers)"
cargo bench -p roulette -q -- --test > /tmp/roulette-bench-smoke.log 2>&1 || { tail -30 /tmp/roulette-bench-smoke.log; exit 1; }
grep -c '^Success' /tmp/roulette-bench-smoke.log | sed 's/^/benchmarks run: /'

# Start the release binary on free ports and wait for its address.
start_server() { # args...; sets SRV_PID, SRV_ADDR, SRV_METRICS
  local logf; logf=$(mktemp)
  # The conformance suite opens every connection from one address: per-address limits off.
  RUST_LOG=info "$BIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --max-connections-per-ip 0 --handshake-rate-per-ip 0 "$@" 2>"$logf" &
  SRV_PID=$!
  for _ in $(seq 100); do
    SRV_ADDR=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$logf" | head -1)
    SRV_METRICS=$(sed -n 's/.*metrics listening on \([^ ]*\).*/\1/p' "$logf" | head -1)
    [ -n "$SRV_ADDR" ] && return 0
    sleep 0.1
  done
  cat "$logf" >&2; echo "server did not start" >&2; exit 1
}

log "autobahn conformance (cases 1-10 on /echo)"
start_server --enable-echo --shards 2
export AUTOBAHN_OUT; AUTOBAHN_OUT=$(mktemp -d)/autobahn
AUTOBAHN_PARALLEL=${AUTOBAHN_PARALLEL:-4} tests/autobahn/run.sh "ws://$SRV_ADDR/echo" | tail -25
python3 tests/autobahn/check.py "$AUTOBAHN_OUT" tests/autobahn/expected.json

log "metrics exposition (promtool + prometheus_client parser)"
curl -sf "http://$SRV_METRICS/metrics" > /tmp/roulette-metrics.txt
promtool check metrics < /tmp/roulette-metrics.txt
"$VENV/bin/python" - /tmp/roulette-metrics.txt <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = list(text_string_to_metric_families(open(sys.argv[1]).read()))
names = {f.name for f in fams}
for want in ("roulette_online_clients", "roulette_connections_accepted", "process_resident_memory_bytes"):
    assert want in names, f"missing {want}"
# Autobahn just drove this server: the traffic counters must have moved.
total = lambda name: sum(s.value for f in fams for s in f.samples if s.name == name)
for name in ("roulette_connections_accepted_total", "roulette_messages_received_total",
             "roulette_received_bytes_total", "roulette_sent_bytes_total", "roulette_upgrades_echo_total"):
    assert total(name) > 0, f"{name} did not move"
print(f"prometheus_client parsed {len(fams)} families; traffic counters moved "
      f"({int(total('roulette_messages_received_total'))} messages received)")
PY
kill -TERM "$SRV_PID"; wait "$SRV_PID"

log "load generator scenarios (brief, zero errors and zero lost messages)"
bash scripts/loadtest-smoke.sh

log "cross-node relay through a real Redis (loadtest --pair-tags over two cluster nodes, brief)"
REPEAT=1 CONNS=400 DURATION=3 RATE=2000 SKIP_BUILD=1 OUT=$(mktemp -d) bash scripts/bench-cluster.sh

log "cluster lab: slow links, a partition and a Sentinel failover in network namespaces (tests/cluster_lab.rs)"
cargo test -q --test cluster_lab -- --ignored --nocapture 2>&1 | grep -E '^\(|SKIPPED|passed in|test result|panicked' || { echo "cluster lab failed (rerun: cargo test --test cluster_lab -- --ignored --nocapture)"; exit 1; }

log "pairing through the Redis cluster queue (loadtest pairing --pair-tags, two nodes with --cluster-hold 0, brief; profile step)"
RATES=50,150 STEP=1 WARMUP=0.5 PROFILE_STEP=1 SKIP_BUILD=1 OUT=$(mktemp -d) bash scripts/bench-pairing.sh

log "deployment files through their own checkers"
ROULETTE_BIN=$BIN bash scripts/deploy-check.sh

log "release artifacts (scripts/release.sh: tarball, .deb, OCI image; lintian, install, upgrade, purge; the image run in a chroot; hadolint)"
bash scripts/release-check.sh

log "OpenTofu configurations (python-hcl2, checkov, LB timeouts vs idle ping, GCE startup script)"
bash scripts/tofu-check.sh

log "Kubernetes manifests (API and CRD schemas, checkov, consistency rules; nothing applied)"
ROULETTE_BIN=$BIN bash scripts/k8s-check.sh

log "fuzz smoke run (cargo fuzz, each target briefly)"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz-smoke.sh

if [ -f webtest/run.sh ]; then
  log "web client end-to-end (headless Chromium)"
  ROULETTE_BIN=$BIN bash webtest/run.sh
fi

log "all checks passed"
