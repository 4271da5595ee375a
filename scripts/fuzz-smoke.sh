#!/usr/bin/env bash
# Run every cargo-fuzz target briefly (FUZZ_SECONDS each, default 20) from the committed seeds.
# Needs the nightly toolchain (present on this machine image); skips with a message without it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-20}
if ! rustup toolchain list 2>/dev/null | grep -q nightly; then
  echo "fuzz-smoke: no nightly toolchain; skipping the fuzz smoke run"; exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
for t in frame_decoder http_request chat_message matchmaker_ops cluster_wire proxy_header; do
  corpus=$(mktemp -d); cp seeds/$t/* "$corpus"/
  echo "fuzz-smoke: $t for ${secs}s"
  cargo +nightly fuzz run "$t" "$corpus" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|thread .* panicked|SUMMARY)' || true
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "fuzz-smoke: $t FAILED (see fuzz/artifacts/$t)"; exit 1; }
  rm -rf "$corpus"
done
