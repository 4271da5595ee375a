#!/usr/bin/env bash
# Offline checks of the OpenTofu configurations in deploy/tofu/ (aws, gcp, azure, hetzner) and
# of the Google Compute Engine startup script. Neither OpenTofu nor Terraform can be installed
# here and `tofu validate`/`plan` need the providers from a registry, so what is checked is:
#
#   parse      every .tf / terraform.tfvars.example parses (python-hcl2)      scripts/tofu-check.py
#   skips      inline checkov skips <-> the table in docs/deploy/README.md    scripts/tofu-check.py
#   timeouts   --idle-ping below every load balancer timeout set or fixed     scripts/tofu-check.py
#   templates  the strings replace()d in deploy/ files exist                  scripts/tofu-check.py
#   checkov    `checkov --framework terraform` passes every cloud folder (inline skips only)
#   startup    deploy/tofu/gcp/startup.sh: bash -n, shellcheck, and a run against a fake
#              metadata server on loopback (test mode: files under a temporary root, no apt or
#              systemctl): installs, writes cloud.env and the secrets, is idempotent on a second
#              run, removes the secrets when the attributes go empty, refuses a wrong SHA-256
#
# Python tools live in target/venv-deploy (scripts/deploy-venv.sh, exact pins). Installs
# the shellcheck package with apt when run as root and it is missing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
FAILED=()
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILED+=("$*"); }
section() { printf '\n== %s ==\n' "$*"; }
t0=$(date +%s)

section "tools"
# shellcheck source=scripts/deploy-venv.sh
. "$ROOT/scripts/deploy-venv.sh"
deploy_venv || { echo "tofu-check: could not set up $DEPLOY_VENV" >&2; exit 1; }
if ! command -v shellcheck >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
  else
    echo "tofu-check: shellcheck is missing (apt-get install shellcheck)" >&2; exit 1
  fi
fi
echo "checkov $("$DEPLOY_VENV/bin/checkov" --version); python-hcl2 $(PYTHONPATH=$DEPLOY_HCL2 "$DEPLOY_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("python-hcl2"))' 2>/dev/null || echo '?'); $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"

section "parse, skips, timeouts, templates"
PYTHONPATH=$DEPLOY_HCL2 "$DEPLOY_VENV/bin/python" "$ROOT/scripts/tofu-check.py" "$ROOT" || fail "scripts/tofu-check.py"

section "checkov"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tofu-check.XXXXXX")
trap 'kill "${MD_PID:-}" 2>/dev/null; rm -rf "$WORK"' EXIT
# One run over all folders (checkov's start-up is most of its time); results split per folder.
"$DEPLOY_VENV/bin/checkov" --skip-download --framework terraform -d deploy/tofu -o json \
  >"$WORK/checkov.json" 2>"$WORK/checkov.err"
rc=$?
"$DEPLOY_VENV/bin/python" - "$WORK/checkov.json" <<'PYEOF' || fail "checkov (rc $rc)"
import collections, json, sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
count = collections.defaultdict(lambda: collections.Counter())
failed = []
for rep in reports:
    if rep.get("check_type") not in (None, "terraform"):
        continue
    res = rep.get("results", {})
    for kind in ("passed_checks", "failed_checks", "skipped_checks"):
        for c in res.get(kind, []):
            folder = c["file_path"].lstrip("/").split("/")[0]
            count[folder][kind] += 1
            if kind == "failed_checks":
                failed.append(f'{c["check_id"]} {c["resource"]} ({c["file_path"]}:{c["file_line_range"][0]}): {c["check_name"]}')
for folder in ("aws", "gcp", "azure", "hetzner", "modules"):
    c = count[folder]
    note = " (checkov has no hcloud checks)" if folder == "hetzner" and not sum(c.values()) else ""
    print(f"      {folder:8} passed {c['passed_checks']:3}  failed {c['failed_checks']:3}  skipped {c['skipped_checks']:3}{note}")
for f in failed:
    print("      FAILED", f)
sys.exit(1 if failed else 0)
PYEOF
[ $rc = 0 ] && pass "checkov: every folder passes (skips are inline, with reasons)" || { tail -5 "$WORK/checkov.err"; fail "checkov found failed checks"; }

section "GCE startup script"
S=deploy/tofu/gcp/startup.sh
out=$(bash -n "$S" 2>&1) && [ -z "$out" ] && pass "bash -n $S" || fail "bash -n $S: $out"
# The startup script at every severity; the check scripts at warning and above (as deploy-check.sh).
out=$(shellcheck "$S" 2>&1 && shellcheck -S warning scripts/tofu-check.sh scripts/deploy-venv.sh 2>&1) &&
  pass "shellcheck $S (all severities), scripts/tofu-check.sh scripts/deploy-venv.sh (warnings)" ||
  { printf '%s\n' "$out" | sed 's/^/      /'; fail "shellcheck"; }
# A fake metadata server: one file per attribute under $WORK/md (404 for a missing one).
mkdir -p "$WORK/md" "$WORK/root"
printf 'not really a .deb\n' >"$WORK/roulette.deb"
sha=$(sha256sum "$WORK/roulette.deb" | cut -d' ' -f1)
printf 'file://%s' "$WORK/roulette.deb" >"$WORK/md/roulette-release-url"
printf '%s' "$sha" >"$WORK/md/roulette-release-sha256"
printf 'ROULETTE_NODE_NAME=roulette-1\nROULETTE_METRICS_LISTEN=10.30.0.10:9898\n' >"$WORK/md/roulette-cloud-env"
printf 'hunter2' >"$WORK/md/roulette-cluster-password"
printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >"$WORK/md/roulette-cluster-ca"
printf '[Service]\nLoadCredential=cluster-password:/etc/roulette/cluster-password\n' >"$WORK/md/roulette-credentials"
port=$("$DEPLOY_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$DEPLOY_VENV/bin/python" -m http.server --bind 127.0.0.1 --directory "$WORK/md" "$port" >/dev/null 2>&1 &
MD_PID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
run_startup() { ROULETTE_STARTUP_ROOT=$WORK/root ROULETTE_METADATA_URL=http://127.0.0.1:$port bash "$S" >"$WORK/run.log" 2>&1; }
st_ok=1
run_startup || { st_ok=0; echo "      first run failed:"; sed 's/^/      /' "$WORK/run.log"; }
for f in "600 etc/roulette/cloud.env roulette-cloud-env" "600 etc/roulette/cluster-password roulette-cluster-password" \
  "600 etc/roulette/cluster-ca.pem roulette-cluster-ca" "644 etc/systemd/system/roulette.service.d/50-cloud-credentials.conf roulette-credentials"; do
  read -r mode path attr <<<"$f"
  if [ "$(stat -c %a "$WORK/root/$path" 2>/dev/null)" = "$mode" ] && cmp -s "$WORK/md/$attr" "$WORK/root/$path"; then :; else
    echo "      wrong or missing: $path"; st_ok=0; fi
done
grep -q 'test mode, not run) env DEBIAN_FRONTEND=noninteractive apt-get install' "$WORK/run.log" || { echo "      no install step"; st_ok=0; }
grep -q 'restart roulette.service' "$WORK/run.log" || { echo "      no restart after the first install"; st_ok=0; }
run_startup || st_ok=0
grep -q 'already installed' "$WORK/run.log" && grep -q 'nothing changed' "$WORK/run.log" &&
  ! grep -q 'restart roulette.service' "$WORK/run.log" || { echo "      second run was not a no-op:"; sed 's/^/      /' "$WORK/run.log"; st_ok=0; }
: >"$WORK/md/roulette-cluster-password"; rm -f "$WORK/md/roulette-cluster-ca"
run_startup || st_ok=0
[ ! -e "$WORK/root/etc/roulette/cluster-password" ] && [ ! -e "$WORK/root/etc/roulette/cluster-ca.pem" ] &&
  grep -q 'restart roulette.service' "$WORK/run.log" || { echo "      secrets not removed when their attributes went empty/away"; st_ok=0; }
printf '%064d' 0 >"$WORK/md/roulette-release-sha256"
if run_startup; then echo "      accepted a wrong SHA-256"; st_ok=0; fi
grep -q 'SHA-256 mismatch' "$WORK/run.log" || { echo "      no SHA-256 mismatch message"; st_ok=0; }
printf 'http://example.invalid/x.deb' >"$WORK/md/roulette-release-url"
ROULETTE_METADATA_URL=http://127.0.0.1:$port bash "$S" >"$WORK/run.log" 2>&1 && { echo "      accepted a non-https release URL"; st_ok=0; }
[ $st_ok = 1 ] && pass "startup.sh against a fake metadata server: files and modes, idempotent second run, secrets removed, wrong SHA-256 and http:// refused" ||
  fail "startup.sh functional run"

section "summary"
echo "tofu-check: $(($(date +%s) - t0)) s"
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "tofu-check: all checks passed"
else
  printf 'tofu-check: %d check(s) FAILED:\n' "${#FAILED[@]}"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
