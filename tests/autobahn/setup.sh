#!/usr/bin/env bash
# Create the conformance runner's own virtual environment and install its exact pins
# (requirements.txt). Idempotent: a second run only checks the stamp (~0.1 s).
#   usage: tests/autobahn/setup.sh [--force]
#   env:   AUTOBAHN_HOME (default: <repo>/target/autobahn): holds .venv/ and reports/
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
AUTOBAHN_HOME=${AUTOBAHN_HOME:-$ROOT/target/autobahn}
VENV="$AUTOBAHN_HOME/.venv"
REQ="$HERE/requirements.txt"
PY="${PYTHON:-python3}"

force=0
[ "${1:-}" = "--force" ] && force=1

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  echo "setup.sh: $PY is missing or older than 3.10 (kosoku needs >= 3.10)" >&2
  exit 1
fi

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
stamp="$VENV/.requirements.sha256"
if [ "$force" = 0 ] && [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
   && "$VENV/bin/python" -c 'import kosoku' 2>/dev/null; then
  exit 0
fi

mkdir -p "$AUTOBAHN_HOME"
rm -rf "$VENV"
# Debian ships venv/ensurepip separately (python3-venv); scripts/test.sh installs it.
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ"
"$VENV/bin/kosoku" -h >/dev/null
echo "$want" > "$stamp"
echo "setup.sh: installed into $VENV: $("$VENV/bin/python" -m pip freeze --disable-pip-version-check | tr '\n' ' ')"
