#!/bin/bash
# Google Compute Engine startup script of a roulette node (metadata key `startup-script`, set by
# deploy/tofu/gcp). Google's Debian 12 images run it at EVERY boot through
# google-startup-scripts.service, and do not run cloud-init user-data: this script does what
# deploy/cloud-init.yaml plus the node-config part do on the other clouds.
#
# Idempotent: each run compares what is on disk with the instance metadata and changes only
# what differs; the service is restarted (which drains its clients) only if something changed.
#
#   1. reads the instance metadata attributes
#        roulette-release-url      https URL of roulette_VERSION-1_amd64.deb
#        roulette-release-sha256   its SHA-256 (from the release's SHA256SUMS)
#        roulette-cloud-env        content of /etc/roulette/cloud.env
#        roulette-cluster-password Redis AUTH string        (cluster mode only)
#        roulette-cluster-ca       Redis server CA, PEM     (cluster mode only)
#        roulette-credentials      unit drop-in with LoadCredential= (cluster mode only)
#      (the last three are empty on a single node)
#   2. installs the .deb if the installed one is not that SHA-256 (download, `sha256sum -c`,
#      `apt-get install ./roulette.deb`, which also pulls its dependencies)
#   3. writes /etc/roulette/cloud.env, /etc/roulette/cluster-password,
#      /etc/roulette/cluster-ca.pem (0600 root:root) and
#      /etc/systemd/system/roulette.service.d/50-cloud-credentials.conf; removes the ones whose
#      attribute is gone
#   4. systemctl daemon-reload, enable, and restart roulette.service if 2. or 3. changed anything
#
# Re-run by hand after changing the metadata (e.g. a new release):
#   sudo google_metadata_script_runner startup
# Logs: journalctl -u google-startup-scripts.service
#
# Testing without a VM: ROULETTE_STARTUP_ROOT=DIR writes under DIR and skips apt-get, dpkg and
# systemctl (it prints them instead); ROULETTE_METADATA_URL replaces the metadata server's
# attribute URL; file:// release URLs are accepted only then. scripts/tofu-check.sh does this.
set -euo pipefail

ROOT=${ROULETTE_STARTUP_ROOT:-}
ROOT=${ROOT%/}
MD=${ROULETTE_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1/instance/attributes}
STATE=$ROOT/var/lib/roulette-startup
DROPIN=$ROOT/etc/systemd/system/roulette.service.d/50-cloud-credentials.conf

say() { printf 'roulette-startup: %s\n' "$*"; }
die() { printf 'roulette-startup: %s\n' "$*" >&2; exit 1; }
# run CMD...: run it, or only print it in test mode.
run() { if [ -n "$ROOT" ]; then say "(test mode, not run) $*"; else "$@"; fi; }

# attr NAME: the attribute's value on stdout; exit status 1 if the attribute does not exist (404),
# and the script stops on any other failure (metadata server unreachable after retries).
attr() {
  local code
  code=$(curl -sS --retry 5 --retry-connrefused --retry-delay 1 -H 'Metadata-Flavor: Google' \
    -o "$TMP/attr" -w '%{http_code}' "$MD/$1") || die "metadata server unreachable ($MD)"
  case "$code" in
    200) cat "$TMP/attr" ;;
    404) return 1 ;;
    *) die "metadata $1: HTTP $code" ;;
  esac
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
changed=0

url=$(attr roulette-release-url) || die "instance metadata has no roulette-release-url"
sha=$(attr roulette-release-sha256) || die "instance metadata has no roulette-release-sha256"
[[ $sha =~ ^[0-9a-f]{64}$ ]] || die "roulette-release-sha256 is not 64 lower-case hex digits"
case "$url" in
  https://*) ;;
  file://*) [ -n "$ROOT" ] || die "roulette-release-url must be https://" ;;
  *) die "roulette-release-url must be https://" ;;
esac

# --- 2. the package --------------------------------------------------------------------------
mkdir -p "$STATE"
installed=$(cat "$STATE/installed.sha256" 2>/dev/null || true)
if [ "$installed" != "$sha" ] || { [ -z "$ROOT" ] && ! dpkg-query -W -f='${Status}' roulette 2>/dev/null | grep -q 'install ok installed'; }; then
  say "installing $url"
  curl -fsSL --retry 5 --retry-delay 2 --connect-timeout 10 -o "$TMP/roulette.deb" "$url"
  echo "$sha  $TMP/roulette.deb" | sha256sum -c --quiet - || die "SHA-256 mismatch for $url: nothing installed"
  run apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$TMP/roulette.deb"
  printf '%s\n' "$sha" >"$STATE/installed.sha256.new"
  mv -f "$STATE/installed.sha256.new" "$STATE/installed.sha256"
  changed=1
else
  say "release $sha already installed"
fi

# --- 3. configuration files ------------------------------------------------------------------
# put MODE PATH: install stdin as PATH (root:root) unless it is already identical.
put() {
  local mode=$1 dst=$2
  cat >"$TMP/new"
  if [ -f "$dst" ] && cmp -s "$TMP/new" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
    return 0
  fi
  install -d -m 0755 "$(dirname "$dst")"
  install -m "$mode" "$TMP/new" "$dst.new"
  [ -n "$ROOT" ] || chown root:root "$dst.new"
  mv -f "$dst.new" "$dst"
  say "wrote $dst"
  changed=1
}
# sync_attr MODE PATH ATTRIBUTE: PATH holds the attribute's value, or is removed if there is
# none or it is empty (tofu sets the cluster attributes to "" on a single node).
sync_attr() {
  local mode=$1 dst=$2 name=$3
  if attr "$name" >"$TMP/value" && [ -s "$TMP/value" ]; then
    put "$mode" "$dst" <"$TMP/value"
  elif [ -e "$dst" ]; then
    rm -f "$dst"
    say "removed $dst ($name is gone)"
    changed=1
  fi
}
attr roulette-cloud-env >/dev/null || die "instance metadata has no roulette-cloud-env"
sync_attr 0600 "$ROOT/etc/roulette/cloud.env" roulette-cloud-env
sync_attr 0600 "$ROOT/etc/roulette/cluster-password" roulette-cluster-password
sync_attr 0600 "$ROOT/etc/roulette/cluster-ca.pem" roulette-cluster-ca
sync_attr 0644 "$DROPIN" roulette-credentials

# --- 4. the service --------------------------------------------------------------------------
run systemctl daemon-reload
run systemctl enable --quiet roulette.service
if [ "$changed" = 1 ]; then
  say "restarting roulette (drains its clients; the load balancer sends new ones elsewhere)"
  run systemctl restart roulette.service
else
  say "nothing changed"
  run systemctl start roulette.service
fi
