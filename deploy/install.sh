#!/usr/bin/env bash
# Install roulette as a systemd service on this machine.
#
#   deploy/install.sh [--dry-run] [--no-start] [BINARY]
#
#   BINARY      the roulette executable to install (default: target/release/roulette,
#               relative to the repository root)
#   --dry-run   print every step, change nothing
#   --no-start  install files only; no sysctl --system, no systemctl
#   DESTDIR=DIR install under DIR instead of / (packaging, CI); implies --no-start
#
# Installs:
#   /usr/local/bin/roulette                   (replaced on every run)
#   /etc/systemd/system/roulette.service      (replaced on every run)
#   /etc/roulette/roulette.env                (0600; only if missing: your settings are kept)
#   /etc/sysctl.d/60-roulette.conf            (replaced on every run)
# then `sysctl --system`, `systemctl daemon-reload`, `systemctl enable --now roulette`,
# and, when the service was already running (an upgrade), `systemctl restart roulette`
# (which drains: clients get close 1001; see README "Operations").
# Without systemd as PID 1 (containers, chroots) the systemctl steps are skipped with a
# message.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

dry_run=0
no_start=0
bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --no-start) no_start=1 ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$bin" ] || { echo "install.sh: only one BINARY allowed" >&2; exit 2; }; bin=$1 ;;
  esac
  shift
done
bin=${bin:-$root/target/release/roulette}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
[ -z "$DESTDIR" ] || no_start=1

say() { printf 'install.sh: %s\n' "$*"; }
run() { # print, then run unless --dry-run
  printf '+ %s\n' "$*"
  [ "$dry_run" = 1 ] || "$@"
}

# --- checks -------------------------------------------------------------------------
[ -f "$bin" ] && [ -x "$bin" ] || { echo "install.sh: $bin is not an executable file (build it: cargo build --release)" >&2; exit 1; }
version=$("$bin" --version 2>&1) || { echo "install.sh: $bin --version failed: $version" >&2; exit 1; }
say "installing $version from $bin${DESTDIR:+ into $DESTDIR}"
[ "$dry_run" = 0 ] || say "dry run: nothing is changed"
for f in roulette.service roulette.env sysctl.d/60-roulette.conf; do
  [ -f "$here/$f" ] || { echo "install.sh: missing $here/$f" >&2; exit 1; }
done
if [ -z "$DESTDIR" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or set DESTDIR, or use --dry-run)" >&2
  exit 1
fi

# --- files --------------------------------------------------------------------------
# install_file MODE SRC DST: atomic replace (temp file + rename), so a running binary
# is never overwritten in place ("Text file busy") and readers never see half a file.
install_file() {
  local mode=$1 src=$2 dst=$3
  run install -d -m 0755 "$(dirname "$dst")"
  run install -m "$mode" "$src" "$dst.new.$$"
  run mv -f "$dst.new.$$" "$dst"
}

install_file 0755 "$bin" "$DESTDIR/usr/local/bin/roulette"
install_file 0644 "$here/roulette.service" "$DESTDIR/etc/systemd/system/roulette.service"
install_file 0644 "$here/sysctl.d/60-roulette.conf" "$DESTDIR/etc/sysctl.d/60-roulette.conf"
env_dst="$DESTDIR/etc/roulette/roulette.env"
if [ -e "$env_dst" ]; then
  say "keeping existing $env_dst (the shipped example is deploy/roulette.env)"
  case $(stat -c %a "$env_dst") in
    *00) ;;
    *) say "note: $env_dst is readable by other users: chmod 600 it if it holds a password (ROULETTE_CLUSTER)" ;;
  esac
else
  # 0600: the file may hold a secret (the Redis password in ROULETTE_CLUSTER); systemd
  # reads it as root.
  install_file 0600 "$here/roulette.env" "$env_dst"
fi

# --- activate -----------------------------------------------------------------------
if [ "$no_start" = 1 ]; then
  if [ -n "$DESTDIR" ]; then why="DESTDIR is set"; else why="--no-start"; fi
  say "files installed; skipping sysctl --system and systemctl ($why)"
  exit 0
fi

say "applying kernel settings"
if [ "$dry_run" = 1 ]; then
  printf '+ %s\n' "sysctl --system"
elif ! sysctl --system >/dev/null; then
  # Inside containers some keys (fs.*) are read-only: not fatal for the service itself.
  say "warning: sysctl --system reported errors (read-only keys in a container?)"
fi

# sd_booted(3): systemd is PID 1 exactly when /run/systemd/system exists.
if [ ! -d /run/systemd/system ] && [ "$dry_run" = 1 ]; then
  say "systemd is not running as PID 1 here; on a systemd host this would run:"
  printf '+ %s\n' "systemctl daemon-reload" "systemctl enable --now roulette.service" \
    "systemctl restart roulette.service   (only if it was already running)"
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  say "systemd is not running as PID 1 here: skipping systemctl."
  say "start it by hand: set -a; . /etc/roulette/roulette.env; set +a; /usr/local/bin/roulette"
  exit 0
fi
was_active=0
systemctl is-active --quiet roulette.service && was_active=1
run systemctl daemon-reload
run systemctl enable --now roulette.service
if [ "$was_active" = 1 ]; then
  say "roulette was running: restarting it on the new binary (drains: clients get close 1001)"
  run systemctl restart roulette.service
fi
[ "$dry_run" = 1 ] || systemctl --no-pager --lines=0 status roulette.service || true
say "done"
