#!/usr/bin/env bash
# End-to-end tests of the web client: playwright-core driving Debian's chromium
# against the real server binary.
#
#   webtest/run.sh                       # uses ../target/release/roulette (built if missing)
#   ROULETTE_BIN=/path/to/roulette webtest/run.sh
#   UPDATE_SCREENSHOT=1 webtest/run.sh   # also refresh docs/screenshot.png
#
# Screenshots are saved in webtest/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d node_modules/playwright-core ]; then
  # Never download a browser: the tests use /usr/bin/chromium.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

if [ -z "${ROULETTE_BIN:-}" ]; then
  export ROULETTE_BIN="$PWD/../target/release/roulette"
  if [ ! -x "$ROULETTE_BIN" ]; then
    (cd .. && cargo build --release --bin roulette)
  fi
fi

mkdir -p artifacts
node --test --test-reporter=spec e2e.test.mjs

if [ "${UPDATE_SCREENSHOT:-}" = 1 ]; then
  out=../docs/screenshot.png
  mkdir -p ../docs
  cp artifacts/desktop-chat.png "$out"
  if command -v pngquant >/dev/null; then
    pngquant --force --skip-if-larger --quality 70-95 --strip --output "$out" "$out" || true
  fi
  if command -v optipng >/dev/null; then
    optipng -quiet -o5 -strip all "$out"
  fi
  echo "run.sh: updated $out ($(wc -c <"$out") bytes)"
fi
