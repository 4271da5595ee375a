#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzingclient cases against a WebSocket echo endpoint that is
# already listening, write the JSON/HTML report, and print a summary whose last line is e.g.
#   autobahn: 298 ok, 0 non-strict, 3 informational, 0 unimplemented, 0 failed of 301
# Exit 0 only when no case FAILED.
#
#   usage: tests/autobahn/run.sh URL [CASES]
#     URL    echo endpoint, e.g. ws://127.0.0.1:8080/echo (every text/binary message echoed)
#     CASES  default "*,-12.*,-13.*" (all but permessage-deflate); e.g. "1.*,2.*", "9.*"
#   env: AUTOBAHN_HOME (venv and reports; default <repo>/target/autobahn), AUTOBAHN_OUT,
#        AUTOBAHN_PARALLEL, AUTOBAHN_TIMEOUT, AUTOBAHN_STRICT (see README.md here)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export AUTOBAHN_HOME=${AUTOBAHN_HOME:-$ROOT/target/autobahn}

case "${1:-}" in
  ""|-h|--help) exec python3 "$HERE/autobahn_run.py" --help ;;
esac

"$HERE/setup.sh"
exec "$AUTOBAHN_HOME/.venv/bin/python" "$HERE/autobahn_run.py" "$@"
