#!/usr/bin/env python3
"""Run the Autobahn|Testsuite fuzzingclient cases against a WebSocket echo endpoint, summarize.

Called by run.sh with the venv's python:  autobahn_run.py URL [CASES]

The cases are the Autobahn|Testsuite's own case files, executed by kosoku (a Rust runner that
imports them; see README.md for why not the Python 2 `wstest`). kosoku writes Autobahn-format
reports (index.json/index.html plus one JSON/HTML file per case); this script then classifies
every case into one of OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED and prints a table
per case group, the failed cases, and as its last line:

    autobahn: 298 ok, 0 non-strict, 3 informational, 0 unimplemented, 0 failed of 301

Exit status: 0 when no case FAILED (NON-STRICT/INFORMATIONAL/UNIMPLEMENTED are reported but do
not fail the run, unless AUTOBAHN_STRICT=1 which also fails on NON-STRICT and UNIMPLEMENTED);
1 when a case failed; 2 on usage errors or when nothing listens at URL; 3 when the runner
crashed or ran past AUTOBAHN_TIMEOUT.

Environment:
  AUTOBAHN_OUT       report directory (default: $AUTOBAHN_HOME/reports/<UTC stamp>-<host>_<port>;
                     $AUTOBAHN_HOME/reports/latest then points at it)
  AUTOBAHN_PARALLEL  cases run concurrently (default 1, as the original suite)
  AUTOBAHN_TIMEOUT   seconds before the whole run is aborted (default 1800)
  AUTOBAHN_STRICT    1: exit 1 also on NON-STRICT or UNIMPLEMENTED cases
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = "*,-12.*,-13.*"
CATEGORIES = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
GROUPS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/performance",
    "10": "Misc (auto-fragmentation)",
    "12": "permessage-deflate payloads",
    "13": "permessage-deflate params",
}
CASE_TOKEN = re.compile(r"^(\*|\d+(\.(\d+|\*))*)$")

USAGE = """\
usage: run.sh URL [CASES]
  URL    ws:// URL of an endpoint that echoes every text/binary message back,
         e.g. ws://127.0.0.1:9001/echo
  CASES  comma-separated case ids or globs; a leading '-' (or '!') excludes.
         default: "*,-12.*,-13.*" (everything but permessage-deflate)
         examples: "1.*,2.*"   "*"   "9.*"   "*,-9.*,-12.*,-13.*"   "6.4.1"
"""


def die(msg: str, code: int = 2) -> None:
    print(f"run.sh: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_cases(spec: str) -> tuple[list[str], list[str]]:
    include: list[str] = []
    exclude: list[str] = []
    for tok in re.split(r"[,\s]+", spec.strip()):
        if not tok:
            continue
        neg = tok[0] in "-!"
        pat = tok[1:] if neg else tok
        if not CASE_TOKEN.match(pat):
            die(f"bad case pattern {tok!r}\n{USAGE}")
        (exclude if neg else include).append(pat)
    return include or ["*"], exclude


def classify(entry: dict) -> str:
    """One verdict per case, following the original Autobahn report's colouring.

    behavior is the headline verdict (OK/NON-STRICT/INFORMATIONAL/UNIMPLEMENTED/FAILED; kosoku
    adds ERROR for a case that could not run). behaviorClose judges the closing handshake: the
    original report shows FAILED and UNCLEAN in red (-> FAILED here), WRONG CODE and FAILED BY
    CLIENT in orange/yellow (-> NON-STRICT here).
    """
    b = entry.get("behavior")
    c = entry.get("behaviorClose")
    if b in ("FAILED", "ERROR"):
        return "FAILED"
    if b in ("UNIMPLEMENTED", "INFORMATIONAL"):
        return b
    if c in ("FAILED", "UNCLEAN"):
        return "FAILED"
    if c in ("WRONG CODE", "FAILED BY CLIENT"):
        return "NON-STRICT"
    if b in ("OK", "NON-STRICT"):
        return b
    return "FAILED"  # unknown label: be conservative


def case_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def compress_ids(ids: list[str], group_sizes: dict[str, int], limit: int = 60) -> str:
    """'12.*' for a whole group that is in the list, ids otherwise (at most `limit`)."""
    items: list[str] = []
    seen_groups: set[str] = set()
    per_group: dict[str, int] = {}
    for cid in ids:
        per_group[cid.split(".")[0]] = per_group.get(cid.split(".")[0], 0) + 1
    for cid in ids:
        grp = cid.split(".")[0]
        if per_group[grp] == group_sizes.get(grp) and per_group[grp] > 1:
            if grp not in seen_groups:
                seen_groups.add(grp)
                items.append(f"{grp}.* (all {per_group[grp]})")
        else:
            items.append(cid)
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def preflight(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        die(f"URL must start with ws:// or wss:// (got {url!r})\n{USAGE}")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        die(f"bad port in {url!r}")
    if not host:
        die(f"no host in {url!r}")
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        die(f"nothing accepts TCP connections at {host}:{port} ({exc}); start the server first")
    return host, port


def run_kosoku(url: str, include: list[str], exclude: list[str], outdir: Path,
               parallel: int, timeout: float) -> tuple[int | None, float]:
    # kosoku's CLI, via a wrapper that fixes one kosoku 0.1.0 bug (see kosoku_shim.py).
    cmd = [sys.executable, str(HERE / "kosoku_shim.py"), url, "-o", str(outdir), "-p", str(parallel)]
    for pat in include:
        cmd += ["-i", pat]
    for pat in exclude:
        cmd += ["-x", pat]
    t0 = time.monotonic()
    with open(outdir / "kosoku.log", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    return rc, time.monotonic() - t0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or len(argv) > 2:
        print(USAGE, file=sys.stderr)
        return 2
    url = argv[0]
    spec = argv[1] if len(argv) > 1 and argv[1].strip() else DEFAULT_CASES
    include, exclude = parse_cases(spec)
    host, port = preflight(url)

    parallel = int(os.environ.get("AUTOBAHN_PARALLEL", "1"))
    timeout = float(os.environ.get("AUTOBAHN_TIMEOUT", "1800"))
    strict = os.environ.get("AUTOBAHN_STRICT", "") not in ("", "0")

    reports = Path(os.environ.get("AUTOBAHN_HOME") or HERE) / "reports"
    if os.environ.get("AUTOBAHN_OUT"):
        outdir = Path(os.environ["AUTOBAHN_OUT"]).resolve()
    else:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        outdir = reports / f"{stamp}-{re.sub(r'[^A-Za-z0-9.-]', '_', host)}_{port}"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "index.json").unlink(missing_ok=True)  # never summarize a stale report
    if outdir.parent == reports:
        latest = reports / "latest"
        if latest.is_symlink() or not latest.exists():
            latest.unlink(missing_ok=True)
            latest.symlink_to(outdir.name)

    try:
        kver = version("kosoku")
    except PackageNotFoundError:
        kver = "?"
    print(f"run.sh: cases [{spec}] -> {url} (kosoku {kver}, parallel {parallel})", flush=True)

    rc, wall = run_kosoku(url, include, exclude, outdir, parallel, timeout)
    index = outdir / "index.json"
    if rc is None:
        die(f"runner exceeded AUTOBAHN_TIMEOUT={timeout:.0f}s; log: {outdir / 'kosoku.log'}", 3)
    if not index.exists():
        tail = (outdir / "kosoku.log").read_text(errors="replace").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        die(f"runner exited {rc} without a report (no case matched [{spec}]?); "
            f"log: {outdir / 'kosoku.log'}", 3)

    data = json.loads(index.read_text())
    if not data:
        die("report is empty", 3)
    agent = next(iter(data))
    cases: dict = data[agent]

    per_group: dict[str, dict[str, int]] = {}
    group_ms: dict[str, int] = {}
    by_cat: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for cid in sorted(cases, key=case_key):
        entry = cases[cid]
        cat = classify(entry)
        grp = cid.split(".")[0]
        per_group.setdefault(grp, {c: 0 for c in CATEGORIES})[cat] += 1
        group_ms[grp] = group_ms.get(grp, 0) + int(entry.get("duration") or 0)
        by_cat[cat].append(cid)

    print(f"agent: {agent}")
    print(f"report: {outdir / 'index.html'}")
    hdr = f"{'group':<32}{'OK':>6}{'NON-STRICT':>12}{'INFO':>6}{'UNIMPL':>8}{'FAILED':>8}{'total':>7}{'case time':>11}"
    print(hdr)
    for grp in sorted(per_group, key=int):
        row = per_group[grp]
        name = f"{grp:>2} {GROUPS.get(grp, '?')}"
        print(f"{name:<32}{row['OK']:>6}{row['NON-STRICT']:>12}{row['INFORMATIONAL']:>6}"
              f"{row['UNIMPLEMENTED']:>8}{row['FAILED']:>8}{sum(row.values()):>7}"
              f"{group_ms[grp] / 1000:>10.1f}s")

    def detail(cid: str) -> str:
        e = cases[cid]
        s = f"  {cid}: behavior={e.get('behavior')} close={e.get('behaviorClose')} remoteCloseCode={e.get('remoteCloseCode')}"
        rf = e.get("reportfile")
        if rf and (outdir / rf).exists():
            try:
                full = json.loads((outdir / rf).read_text())
                why = full.get("result") if e.get("behavior") not in ("OK",) else full.get("resultClose")
                s += f" | {why}"
                if full.get("description"):
                    s += f" | {full['description'][:100]}"
            except (OSError, ValueError):
                pass
        return s

    sizes = {g: sum(row.values()) for g, row in per_group.items()}
    if by_cat["FAILED"]:
        print(f"failed ({len(by_cat['FAILED'])}): {compress_ids(by_cat['FAILED'], sizes)}")
        for cid in by_cat["FAILED"][:40]:
            print(detail(cid))
    else:
        print("failed (0): none")
    if by_cat["NON-STRICT"]:
        print(f"non-strict ({len(by_cat['NON-STRICT'])}): {compress_ids(by_cat['NON-STRICT'], sizes)}")
    if by_cat["INFORMATIONAL"]:
        print(f"informational ({len(by_cat['INFORMATIONAL'])}): {compress_ids(by_cat['INFORMATIONAL'], sizes)}")
    if by_cat["UNIMPLEMENTED"]:
        print(f"unimplemented ({len(by_cat['UNIMPLEMENTED'])}): {compress_ids(by_cat['UNIMPLEMENTED'], sizes)}")
    print(f"wall time: {wall:.1f} s for {len(cases)} cases")

    n = {c: len(v) for c, v in by_cat.items()}
    print(f"autobahn: {n['OK']} ok, {n['NON-STRICT']} non-strict, {n['INFORMATIONAL']} informational, "
          f"{n['UNIMPLEMENTED']} unimplemented, {n['FAILED']} failed of {len(cases)}", flush=True)

    if n["FAILED"]:
        return 1
    if strict and (n["NON-STRICT"] or n["UNIMPLEMENTED"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
