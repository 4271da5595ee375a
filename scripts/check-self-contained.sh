#!/usr/bin/env bash
# The repository stands alone: no tracked file may refer to a folder beside the checkout
# (`../shared`), to a path of a development machine, or to notes that live outside the
# repository. The one exception: scripts/bench-compare.sh may build the optional uWebSockets
# anchor from ../shared/uws-chat when that folder happens to exist (its columns are skipped
# otherwise). Run by scripts/test.sh; exit 1 with the offending lines.
set -euo pipefail
cd "$(dirname "$0")/.."

patterns=(
  -e '\.\./shared'
  -e '/work/'
  -e 'DESIGN-NOTES'
  -e 'ECOSYSTEM-NOTES'
  -e 'shared/PROTOCOL'
  -e 'shared/autobahn'
)
# This script names the patterns; lock files hold only package metadata.
hits=$(git grep -n -I "${patterns[@]}" -- . ':!Cargo.lock' ':!*/Cargo.lock' ':!*package-lock.json' \
  ':!scripts/check-self-contained.sh' || true)
# bench-compare.sh: only its uWebSockets anchor may look beside the checkout.
hits=$(printf '%s\n' "$hits" | grep -v '^scripts/bench-compare.sh:[0-9]*:.*uws' | sed '/^$/d' || true)
if [ -n "$hits" ]; then
  echo "check-self-contained: these lines refer to files outside the repository:" >&2
  printf '%s\n' "$hits" >&2
  exit 1
fi
echo "check-self-contained: no reference outside the repository ($(git ls-files | wc -l) tracked files)"

# The toolchain stated in Cargo.toml is the highest minimum any locked dependency declares.
cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
ver = lambda s: tuple(int(x) for x in s.split("."))
root = next(p for p in d["packages"] if p["name"] == "roulette" and p["source"] is None)
declared = [(ver(p["rust_version"]), p["name"]) for p in d["packages"]
            if p.get("rust_version") and p["source"] is not None]
need, who = max(declared)
need_s = ".".join(str(x) for x in need)
stated_s = root.get("rust_version") or "none"
if stated_s == "none" or ver(stated_s) != need:
    sys.exit("check-self-contained: Cargo.toml says rust-version " + stated_s + ", but " + who
             + " needs " + need_s + ": state the highest minimum")
print("check-self-contained: rust-version " + stated_s + " (" + who + " needs it)")
'
