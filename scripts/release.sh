#!/usr/bin/env bash
# Builds roulette's release artifacts into one folder (README "Releases"):
#
#   roulette-VERSION-x86_64-linux-gnu.tar.gz  roulette-VERSION/: bin/roulette, deploy/install.sh,
#                                             deploy/roulette.service, deploy/roulette.env,
#                                             deploy/sysctl.d/60-roulette.conf, README.md,
#                                             LICENSE, docs/PROTOCOL.md (sorted, owner 0,
#                                             mtimes = the commit's time)
#   roulette_VERSION-1_amd64.deb              Debian package (cargo-deb, [package.metadata.deb])
#   roulette-VERSION-oci.tar                  OCI image roulette:VERSION (oci-archive), built
#                                             from scratch: the binary, the libraries ldd names,
#                                             /etc/passwd and /etc/group; runs as uid 10001
#   SHA256SUMS                                `sha256sum -c SHA256SUMS` inside the folder
#
# All three carry the same binary: the stripped /usr/bin/roulette of the .deb.
#
# Usage: scripts/release.sh [OUT_DIR]          (default: target/release-artifacts)
# Environment:
#   ROULETTE_MAINTAINER   Maintainer of the .deb (default: Cargo.toml's placeholder)
#   ROULETTE_SOURCE_URL   org.opencontainers.image.source label (default: the git remote
#                         "origin"; without either the label is left out)
# Needs root for what is missing (apt-get install buildah dpkg-dev; cargo install cargo-deb).
# buildah keeps its storage under target/buildah (vfs driver), never the system's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO_DEB_VERSION=3.8.0
IMAGE_UID=10001
ARCH_TRIPLE=x86_64-linux-gnu

OUT=${1:-$ROOT/target/release-artifacts}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAGE=$ROOT/target/release-staging
BUILDAH_DIR=$ROOT/target/buildah
log() { printf '== release: %s\n' "$*"; }
die() { printf 'release.sh: %s\n' "$*" >&2; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "this script builds x86_64 artifacts only (README 'Later, on paper' for aarch64)"

# --- tools -----------------------------------------------------------------------------
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v strip >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing: ${need[*]} (run as root, or install them)"
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  log "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

# --- what is being released ------------------------------------------------------------
VERSION=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "roulette"))')
REVISION=$(git rev-parse --short=12 HEAD)
# Every timestamp in the artifacts is the commit's, so a rebuild of the same commit gives
# the same tarball and image layers.
export SOURCE_DATE_EPOCH; SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "release.sh: warning: the working tree has uncommitted changes; the artifacts say revision $REVISION but are not exactly it" >&2
fi
SOURCE_URL=${ROULETTE_SOURCE_URL:-$(git remote get-url origin 2>/dev/null | sed -E 's#^(https?://)[^/@]*@#\1#' || true)}
TARBALL=roulette-$VERSION-$ARCH_TRIPLE.tar.gz
DEB=roulette_$VERSION-1_amd64.deb
OCI=roulette-$VERSION-oci.tar
log "roulette $VERSION (revision $REVISION, commit time $(date -u -d "@$SOURCE_DATE_EPOCH" +%FT%TZ)) -> $OUT"

# The folder holds exactly this release: old artifacts of ours go, anything else stops us.
for f in "$OUT"/* "$OUT"/.[!.]*; do
  [ -e "$f" ] || continue
  case ${f##*/} in
    roulette-*-"$ARCH_TRIPLE".tar.gz|roulette_*.deb|roulette-*-oci.tar|SHA256SUMS) rm -f "$f" ;;
    *) die "$OUT holds ${f##*/}, which is not a release artifact: use an empty folder" ;;
  esac
done
rm -rf "$STAGE"
mkdir -p "$STAGE"

# --- binary ----------------------------------------------------------------------------
log "cargo build --release --locked -p roulette"
cargo build --release --locked -q -p roulette
got=$("$ROOT/target/release/roulette" --version)
[ "$got" = "roulette $VERSION (revision $REVISION)" ] || die "target/release/roulette says '$got', want 'roulette $VERSION (revision $REVISION)'"

# --- Debian package --------------------------------------------------------------------
log "cargo deb (strips the binary; Depends from dpkg-shlibdeps)"
deb_args=(--no-build --strip --locked -p roulette --output "$OUT/$DEB")
[ -z "${ROULETTE_MAINTAINER:-}" ] || deb_args+=(--maintainer "$ROULETTE_MAINTAINER")
cargo deb "${deb_args[@]}" >"$STAGE/cargo-deb.log" 2>&1 || { cat "$STAGE/cargo-deb.log" >&2; die "cargo deb failed"; }
grep -i warning "$STAGE/cargo-deb.log" >&2 || true
dpkg-deb --fsys-tarfile "$OUT/$DEB" | tar -xO ./usr/bin/roulette >"$STAGE/roulette"
chmod 0755 "$STAGE/roulette"
got=$("$STAGE/roulette" --version)
[ "$got" = "roulette $VERSION (revision $REVISION)" ] || die "the packaged binary says '$got'"

# --- tarball ---------------------------------------------------------------------------
log "tarball $TARBALL"
T=$STAGE/tar/roulette-$VERSION
install -D -m 0755 "$STAGE/roulette" "$T/bin/roulette"
install -D -m 0755 deploy/install.sh "$T/deploy/install.sh"
install -D -m 0644 deploy/roulette.service "$T/deploy/roulette.service"
install -D -m 0644 deploy/roulette.env "$T/deploy/roulette.env"
install -D -m 0644 deploy/sysctl.d/60-roulette.conf "$T/deploy/sysctl.d/60-roulette.conf"
install -D -m 0644 README.md "$T/README.md"
install -D -m 0644 LICENSE "$T/LICENSE"
install -D -m 0644 docs/PROTOCOL.md "$T/docs/PROTOCOL.md"
tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
  --mode='go-w' -C "$STAGE/tar" -cf - "roulette-$VERSION" | gzip -n -9 >"$OUT/$TARBALL"

# --- OCI image -------------------------------------------------------------------------
log "OCI image roulette:$VERSION from scratch (buildah, vfs storage in target/buildah)"
R=$STAGE/rootfs
install -D -m 0755 "$STAGE/roulette" "$R/usr/bin/roulette"
# Exactly the shared objects the dynamic loader maps for this binary (and the loader itself),
# each at the path ldd names, as a regular file.
ldd "$STAGE/roulette" >"$STAGE/ldd.txt" || die "ldd failed: $(cat "$STAGE/ldd.txt")"
! grep -q 'not found' "$STAGE/ldd.txt" || die "unresolved libraries: $(grep 'not found' "$STAGE/ldd.txt")"
libs=$(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' "$STAGE/ldd.txt" | sort -u)
[ -n "$libs" ] || die "ldd named no libraries: $(cat "$STAGE/ldd.txt")"
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$R$lib"
done
mkdir -p "$R/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nroulette:x:%s:%s:roulette:/nonexistent:/sbin/nologin\n' \
  "$IMAGE_UID" "$IMAGE_UID" >"$R/etc/passwd"
printf 'root:x:0:\nroulette:x:%s:\n' "$IMAGE_UID" >"$R/etc/group"
chmod 0644 "$R/etc/passwd" "$R/etc/group"
find "$R" -type d -exec chmod 0755 {} +

bah() { buildah --root "$BUILDAH_DIR/root" --runroot "$BUILDAH_DIR/run" --storage-driver vfs "$@"; }
CTR=roulette-release-$$
trap 'bah rm "$CTR" >/dev/null 2>&1 || true' EXIT
bah from --quiet --name "$CTR" scratch >/dev/null
bah copy --quiet --chown 0:0 "$CTR" "$R/" / >/dev/null
labels=(--label "org.opencontainers.image.title=roulette"
  --label "org.opencontainers.image.description=Anonymous one-to-one WebSocket chat server"
  --label "org.opencontainers.image.version=$VERSION"
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD)"
  --label "org.opencontainers.image.licenses=MIT"
  --label "org.opencontainers.image.created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%FT%TZ)")
if [ -n "$SOURCE_URL" ]; then
  labels+=(--label "org.opencontainers.image.source=$SOURCE_URL")
else
  echo "release.sh: no ROULETTE_SOURCE_URL and no git remote 'origin': image label org.opencontainers.image.source left out" >&2
fi
# Both listeners on every address of the container's own network namespace: its loopback is
# reachable from nowhere else, so metrics on 127.0.0.1 could never be scraped. Publish 9898
# only where Prometheus runs (README "Releases"); EXPOSE names the public port alone.
bah config --os linux --arch amd64 --user "$IMAGE_UID:$IMAGE_UID" --workingdir / \
  --created-by "scripts/release.sh: the binary, its libraries, /etc/passwd, /etc/group" --port 8080/tcp --entrypoint '["/usr/bin/roulette"]' --cmd '' --stop-signal SIGTERM \
  --env ROULETTE_LISTEN=0.0.0.0:8080 --env ROULETTE_METRICS_LISTEN=0.0.0.0:9898 \
  "${labels[@]}" "$CTR"
# Committed as an OCI layout folder, then archived here with fixed metadata: the image's
# digests depend only on --timestamp, and this way the archive's bytes do too.
bah commit --quiet --format oci --timestamp "$SOURCE_DATE_EPOCH" --disable-compression=false --rm \
  "$CTR" "oci:$STAGE/oci:roulette:$VERSION" >/dev/null
trap - EXIT
tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
  -C "$STAGE/oci" -cf "$OUT/$OCI" index.json oci-layout blobs
# The image is in the archive; nothing needs to stay in buildah's storage.
bah rmi --all >/dev/null 2>&1 || true
rm -rf "$BUILDAH_DIR"
IMAGE_BYTES=$(du -sb --apparent-size "$R" | cut -f1)

# --- checksums and summary -------------------------------------------------------------
(cd "$OUT" && sha256sum "$TARBALL" "$DEB" "$OCI" >SHA256SUMS)
log "artifacts in $OUT"
(cd "$OUT" && for f in "$TARBALL" "$DEB" "$OCI" SHA256SUMS; do
  printf '  %-44s %10s bytes  %s\n' "$f" "$(stat -c %s "$f")" "$(numfmt --to=iec-i --suffix=B "$(stat -c %s "$f")")"
done)
printf '  image roulette:%s: %s unpacked (%s files: the binary, %s libraries, /etc/passwd, /etc/group), user %s\n' \
  "$VERSION" "$(numfmt --to=iec-i --suffix=B "$IMAGE_BYTES")" "$(find "$R" -type f | wc -l)" \
  "$(printf '%s\n' "$libs" | wc -l)" "$IMAGE_UID"
printf '  .deb Depends: %s\n' "$(dpkg-deb -f "$OUT/$DEB" Depends)"
