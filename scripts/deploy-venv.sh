#!/usr/bin/env bash
# The Python venv of the offline deployment checks: target/venv-deploy, with checkov and its
# dependencies from deploy/tofu/requirements.txt (exact pins), the Kubernetes checkers of
# deploy/kubernetes/requirements.txt, and python-hcl2 beside them in target/venv-deploy/hcl2
# (deploy/tofu/requirements-hcl2.txt; see there why it is apart).
#
# Source it, then call deploy_venv; afterwards:
#   $DEPLOY_VENV/bin/checkov ...                         checkov
#   PYTHONPATH=$DEPLOY_HCL2 $DEPLOY_VENV/bin/python ...   `import hcl2` is python-hcl2
# The venv is rebuilt only when a requirements file changed (a stamp file holds their SHA-256),
# so a second run costs nothing. pip installs into the venv only, never into the system Python.
# Used by scripts/tofu-check.sh and scripts/k8s-check.sh.

DEPLOY_VENV_ROOT=${DEPLOY_VENV_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
DEPLOY_VENV=$DEPLOY_VENV_ROOT/target/venv-deploy
DEPLOY_HCL2=$DEPLOY_VENV/hcl2

deploy_venv() {
  local req=$DEPLOY_VENV_ROOT/deploy/tofu/requirements.txt
  local req_hcl2=$DEPLOY_VENV_ROOT/deploy/tofu/requirements-hcl2.txt
  local req_k8s=$DEPLOY_VENV_ROOT/deploy/kubernetes/requirements.txt
  local py=${PYTHON:-python3} want have
  want=$(cat "$req" "$req_k8s" "$req_hcl2" | sha256sum | cut -d' ' -f1)
  have=$(cat "$DEPLOY_VENV/.requirements.sha256" 2>/dev/null || true)
  if [ "$want" = "$have" ] && [ -x "$DEPLOY_VENV/bin/checkov" ] && [ -d "$DEPLOY_HCL2/hcl2" ]; then
    return 0
  fi
  echo "deploy venv: installing $(grep -c '==' "$req") pinned packages into $DEPLOY_VENV"
  if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
      echo "deploy venv: python3-venv is missing" >&2; return 1
    fi
  fi
  rm -rf "$DEPLOY_VENV"
  "$py" -m venv "$DEPLOY_VENV" || return 1
  "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$req" -r "$req_k8s" || return 1
  "$DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check --no-input --no-deps \
    --target "$DEPLOY_HCL2" -r "$req_hcl2" || return 1
  printf '%s\n' "$want" >"$DEPLOY_VENV/.requirements.sha256"
}
