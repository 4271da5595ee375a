#!/usr/bin/env bash
# Checks deploy/kubernetes offline (no cluster is involved; nothing is applied):
#
#   venv          target/venv-deploy (shared with the OpenTofu checks) holds the pins of
#                 deploy/kubernetes/requirements.txt; created or corrected when it does not
#   provenance    crds/ holds the upstream CRD schemas crds/README.md names (SHA-256)
#   schemas       kubernetes-validate --strict against the Kubernetes API schemas of the
#                 oldest version the manifests support (1.31: preStop sleep is on by default
#                 since 1.30, the PDB's unhealthyPodEvictionPolicy is GA since 1.31) and of
#                 the newest the pinned package ships
#   CRDs          ServiceMonitor, Gateway, HTTPRoute, GCPBackendPolicy, HealthCheckPolicy
#                 against the committed schemas (jsonschema; unknown fields are errors)
#   checkov       checkov --framework kubernetes: no failed check; every skip is a
#                 checkov.io/skipN annotation with a reason AND a row in the table of
#                 docs/deploy/kubernetes.md, and the other way round
#   consistency   terminationGracePeriodSeconds >= preStop sleep + ROULETTE_GRACE_PERIOD +
#                 5 s; probes are GET /healthz on the container port; ROULETTE_SHARDS = the
#                 CPU limit; ports, selectors, timeouts and policies wired to each other
#   binary        (with the release binary) every ROULETTE_* name the Deployment sets is a
#                 flag of the binary (a typo would be ignored silently), and the Deployment's
#                 environment starts it: listening with ROULETTE_SHARDS shards, /healthz 200,
#                 /metrics 200, exit 0 on SIGTERM within ROULETTE_GRACE_PERIOD
#   controls      each checker fails on a manifest broken on purpose (so a green run means
#                 something): an unknown field, a bad ServiceMonitor, a short grace period,
#                 shards != CPU limit, a skip missing from the guide's table
#
# Usage: scripts/k8s-check.sh   (ROULETTE_BIN=path/to/roulette, default
# target/release/roulette; without it the binary checks are skipped with a notice).
# Needs python3 with venv (installed when run as root) and PyPI for the first run.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
K8S=$ROOT/deploy/kubernetes
DOC=$ROOT/docs/deploy/kubernetes.md
VENV=$ROOT/target/venv-deploy
K8S_VERSIONS=(1.31.0 1.37.0)
BIN=${ROULETTE_BIN:-$ROOT/target/release/roulette}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/roulette-k8s-check.XXXXXX")
SRV_PID=
FAILED=()
T0=$(date +%s.%N)
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE

cleanup() {
  [ -z "$SRV_PID" ] || kill -KILL "$SRV_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

section() { printf '\n== %s ==\n' "$*"; TS=$(date +%s.%N); }
took() { awk -v a="$TS" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f s", b-a}'; }
pass() { printf 'PASS  %s (%s)\n' "$*" "$(took)"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILED+=("$*"); }
indent() { sed 's/^/      /'; }

# ------------------------------------------------------------------------------------
section "venv $VENV"
# shellcheck source=scripts/deploy-venv.sh
. "$ROOT/scripts/deploy-venv.sh"
deploy_venv || { echo "cannot set up $VENV" >&2; exit 1; }
PY=$VENV/bin/python
pins_ok() {
  "$PY" - "$K8S/requirements.txt" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != want:
            bad.append(f"{name} {have or 'missing'} (pinned {want})")
print("; ".join(bad) if bad else "pinned: " + ", ".join(
    l.split("#")[0].strip() for l in open(sys.argv[1]) if l.split("#")[0].strip()))
sys.exit(1 if bad else 0)
PYEOF
}
if ! pins_ok; then
  "$PY" -m pip install -q --disable-pip-version-check -r "$K8S/requirements.txt" >"$WORK/pip.log" 2>&1 ||
    { tail -20 "$WORK/pip.log"; echo "pip install failed" >&2; exit 1; }
  pins_ok >/dev/null || { pins_ok; echo "the venv does not hold the pinned versions" >&2; exit 1; }
fi
pass "venv ready"

if command -v shellcheck >/dev/null; then
  TS=$(date +%s.%N)
  if shellcheck -x -S style scripts/k8s-check.sh; then pass "shellcheck scripts/k8s-check.sh"; else fail "shellcheck"; fi
fi

# Manifests: the top directory, optional/ and examples/; crds/ holds schemas, not manifests.
mapfile -t FILES < <(find "$K8S" "$K8S/optional" "$K8S/examples" -maxdepth 1 -name '*.yaml' | sort)
echo "      ${#FILES[@]} manifest files: $(printf '%s\n' "${FILES[@]}" | sed "s|$K8S/||" | paste -sd' ')"

# ------------------------------------------------------------------------------------
section "provenance of the CRD schemas (crds/README.md)"
if "$PY" scripts/k8s-check.py provenance "$K8S" >"$WORK/prov.txt" 2>&1; then
  indent <"$WORK/prov.txt"; pass "crds/ holds the upstream files"
else indent <"$WORK/prov.txt"; fail "crds/ provenance"; fi

# ------------------------------------------------------------------------------------
section "custom resources against their CRD schemas (jsonschema)"
if "$PY" scripts/k8s-check.py crds "$K8S" >"$WORK/crds.txt" 2>&1; then
  indent <"$WORK/crds.txt"; pass "custom resources"
else indent <"$WORK/crds.txt"; fail "custom resources against crds/"; fi

# ------------------------------------------------------------------------------------
section "Kubernetes API schemas (kubernetes-validate --strict)"
for v in "${K8S_VERSIONS[@]}"; do
  TS=$(date +%s.%N)
  out=$("$VENV/bin/kubernetes-validate" --strict -k "$v" "${FILES[@]}" 2>&1); rc=$?
  npass=$(grep -c ' passed for resource ' <<<"$out")
  # Kinds without a built-in schema must be exactly the custom resources checked above.
  unknown=$(sed -n "s/.*Couldn't find schema for kind \([A-Za-z]*\) with api version \([^ ]*\) .*/\1 (\2)/p" <<<"$out" | sort -u)
  bad=0
  while read -r k; do
    [ -z "$k" ] && continue
    # "Kind (group/version)" must be a line of the CRD check that passed.
    if ! grep -F ": ${k%% *} " "$WORK/crds.txt" | grep -F " ${k#* } " | grep -q '^ok '; then
      echo "      not validated anywhere: $k"; bad=1
    fi
  done <<<"$unknown"
  if [ $rc -ne 0 ] || grep -q '^ERROR' <<<"$out" || grep -v "Couldn't find schema" <<<"$out" | grep -q '^WARN'; then
    grep -v ' passed for resource ' <<<"$out" | indent; bad=1
  fi
  if [ $bad = 0 ] && [ "$npass" -gt 0 ]; then
    pass "Kubernetes $v: $npass resources valid; custom kinds left to the CRD check: $(cut -d' ' -f1 <<<"$unknown" | paste -sd, -)"
  else fail "kubernetes-validate --strict -k $v"; fi
done

# ------------------------------------------------------------------------------------
section "checkov (--framework kubernetes)"
"$VENV/bin/checkov" --skip-download -d "$K8S" --framework kubernetes -o json >"$WORK/checkov.json" 2>"$WORK/checkov.err"
rc=$?
summary=$("$PY" - "$WORK/checkov.json" <<'PYEOF'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    print("no JSON output"); sys.exit(1)
reps = data if isinstance(data, list) else [data]
bad = 0
for rep in reps:
    s = rep["summary"]
    print(f"{s['resource_count']} resources: {s['passed']} passed, {s['failed']} failed, "
          f"{s['skipped']} skipped, {s['parsing_errors']} parsing errors (checkov {s['checkov_version']})")
    for c in rep["results"]["failed_checks"]:
        print(f"  {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range']})")
    bad += s["failed"] + s["parsing_errors"]
sys.exit(1 if bad else 0)
PYEOF
)
prc=$?
indent <<<"$summary"
if [ $rc -eq 0 ] && [ $prc -eq 0 ]; then pass "checkov"; else
  tail -5 "$WORK/checkov.err" | indent; fail "checkov (rc $rc)"; fi

section "checkov skips <-> docs/deploy/kubernetes.md"
if "$PY" scripts/k8s-check.py skips "$K8S" --doc "$DOC" --checkov-json "$WORK/checkov.json" >"$WORK/skips.txt" 2>&1; then
  indent <"$WORK/skips.txt"; pass "skips documented"
else indent <"$WORK/skips.txt"; fail "checkov skips vs the guide's table"; fi

# ------------------------------------------------------------------------------------
section "consistency (drain, probes, shards, wiring)"
if "$PY" scripts/k8s-check.py consistency "$K8S" >"$WORK/cons.txt" 2>&1; then
  indent <"$WORK/cons.txt"; pass "consistency rules"
else indent <"$WORK/cons.txt"; fail "consistency rules"; fi

# ------------------------------------------------------------------------------------
section "the Deployment's environment against the binary"
if [ -x "$BIN" ]; then
  if "$BIN" --help | "$PY" scripts/k8s-check.py env "$K8S" >"$WORK/env.txt" 2>&1; then
    indent <"$WORK/env.txt"; pass "ROULETTE_* names"
  else indent <"$WORK/env.txt"; fail "ROULETTE_* names against $BIN --help"; fi
  # The Deployment's values, on loopback ports, without cluster mode (no Redis here; the
  # Secret file does not exist outside the pod).
  TS=$(date +%s.%N)
  mapfile -t ENVV < <("$PY" scripts/k8s-check.py smoke-env "$K8S" | grep -v '^ROULETTE_CLUSTER' |
    sed -e 's/^ROULETTE_LISTEN=.*/ROULETTE_LISTEN=127.0.0.1:0/' -e 's/^ROULETTE_METRICS_LISTEN=.*/ROULETTE_METRICS_LISTEN=127.0.0.1:0/')
  shards=$(printf '%s\n' "${ENVV[@]}" | sed -n 's/^ROULETTE_SHARDS=//p')
  grace=$(printf '%s\n' "${ENVV[@]}" | sed -n 's/^ROULETTE_GRACE_PERIOD=//p')
  env -i PATH=/usr/bin:/bin ROULETTE_NODE_NAME=roulette-6d5f7c9b8-x2k4p "${ENVV[@]}" "$BIN" 2>"$WORK/srv.log" &
  SRV_PID=$!
  addr='' maddr=''
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$WORK/srv.log" | head -1)
    maddr=$(sed -n 's/.*metrics listening on \([^ ]*\).*/\1/p' "$WORK/srv.log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  ok=1
  if [ -z "$addr" ]; then
    indent <"$WORK/srv.log"; ok=0
  else
    line=$(grep -m1 'roulette listening on' "$WORK/srv.log")
    echo "      ${line#*] }"
    grep -q "[ (]$shards shards" <<<"$line" || { echo "      want $shards shards (ROULETTE_SHARDS)"; ok=0; }
    h=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/healthz"); m=$(curl -s -o /dev/null -w '%{http_code}' "http://$maddr/metrics")
    echo "      GET /healthz -> $h, GET /metrics -> $m"
    [ "$h" = 200 ] && [ "$m" = 200 ] || ok=0
    t=$(date +%s.%N)
    kill -TERM "$SRV_PID"; wait "$SRV_PID"; st=$?; SRV_PID=
    dt=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
    echo "      SIGTERM -> exit $st after $dt s (ROULETTE_GRACE_PERIOD $grace s)"
    [ "$st" = 0 ] && awk -v d="$dt" -v g="$grace" 'BEGIN{exit !(d <= g)}' || ok=0
  fi
  [ -z "$SRV_PID" ] || { kill -KILL "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; SRV_PID=; }
  if [ $ok = 1 ]; then pass "the Deployment's environment starts $(basename "$BIN"), serves /healthz and /metrics, drains on SIGTERM"
  else fail "the Deployment's environment does not start the binary cleanly"; fi
else
  echo "SKIP  no binary at $BIN (set ROULETTE_BIN): flag names and the environment not checked against it"
fi

# ------------------------------------------------------------------------------------
section "controls: each checker rejects a manifest broken on purpose"
TS=$(date +%s.%N)
# mutate NAME FILE SED-EXPR: a copy of deploy/kubernetes with one edit, in $WORK/NAME.
mutate() {
  rm -rf "${WORK:?}/$1"; cp -r "$K8S" "$WORK/$1"
  sed -i -e "$3" "$WORK/$1/$2"
  cmp -s "$K8S/$2" "$WORK/$1/$2" && { echo "      control $1: the edit changed nothing"; return 1; }
  return 0
}
# expect_fail NAME DESCRIPTION CMD...: the command must fail.
controls=0 cfail=0
expect_fail() {
  local name=$1 what=$2; shift 2
  controls=$((controls + 1))
  if "$@" >"$WORK/control-$name.txt" 2>&1; then
    echo "      NOT CAUGHT: $what"; cfail=1
  else
    echo "      caught: $what -> $(grep -m1 -E '^(FAIL|ERROR)' "$WORK/control-$name.txt" | cut -c1-150)"
  fi
}
mutate unknown-field 20-deployment.yaml 's/^          imagePullPolicy: Always$/          imagePullPolcy: Always/' &&
  expect_fail unknown-field "a misspelt container field (imagePullPolcy)" \
    "$VENV/bin/kubernetes-validate" --strict -k "${K8S_VERSIONS[0]}" "$WORK/unknown-field/20-deployment.yaml"
mutate bad-sm optional/servicemonitor.yaml 's/^      scrapeTimeout: 5s$/      scrapeTimeoutSeconds: 5/' &&
  expect_fail bad-sm "a ServiceMonitor field the CRD does not have" "$PY" scripts/k8s-check.py crds "$WORK/bad-sm"
mutate bad-gcp optional/gke-gateway.yaml 's/^    timeoutSec: 3600$/    timeoutSec: "3600"/' &&
  expect_fail bad-gcp "a GCPBackendPolicy timeoutSec of the wrong type" "$PY" scripts/k8s-check.py crds "$WORK/bad-gcp"
mutate short-grace 20-deployment.yaml 's/^      terminationGracePeriodSeconds: 25$/      terminationGracePeriodSeconds: 20/' &&
  expect_fail short-grace "terminationGracePeriodSeconds below preStop + grace period + margin" \
    "$PY" scripts/k8s-check.py consistency "$WORK/short-grace"
mutate shards 20-deployment.yaml '/name: ROULETTE_SHARDS/{n;s/value: "2"/value: "4"/}' &&
  expect_fail shards "ROULETTE_SHARDS != the CPU limit" "$PY" scripts/k8s-check.py consistency "$WORK/shards"
mutate probe 20-deployment.yaml '0,/path: \/healthz/s//path: \/ready/' &&
  expect_fail probe "a probe on another path" "$PY" scripts/k8s-check.py consistency "$WORK/probe"
mutate skip 30-service.yaml 's/^  labels:$/  annotations:\n    checkov.io\/skip1: CKV_K8S_21=a skip that the guide does not list\n  labels:/' &&
  expect_fail skip "a checkov skip missing from the guide's table" \
    "$PY" scripts/k8s-check.py skips "$WORK/skip" --doc "$DOC"
mutate stale-row 20-deployment.yaml '/checkov.io\/skip1: CKV_K8S_43=/d' &&
  expect_fail stale-row "a row in the guide's table with no skip annotation behind it" \
    "$PY" scripts/k8s-check.py skips "$WORK/stale-row" --doc "$DOC"
if [ $cfail = 0 ]; then pass "$controls controls, each caught"; else fail "a broken manifest passed its checker"; fi

# ------------------------------------------------------------------------------------
section "summary"
total=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "k8s-check: all checks passed in $total s (nothing was applied to a cluster)"
else
  printf 'k8s-check: %d check(s) FAILED in %s s:\n' "${#FAILED[@]}" "$total"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
