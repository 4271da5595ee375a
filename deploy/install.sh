#!/usr/bin/env bash
# Install roulette as a systemd service on this machine.
#
#   deploy/install.sh [--dry-run] [--no-start] [--sha256 HEX] [ARTIFACT]
#   deploy/install.sh [--dry-run] [--no-start] --url URL --sha256 HEX
#   deploy/install.sh [--dry-run] [--no-start] --rollback
#
#   ARTIFACT      what to install; default: bin/roulette of the release tarball this script
#                 came in, else target/release/roulette of the repository. One of:
#                   a roulette executable            (binary route)
#                   roulette-VERSION-*.tar.gz         (tarball route: its binary and files)
#                   roulette_VERSION-*.deb            (package route: apt-get install)
#   --url URL     download the tarball or .deb first (https://, http://, file://)
#   --sha256 HEX  its SHA-256 (the line in the release's SHA256SUMS), checked before
#                 anything is installed. Required with --url.
#   --insecure-no-checksum   allow --url without --sha256
#   --rollback    binary/tarball route: swap /usr/local/bin/roulette with the
#                 roulette.previous kept by the last install, then restart the service.
#                 (Package route: apt-get install --allow-downgrades ./roulette_PREV.deb.)
#   --dry-run     print every step, change nothing
#   --no-start    install files only; no sysctl --system, no systemctl (package route:
#                 the package's own start is held back with a temporary policy-rc.d)
#   DESTDIR=DIR   install under DIR instead of / (packaging, CI); implies --no-start;
#                 binary/tarball route only
#
# Binary/tarball route installs:
#   /usr/local/bin/roulette                   (replaced; the one it replaces is kept as
#                                              /usr/local/bin/roulette.previous)
#   /etc/systemd/system/roulette.service      (replaced; deploy/roulette.service with
#                                              ExecStart=/usr/local/bin/roulette)
#   /etc/roulette/roulette.env                (0600; only if missing: your settings are kept)
#   /etc/sysctl.d/60-roulette.conf            (replaced on every run)
#   the system user roulette                  (if missing; the unit runs as User=roulette)
# then `sysctl --system`, `systemctl daemon-reload`, `systemctl enable --now roulette`,
# and, when the service was already running (an upgrade), `systemctl restart roulette`
# (which drains: clients get close 1001; see README "Operations").
# Package route: `apt-get install` with --force-confold (an existing
# /etc/roulette/roulette.env is kept; the package's default lands next to it as
# roulette.env.dpkg-dist). The package owns the unit, the user and the kernel settings, so
# this script first removes what an earlier binary/tarball install left that would shadow
# them: its /etc/systemd/system/roulette.service, /usr/local/bin/roulette{,.previous} and
# an unchanged /etc/sysctl.d/60-roulette.conf.
# Without systemd as PID 1 (containers, chroots) the systemctl steps are skipped with a
# message.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# The first line of the unit this script installs: how the package route recognises it.
MARKER='# Installed by deploy/install.sh (binary/tarball route); a roulette .deb replaces it.'

dry_run=0
no_start=0
rollback=0
insecure=0
url=
sha256=
artifact=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --no-start) no_start=1 ;;
    --rollback) rollback=1 ;;
    --insecure-no-checksum) insecure=1 ;;
    --url) [ $# -ge 2 ] || { echo "install.sh: --url needs a URL" >&2; exit 2; }; url=$2; shift ;;
    --url=*) url=${1#--url=} ;;
    --sha256) [ $# -ge 2 ] || { echo "install.sh: --sha256 needs a checksum" >&2; exit 2; }; sha256=$2; shift ;;
    --sha256=*) sha256=${1#--sha256=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$artifact" ] || { echo "install.sh: only one ARTIFACT allowed" >&2; exit 2; }; artifact=$1 ;;
  esac
  shift
done
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
[ -z "$DESTDIR" ] || no_start=1

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
run() { # print, then run unless --dry-run
  printf '+ %s\n' "$*"
  [ "$dry_run" = 1 ] || "$@"
}
need_root() {
  if [ -z "$DESTDIR" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or set DESTDIR, or use --dry-run)"
  fi
}
# sd_booted(3): systemd is PID 1 exactly when /run/systemd/system exists.
have_systemd() { [ -d /run/systemd/system ]; }
package_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' roulette 2>/dev/null)" = installed ]
}

bindir="$DESTDIR/usr/local/bin"
unit_dst="$DESTDIR/etc/systemd/system/roulette.service"
sysctl_dst="$DESTDIR/etc/sysctl.d/60-roulette.conf"
env_dst="$DESTDIR/etc/roulette/roulette.env"

# restart_service WHY: the systemctl part of an install or rollback.
restart_service() {
  if [ "$no_start" = 1 ]; then
    if [ -n "$DESTDIR" ]; then why="DESTDIR is set"; else why="--no-start"; fi
    say "skipping systemctl ($why)"
    return 0
  fi
  if ! have_systemd; then
    say "systemd is not running as PID 1 here: skipping systemctl; on a systemd host this runs:"
    printf '+ %s\n' "$@"
    return 0
  fi
  local cmd
  for cmd in "$@"; do
    # shellcheck disable=SC2086 # each entry is a whole command line
    run $cmd
  done
}

# --- rollback ---------------------------------------------------------------------------
if [ "$rollback" = 1 ]; then
  [ -z "$artifact$url" ] || die "--rollback takes no ARTIFACT or --url"
  need_root
  cur="$bindir/roulette" prev="$bindir/roulette.previous"
  if [ ! -x "$prev" ]; then
    if package_installed; then
      die "no $prev: roulette is installed as a package here; roll back with: apt-get install --allow-downgrades ./roulette_PREVIOUS.deb"
    fi
    die "no $prev to roll back to (it is kept by the second install of the binary/tarball route)"
  fi
  prev_version=$("$prev" --version 2>&1) || die "$prev --version failed: $prev_version"
  cur_version=$("$cur" --version 2>&1) || cur_version="(missing or broken)"
  say "rolling back: $cur_version -> $prev_version (the current one becomes roulette.previous)"
  # Every path is replaced by a rename, so the unit never finds a missing or half binary.
  run install -m 0755 "$prev" "$cur.new.$$"
  if [ -e "$cur" ]; then run install -m 0755 "$cur" "$prev.new.$$"; fi
  run mv -f "$cur.new.$$" "$cur"
  if [ -e "$prev.new.$$" ] || [ "$dry_run" = 1 ]; then run mv -f "$prev.new.$$" "$prev"; fi
  restart_service "systemctl restart roulette.service"
  say "done"
  exit 0
fi

# --- fetch and verify -------------------------------------------------------------------
work=
cleanup() { [ -z "$work" ] || rm -rf "$work"; }
trap cleanup EXIT
if [ -n "$sha256" ]; then
  sha256=$(printf '%s' "$sha256" | tr 'A-F' 'a-f')
  [[ $sha256 =~ ^[0-9a-f]{64}$ ]] || die "--sha256 wants 64 hex digits, got '$sha256'"
fi
if [ -n "$url" ]; then
  [ -z "$artifact" ] || die "give either --url or ARTIFACT, not both"
  if [ -z "$sha256" ] && [ "$insecure" = 0 ]; then
    die "refusing to install a download without a checksum: add --sha256 HEX (from the release's SHA256SUMS), or --insecure-no-checksum"
  fi
  command -v curl >/dev/null || die "curl is needed for --url (apt-get install curl)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/roulette-install.XXXXXX")
  # apt reads a local .deb as its unprivileged _apt user: let it.
  chmod 0755 "$work"
  name=${url%%[?#]*}; name=${name##*/}
  case $name in *.deb|*.tar.gz|*.tgz) ;; *) name=roulette-download ;; esac
  artifact=$work/$name
  say "downloading $url"
  curl -fsSL --retry 3 --retry-delay 2 --connect-timeout 15 --proto '=https,http,file' -o "$artifact" "$url" ||
    die "download failed: $url"
  chmod 0644 "$artifact"
elif [ "$insecure" = 1 ]; then
  say "note: --insecure-no-checksum only matters with --url"
fi
if [ -n "$sha256" ]; then
  [ -n "$artifact" ] || die "--sha256 needs --url or ARTIFACT"
  [ -f "$artifact" ] || die "$artifact is not a file"
  got=$(sha256sum "$artifact" | cut -d' ' -f1)
  [ "$got" = "$sha256" ] || die "SHA-256 mismatch for ${url:-$artifact}: got $got, want $sha256; nothing was installed"
  say "SHA-256 ok ($got)"
elif [ -n "$url" ]; then
  say "WARNING: installing $url without checking its SHA-256 (--insecure-no-checksum)"
fi

# What kind of artifact: by its first bytes, not its name.
if [ -z "$artifact" ]; then
  if [ -x "$root/bin/roulette" ]; then artifact=$root/bin/roulette; else artifact=$root/target/release/roulette; fi
fi
[ -f "$artifact" ] || die "$artifact is not a file (build it: cargo build --release)"
magic=$(head -c 8 "$artifact" | od -An -tx1 | tr -d ' \n')
case $magic in
  213c617263683e0a) kind=deb ;;     # "!<arch>\n": an ar archive, as every .deb is
  1f8b*) kind=tarball ;;            # gzip
  7f454c46*) kind=binary ;;         # ELF
  *) die "$artifact is neither a roulette executable, a release tarball (.tar.gz) nor a .deb" ;;
esac

# --- package route ----------------------------------------------------------------------
if [ "$kind" = deb ]; then
  [ -z "$DESTDIR" ] || die "DESTDIR is for the binary/tarball route; a .deb installs with apt-get on this machine"
  need_root
  pkg=$(dpkg-deb -f "$artifact" Package 2>/dev/null) || die "$artifact is not a readable .deb"
  [ "$pkg" = roulette ] || die "$artifact is the package '$pkg', not roulette"
  ver=$(dpkg-deb -f "$artifact" Version)
  say "installing the roulette $ver package from $artifact"
  [ "$dry_run" = 0 ] || say "dry run: nothing is changed"
  artifact=$(realpath "$artifact")
  migrated=0
  # What an earlier binary/tarball install left would shadow the package's files.
  if [ -e "$unit_dst" ]; then
    if [ "$(head -1 "$unit_dst")" = "$MARKER" ]; then
      say "removing the binary/tarball route's unit, which would shadow the package's"
      # ... and the symlinks `systemctl enable` made to it (the package enables its own).
      for l in "$DESTDIR"/etc/systemd/system/*.wants/roulette.service; do
        if [ -L "$l" ] && [ "$(readlink "$l")" = /etc/systemd/system/roulette.service ]; then run rm -f "$l"; fi
      done
      run rm -f "$unit_dst"
      for f in "$bindir/roulette" "$bindir/roulette.previous"; do
        if [ -e "$f" ]; then run rm -f "$f"; fi
      done
      migrated=1
    else
      say "WARNING: $unit_dst is not install.sh's: it overrides the package's unit; remove it unless you mean that (systemctl edit roulette makes a drop-in instead)"
    fi
  fi
  if [ -e "$sysctl_dst" ]; then
    if dpkg-deb --fsys-tarfile "$artifact" | tar -xO ./usr/lib/sysctl.d/60-roulette.conf | cmp -s - "$sysctl_dst"; then
      say "removing $sysctl_dst: the package ships the same settings in /usr/lib/sysctl.d"
      run rm -f "$sysctl_dst"
    else
      say "keeping $sysctl_dst: it differs from the package's /usr/lib/sysctl.d/60-roulette.conf and replaces it"
    fi
  fi
  if [ -e "$env_dst" ]; then
    say "keeping $env_dst (the package's default lands next to it as roulette.env.dpkg-dist if it differs)"
  fi
  was_active=0
  if have_systemd && systemctl is-active --quiet roulette.service; then was_active=1; fi
  if [ "$migrated" = 1 ] && have_systemd; then run systemctl daemon-reload; fi
  own_policy=0
  if [ "$no_start" = 1 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    say "--no-start: holding back the package's start with a temporary /usr/sbin/policy-rc.d"
    if [ "$dry_run" = 0 ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && own_policy=1
      trap 'cleanup; [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d' EXIT
    fi
  fi
  # --force-confdef/--force-confold: never ask about /etc/roulette/roulette.env; an edited
  # (or pre-seeded) file is kept. --allow-downgrades: installing the previous .deb is the
  # package route's rollback.
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$artifact"
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; own_policy=0; fi
  if [ "$migrated" = 1 ] && [ "$was_active" = 1 ] && [ "$no_start" = 0 ]; then
    say "the service still runs the old /usr/local/bin binary: restarting it on the package's (drains)"
    run systemctl restart roulette.service
  fi
  [ "$dry_run" = 1 ] || /usr/bin/roulette --version
  say "done"
  exit 0
fi

# --- binary / tarball route -------------------------------------------------------------
if [ "$kind" = tarball ]; then
  [ -n "$work" ] || work=$(mktemp -d "${TMPDIR:-/tmp}/roulette-install.XXXXXX")
  mkdir -p "$work/x"
  tar -xzf "$artifact" -C "$work/x" --no-same-owner --no-same-permissions || die "cannot unpack $artifact"
  top=$(find "$work/x" -mindepth 1 -maxdepth 1)
  [ "$(printf '%s\n' "$top" | wc -l)" = 1 ] && [ -d "$top" ] && [[ ${top##*/} == roulette-* ]] ||
    die "$artifact is not a roulette release tarball (one top folder roulette-VERSION/)"
  say "unpacked ${artifact##*/}: ${top##*/}"
  here=$top/deploy
  bin=$top/bin/roulette
  chmod 0755 "$bin" 2>/dev/null || true
else
  bin=$artifact
  # A downloaded file has no execute bit yet.
  [ -z "$url" ] || chmod 0755 "$bin"
fi
[ -x "$bin" ] || die "$bin is not an executable file (build it: cargo build --release)"
version=$("$bin" --version 2>&1) || die "$bin --version failed: $version"
say "installing $version from $artifact${DESTDIR:+ into $DESTDIR}"
[ "$dry_run" = 0 ] || say "dry run: nothing is changed"
for f in roulette.service roulette.env sysctl.d/60-roulette.conf; do
  [ -f "$here/$f" ] || die "missing $here/$f"
done
grep -qx 'ExecStart=/usr/bin/roulette' "$here/roulette.service" || die "$here/roulette.service has no ExecStart=/usr/bin/roulette line"
need_root
if [ -z "$DESTDIR" ] && package_installed; then
  die "the roulette package is installed here: upgrade it with a .deb (install.sh roulette_VERSION.deb), or apt-get purge roulette first"
fi

# install_file MODE SRC DST: atomic replace (temp file + rename), so a running binary
# is never overwritten in place ("Text file busy") and readers never see half a file.
install_file() {
  local mode=$1 src=$2 dst=$3
  run install -d -m 0755 "$(dirname "$dst")"
  run install -m "$mode" "$src" "$dst.new.$$"
  run mv -f "$dst.new.$$" "$dst"
}

# The binary it replaces stays as roulette.previous for --rollback (a re-install of the
# same binary keeps the older one there).
if [ -e "$bindir/roulette" ] && ! cmp -s "$bin" "$bindir/roulette"; then
  say "keeping the current binary as $bindir/roulette.previous ($("$bindir/roulette" --version 2>&1 || echo unknown version))"
  install_file 0755 "$bindir/roulette" "$bindir/roulette.previous"
fi
install_file 0755 "$bin" "$bindir/roulette"
# The packaged unit, pointed at /usr/local/bin and marked as this script's.
run install -d -m 0755 "$(dirname "$unit_dst")"
if [ "$dry_run" = 1 ]; then
  printf '+ %s\n' "sed 's#^ExecStart=/usr/bin/roulette\$#ExecStart=/usr/local/bin/roulette#' $here/roulette.service > $unit_dst"
else
  { printf '%s\n' "$MARKER"; sed 's#^ExecStart=/usr/bin/roulette$#ExecStart=/usr/local/bin/roulette#' "$here/roulette.service"; } >"$unit_dst.new.$$"
  chmod 0644 "$unit_dst.new.$$"
  mv -f "$unit_dst.new.$$" "$unit_dst"
fi
install_file 0644 "$here/sysctl.d/60-roulette.conf" "$sysctl_dst"
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

# The unit runs as User=roulette: the same system user the package creates.
if [ -n "$DESTDIR" ]; then
  say "DESTDIR: not creating the system user roulette; on the target run: adduser --system --group --no-create-home --home /nonexistent roulette"
elif ! getent passwd roulette >/dev/null; then
  if command -v adduser >/dev/null; then
    run adduser --system --group --quiet --no-create-home --home /nonexistent roulette
  else
    run useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin roulette
  fi
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

if ! have_systemd; then
  say "systemd is not running as PID 1 here: skipping systemctl; on a systemd host this runs:"
  printf '+ %s\n' "systemctl daemon-reload" "systemctl enable --now roulette.service" \
    "systemctl restart roulette.service   (only if it was already running)"
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
