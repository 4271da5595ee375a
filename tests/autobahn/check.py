#!/usr/bin/env python3
"""Compare an Autobahn report with the committed expected verdicts, case by case.

usage: tests/autobahn/check.py REPORT_DIR EXPECTED_JSON [--write]
Verdicts are classified exactly as autobahn_run.py beside this file does (imported, not
copied). Exit 1 when any case differs from the expectation; --write refreshes the file.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from autobahn_run import classify  # noqa: E402


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    report, expected_path = Path(argv[0]), Path(argv[1])
    data = json.loads((report / "index.json").read_text())
    cases = next(iter(data.values()))
    got = {cid: classify(entry) for cid, entry in cases.items()}
    key = lambda c: [int(p) for p in c.split(".")]
    got = {cid: got[cid] for cid in sorted(got, key=key)}
    if "--write" in argv:
        expected_path.write_text(json.dumps(got, indent=1) + "\n")
        print(f"autobahn-check: wrote {len(got)} verdicts to {expected_path}")
        return 0
    expected = json.loads(expected_path.read_text())
    diffs = [(c, expected.get(c), got.get(c)) for c in sorted(set(expected) | set(got), key=key)
             if expected.get(c) != got.get(c)]
    for cid, want, have in diffs:
        print(f"autobahn-check: case {cid}: expected {want}, got {have}")
    bad = [c for c, v in got.items() if v in ("FAILED", "NON-STRICT")]
    print(f"autobahn-check: {len(got)} cases, {len(diffs)} differ from {expected_path.name}, "
          f"{len(bad)} failed or non-strict")
    return 1 if diffs or bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
