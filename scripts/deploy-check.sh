#!/usr/bin/env bash
# Checks everything under deploy/ with the real tools, offline (loopback only):
#
#   unit        systemd-analyze verify (fails on ANY output) + security --offline score,
#               and the binary's actual system calls (strace) against the unit's
#               SystemCallFilter / RestrictAddressFamilies (systemd is not PID 1 in CI,
#               so the filter cannot be applied for real)
#   env file    documents every ROULETTE_* variable of `roulette --help` with its default;
#               the file with every line uncommented starts the server
#   sysctl      every key exists in this kernel (nothing is applied)
#   cloud-init  cloud-init schema; no copies of what the .deb installs (unit, sysctl);
#               release tokens and node settings (0600, example values as in deploy/); the
#               embedded install script against file:// URLs (tokens, empty and wrong
#               SHA-256 refused; apt-get stubbed); a cluster node's user-data (tokens filled
#               in and ROULETTE_CLUSTER uncommented as README "Deploying a cluster" does)
#   Redis       deploy/redis: setup.sh (bash -n, shellcheck, DESTDIR run, re-run keeps the
#               password, address detection); redis-server on the installed redis.conf on
#               loopback: password required, CONFIG GET matches the file (persistence off,
#               noeviction, ...), a full Redis refuses writes and evicts nothing, no dump
#               file after shutdown; cloud-init schema, embedded conf/script identical
#   LB          haproxy -c / nginx -t on copies using a throw-away self-signed cert, then
#               both proxies run on loopback in front of two live nodes: TLS, WebSocket
#               upgrade, and a draining node (503) leaving the rotation
#   Prometheus  promtool check config / check rules / test rules
#   dashboard   JSON structure, datasources, PromQL syntax (via promtool), and every
#               metric name in dashboard and rules exists in a live scrape (the union of
#               a single node's and a cluster node's on a loopback redis-server; the
#               cluster node must report roulette_cluster_redis_up 1)
#   install.sh  bash -n, shellcheck (if present), DESTDIR install + re-run + dry run; a
#               release tarball over file:// with --sha256 (wrong/missing refused),
#               roulette.previous and --rollback (the .deb route: scripts/release-check.sh)
#
# Usage: scripts/deploy-check.sh   (ROULETTE_BIN=path/to/roulette, default
# target/release/roulette). Installs missing Debian packages when run as root.
# Exits non-zero if any check fails.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BIN=${ROULETTE_BIN:-$ROOT/target/release/roulette}
DEPLOY=$ROOT/deploy
WORK=$(mktemp -d "${TMPDIR:-/tmp}/roulette-deploy-check.XXXXXX")
PIDS=()
FAILED=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ -n "${DEPLOY_CHECK_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

section() { printf '\n== %s ==\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; FAILED+=("$*"); }
indent() { sed 's/^/      /'; }
# run_quiet NAME CMD...: pass when CMD exits 0 AND prints nothing.
run_quiet() {
  local name=$1 out rc
  shift
  out=$("$@" 2>&1); rc=$?
  if [ $rc -eq 0 ] && [ -z "$out" ]; then pass "$name (no output)"; else
    printf '%s\n' "$out" | indent; fail "$name (rc $rc)"; fi
}
# run_ok NAME CMD...: pass when CMD exits 0; always show its output.
run_ok() {
  local name=$1 out rc
  shift
  out=$("$@" 2>&1); rc=$?
  [ -z "$out" ] || printf '%s\n' "$out" | indent
  if [ $rc -eq 0 ]; then pass "$name"; else fail "$name (rc $rc)"; fi
}

# ------------------------------------------------------------------------------------
section "prerequisites"
need=()
command -v cloud-init >/dev/null || need+=(cloud-init)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v strace >/dev/null || need+=(strace)
command -v curl >/dev/null || need+=(curl)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    # Keep package scripts from starting the haproxy/nginx/prometheus/redis daemons.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >"$WORK/apt.log" 2>&1 ||
      { tail -20 "$WORK/apt.log"; echo "apt-get install failed" >&2; exit 1; }
    [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "missing tools: ${need[*]} (run as root on Debian to install them)" >&2
    exit 1
  fi
fi
# The system Python has PyYAML once cloud-init is installed.
PY=python3
/usr/bin/python3 -c 'import yaml' 2>/dev/null && PY=/usr/bin/python3
$PY -c 'import yaml' 2>/dev/null || { echo "python3 with PyYAML needed (python3-yaml)" >&2; exit 1; }

if [ ! -x "$BIN" ]; then
  if [ -z "${ROULETTE_BIN:-}" ] && command -v cargo >/dev/null; then
    echo "building $BIN"
    cargo build --release -q -p roulette || exit 1
  else
    echo "ROULETTE_BIN=$BIN is not an executable" >&2
    exit 1
  fi
fi
BIN=$(realpath "$BIN")
echo "binary: $BIN ($("$BIN" --version))"
for t in systemd-analyze cloud-init haproxy nginx promtool openssl strace curl shellcheck redis-server redis-cli; do
  printf '  %-16s %s\n' "$t" "$(command -v "$t" || echo missing)"
done

# Helper scripts ----------------------------------------------------------------------
cat >"$WORK/wsclient.py" <<'PYEOF'
"""Minimal std-only WebSocket/HTTP client for the checks (RFC 6455 client side)."""
import base64, json, os, socket, ssl, struct, sys, time

def connect(host, port, tls=False):
    s = socket.create_connection((host, port), timeout=5)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s

def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf.decode("latin1")

def upgrade(host, port, path="/ws", tls=False):
    """Returns (status code, socket)."""
    s = connect(host, port, tls)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = read_head(s)
    code = int(head.split(" ")[1]) if head.startswith("HTTP/1.1 ") else 0
    return code, s

def send(s, obj, opcode=1):
    data = json.dumps(obj).encode() if opcode == 1 else obj
    mask = os.urandom(4)
    n = len(data)
    hdr = bytes([0x80 | opcode])
    if n < 126:
        hdr += bytes([0x80 | n])
    elif n < 65536:
        hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            raise EOFError("connection closed")
        buf += c
    return buf

def recv(s):
    """Next frame: (opcode, payload). Text frames are decoded as JSON."""
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", recv_exact(s, 8))[0]
    payload = recv_exact(s, n)
    op = b0 & 0x0F
    return op, (json.loads(payload) if op == 1 else payload)

def expect(s, typ):
    while True:
        op, msg = recv(s)
        if op == 1 and msg.get("type") == typ:
            return msg
        if op == 8:
            raise AssertionError(f"closed while waiting for {typ}: {msg!r}")

def chat(host, port):
    """Two clients: hello, find, paired, message both ways, typing, leave, close."""
    c1, a = upgrade(host, port)
    c2, b = upgrade(host, port)
    assert c1 == 101 and c2 == 101, (c1, c2)
    expect(a, "hello"); expect(b, "hello")
    send(a, {"type": "find", "interests": ["deploy"]})
    send(b, {"type": "find", "interests": ["deploy"]})
    pa = expect(a, "paired"); pb = expect(b, "paired")
    assert pa["common"] == ["deploy"] and pb["common"] == ["deploy"], (pa, pb)
    send(a, {"type": "message", "text": "hi there"})
    assert expect(b, "message")["text"] == "hi there"
    send(b, {"type": "typing", "active": True})
    assert expect(a, "typing")["active"] is True
    send(b, {"type": "message", "text": "héllo ✓"})
    assert expect(a, "message")["text"] == "héllo ✓"
    send(a, {"type": "leave"})
    expect(b, "partner_left")
    for s in (a, b):
        send(s, struct.pack(">H", 1000), opcode=8)
        while recv(s)[0] != 8:
            pass
        s.close()
    print("chat ok: paired on common interest, messages and typing relayed, partner_left, close 1000")

def hold(host, port, seconds):
    """Open a WebSocket and never read or answer: keeps a drain going."""
    code, s = upgrade(host, port)
    assert code == 101, code
    print("held", flush=True)
    time.sleep(float(seconds))

def closed_1001(host, port):
    """Open a WebSocket, wait for the server's close frame and answer it; print the code."""
    code, s = upgrade(host, port)
    assert code == 101, code
    print("connected", flush=True)
    s.settimeout(60)
    while True:
        op, payload = recv(s)
        if op == 8:
            print("close", struct.unpack(">H", payload[:2])[0], flush=True)
            send(s, payload[:2], opcode=8)
            return

def http(host, port, path, tls=False):
    s = connect(host, port, tls)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    out = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
    return out.decode("utf-8", "replace")

if __name__ == "__main__":
    cmd, hp = sys.argv[1], sys.argv[2]
    host, port = hp.rsplit(":", 1)
    port = int(port)
    if cmd == "chat":
        chat(host, port)
    elif cmd == "hold":
        hold(host, port, sys.argv[3])
    elif cmd == "closed1001":
        closed_1001(host, port)
    elif cmd in ("upgrade", "upgrade-tls"):
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        codes = [upgrade(host, port, tls=cmd == "upgrade-tls")[0] for _ in range(n)]
        print(" ".join(map(str, codes)))
        sys.exit(0 if all(c == 101 for c in codes) else 1)
    elif cmd in ("get", "get-tls"):
        print(http(host, port, sys.argv[3], tls=cmd == "get-tls").split("\r\n")[0])
    else:
        sys.exit(f"unknown command {cmd}")
PYEOF
WS="python3 $WORK/wsclient.py"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME ARGS...: start the binary on loopback; sets NAME_PID, NAME_ADDR,
# NAME_METRICS, NAME_LOG. Extra environment via SERVER_ENV (array of KEY=VALUE).
start_server() {
  local name=$1; shift
  local log="$WORK/$name.log" addr='' maddr='' _
  env "${SERVER_ENV[@]}" RUST_LOG=info "$BIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 "$@" 2>"$log" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 200); do
    addr=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    maddr=$(sed -n 's/.*metrics listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] && [ -n "$maddr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  printf -v "${name}_PID" '%s' "$pid"
  printf -v "${name}_ADDR" '%s' "$addr"
  printf -v "${name}_METRICS" '%s' "$maddr"
  printf -v "${name}_LOG" '%s' "$log"
  [ -n "$addr" ] || { cat "$log" | indent; return 1; }
}
SERVER_ENV=()
# wait_exit PID SECONDS: wait for a background child of this shell; sets WAIT_STATUS to
# its exit status, or "timeout". (Not in $(...): a subshell cannot wait for our children.)
WAIT_STATUS=
wait_exit() {
  local pid=$1 secs=$2 _
  WAIT_STATUS=timeout
  for _ in $(seq $((secs * 20))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      WAIT_STATUS=$?
      return 0
    fi
    sleep 0.05
  done
}

# ------------------------------------------------------------------------------------
section "systemd unit: verify"
mkdir -p "$WORK/unit"
UNIT="$WORK/unit/roulette.service"
sed "s#^ExecStart=/usr/bin/roulette#ExecStart=$BIN#" "$DEPLOY/roulette.service" >"$UNIT"
grep -q "^ExecStart=$BIN\$" "$UNIT" || fail "could not point ExecStart at $BIN"
run_quiet "systemd-analyze verify --man=no roulette.service" systemd-analyze verify --man=no "$UNIT"
# The check must not be vacuous: a typo in a key has to produce output.
sed 's/^ProtectSystem=/ProtectSytem=/' "$UNIT" >"$WORK/unit/typo.service"
out=$(systemd-analyze verify --man=no "$WORK/unit/typo.service" 2>&1)
if [ -n "$out" ]; then pass "verify reports a misspelt key (control): $(printf '%s' "$out" | head -1)"; else
  fail "verify stayed silent on ProtectSytem= (control)"; fi
# Settings the service relies on (the .deb creates the user; install.sh rewrites ExecStart).
for kv in Type=notify NotifyAccess=main WatchdogSec=10s Restart=on-failure LimitNOFILE=1048576 \
  User=roulette Group=roulette EnvironmentFile=-/etc/roulette/roulette.env ExecStart=/usr/bin/roulette; do
  grep -qx "$kv" "$DEPLOY/roulette.service" || fail "unit lacks $kv"
done
grep -Eq '^SystemCallFilter=~.*@resources' "$DEPLOY/roulette.service" && fail "unit denies @resources (sched_setaffinity/setrlimit -> SIGSYS)"
grep -Eq '^ProcSubset=pid' "$DEPLOY/roulette.service" && fail "unit sets ProcSubset=pid (hides /proc/stat btime)"
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$DEPLOY/roulette.service")
grace=$("$BIN" --help | awk '/--grace-period/{f=1} f && /default:/{gsub(/[^0-9.]/,""); print; exit}')
if [ -n "$stop" ] && [ -n "$grace" ] && awk -v s="$stop" -v g="$grace" 'BEGIN{exit !(s > g)}'; then
  pass "TimeoutStopSec=${stop}s > default grace period ${grace}s"
else fail "TimeoutStopSec ($stop) must exceed the grace period ($grace)"; fi

section "systemd unit: security exposure"
out=$(systemd-analyze security --offline=yes --threshold=25 "$UNIT" 2>&1); rc=$?
printf '%s\n' "$out" | grep -E '^✗' | indent
score_line=$(printf '%s\n' "$out" | grep 'Overall exposure level')
echo "      $score_line"
score=$(printf '%s' "$score_line" | grep -oE '[0-9]+\.[0-9]+' | head -1)
if [ $rc -eq 0 ] && [ -n "$score" ] && awk -v s="$score" 'BEGIN{exit !(s <= 2.0)}'; then
  pass "systemd-analyze security --offline=yes --threshold=25: $score (<= 2.0)"
else fail "security exposure $score (rc $rc), want <= 2.0"; fi

# ------------------------------------------------------------------------------------
section "systemd unit: the binary's system calls vs SystemCallFilter/RestrictAddressFamilies"
# systemd is not PID 1 here, so run the real binary under strace through a realistic
# session (notify socket with watchdog, HTTP routes, metrics, a chat between two clients,
# a drain with a connected client) and compare every syscall it made with the set the
# unit allows: @system-service minus @privileged, as expanded by this systemd.
systemd-analyze syscall-filter >"$WORK/filters.txt" 2>&1
NOTIFY="$WORK/notify.sock"
python3 - "$NOTIFY" >"$WORK/notify.log" 2>&1 <<'PYEOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
try:
    while True:
        print(s.recv(4096).decode().replace("\n", " "), flush=True)
except socket.timeout:
    pass
PYEOF
PIDS+=("$!")
for _ in $(seq 100); do [ -S "$NOTIFY" ] && break; sleep 0.05; done
ST_LOG="$WORK/strace.log"
NOTIFY_SOCKET=$NOTIFY WATCHDOG_USEC=2000000 RUST_LOG=info strace -f -qq -o "$ST_LOG" \
  "$BIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --grace-period 5 2>"$WORK/st-server.log" &
ST_PID=$!
PIDS+=("$ST_PID")
for _ in $(seq 200); do grep -q 'roulette listening on' "$WORK/st-server.log" && break; sleep 0.05; done
ST_ADDR=$(sed -n 's/.*roulette listening on \([^ ]*\).*/\1/p' "$WORK/st-server.log" | head -1)
ST_METRICS=$(sed -n 's/.*metrics listening on \([^ ]*\).*/\1/p' "$WORK/st-server.log" | head -1)
SRV_PID=$(ps -o pid= --ppid "$ST_PID" | tr -d ' ' | head -1)
if [ -z "$ST_ADDR" ] || [ -z "$SRV_PID" ]; then
  cat "$WORK/st-server.log" | indent; fail "server did not start under strace"
else
  {
    $WS get "$ST_ADDR" /healthz; $WS get "$ST_ADDR" / ; $WS get "$ST_ADDR" /nope
    curl -s -o /dev/null -w 'metrics %{http_code}\n' "http://$ST_METRICS/metrics"
    $WS chat "$ST_ADDR"
  } 2>&1 | indent
  sleep 1.2 # a few watchdog pings
  $WS closed1001 "$ST_ADDR" >"$WORK/closed1001.log" 2>&1 &
  CL_PID=$!
  for _ in $(seq 100); do grep -q connected "$WORK/closed1001.log" && break; sleep 0.05; done
  kill -TERM "$SRV_PID"
  wait "$CL_PID"
  indent <"$WORK/closed1001.log"
  wait_exit "$ST_PID" 15; st=$WAIT_STATUS
  [ "$st" = 0 ] && pass "server under strace: drained (client got close 1001) and exited 0" ||
    { fail "server under strace exited with $st"; indent <"$WORK/st-server.log"; }
  grep -q 'close 1001' "$WORK/closed1001.log" || fail "client did not get close 1001 on SIGTERM"
  sleep 0.2
  echo "      notify datagrams: $(sort "$WORK/notify.log" | uniq -c | tr -s ' ' | paste -sd';')"
  grep -q READY=1 "$WORK/notify.log" && grep -q WATCHDOG=1 "$WORK/notify.log" && grep -q STOPPING=1 "$WORK/notify.log" ||
    fail "notify datagrams READY/WATCHDOG/STOPPING missing"
  run_ok "every syscall the server made is allowed by the unit's filter" python3 - "$WORK/filters.txt" "$ST_LOG" "$DEPLOY/roulette.service" <<'PYEOF'
import re, sys
filters_txt, strace_log, unit = sys.argv[1:4]
groups, cur = {}, None
for line in open(filters_txt):
    if line.startswith("@"):
        cur = groups.setdefault(line.strip(), [])
    elif cur is not None and line.strip() and not line.strip().startswith("#"):
        cur.append(line.strip())
def expand(name, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for m in groups.get(name, []):
        if m.startswith("@"):
            if m not in seen:
                seen.add(m)
                out |= expand(m, seen)
        else:
            out.add(m)
    return out
allow, deny, families = None, set(), set()
for line in open(unit):
    line = line.strip()
    if line.startswith("SystemCallFilter="):
        v = line.split("=", 1)[1]
        neg = v.startswith("~")
        names = set()
        for tok in v.lstrip("~").split():
            names |= expand(tok) if tok.startswith("@") else {tok}
        if neg:
            deny |= names
            if allow is not None:
                allow -= names
        else:
            allow = (allow or set()) | (names - deny)
    if line.startswith("RestrictAddressFamilies="):
        families |= set(line.split("=", 1)[1].split())
used, socks = {}, set()
for line in open(strace_log):
    m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
    if m:
        used[m.group(1)] = used.get(m.group(1), 0) + 1
    m = re.match(r"^\d+\s+socket(?:pair)?\((AF_[A-Z0-9]+)", line)
    if m:
        socks.add(m.group(1))
bad = sorted(s for s in used if s not in allow)
print(f"{len(used)} distinct syscalls, {sum(used.values())} calls; allowed set has {len(allow)} names")
for s in ("sched_setaffinity", "prlimit64", "setrlimit", "sendto", "accept4", "epoll_wait"):
    if s in used:
        print(f"  {s}: called {used[s]}x, {'allowed' if s in allow else 'DENIED'}")
print(f"socket families used: {' '.join(sorted(socks))}; unit allows: {' '.join(sorted(families))}")
if bad:
    print("NOT allowed by the unit:", " ".join(bad))
if socks - families:
    print("families not allowed:", " ".join(sorted(socks - families)))
sys.exit(1 if bad or socks - families or not used else 0)
PYEOF
fi

# ------------------------------------------------------------------------------------
section "env file"
run_ok "roulette.env documents every ROULETTE_* variable with its --help default" python3 - "$DEPLOY/roulette.env" "$BIN" <<'PYEOF'
import re, subprocess, sys
helptext = subprocess.run([sys.argv[2], "--help"], capture_output=True, text=True).stdout
flags = {}
for block in re.split(r"\n(?=\s+(?:-\w, )?--)", helptext):
    # `[env: NAME=VALUE]`, or `[env: NAME]` for flags whose value --help never shows (secrets).
    env = re.search(r"\[env: (ROULETTE_[A-Z_]+)[=\]]", block)
    if env:
        d = re.search(r"\[default: ([^\]]*)\]", block)
        flags[env.group(1)] = d.group(1) if d else None
doc = {}
for line in open(sys.argv[1]):
    m = re.match(r"^#?(ROULETTE_[A-Z_]+)=(.*)$", line.rstrip("\n"))
    if m:
        doc[m.group(1)] = m.group(2)
    elif re.match(r"^ROULETTE_", line):
        print("active (uncommented) setting in the example:", line.strip())
        sys.exit(1)
missing = sorted(set(flags) - set(doc))
unknown = sorted(set(doc) - set(flags))
wrong = [(k, doc[k], v) for k, v in flags.items() if k in doc and v is not None and doc[k] != v]
bools = {"ROULETTE_ENABLE_ECHO": "false"}
wrong = [w for w in wrong if not (w[0] in bools and w[1] == bools[w[0]])]
print(f"{len(flags)} variables in --help, {len(doc)} documented")
for k, got, want in wrong:
    print(f"  {k}: example {got!r}, --help default {want!r}")
if missing: print("  undocumented:", " ".join(missing))
if unknown: print("  not a flag:", " ".join(unknown))
empty = [k for k, v in doc.items() if v == ""]
if empty: print("  empty example value (an empty value is not 'unset'):", " ".join(empty))
sys.exit(1 if missing or unknown or wrong or empty else 0)
PYEOF
# Every example line active at once (except cluster mode, which needs Redis, and its files)
# must start.
mapfile -t SERVER_ENV < <(sed -n 's/^#\(ROULETTE_[A-Z_]*=.*\)$/\1/p; s/^#\(RUST_LOG=.*\)$/\1/p' "$DEPLOY/roulette.env" |
  grep -Ev '^ROULETTE_CLUSTER(_URL_FILE|_PASSWORD_FILE|_CA_FILE|_USER)?=')
if start_server ENVRUN; then
  pass "server starts with all ${#SERVER_ENV[@]} example settings active ($(grep -o '([^)]*)' "$ENVRUN_LOG" | tail -1))"
  kill -TERM "$ENVRUN_PID"; wait_exit "$ENVRUN_PID" 15
  [ "$WAIT_STATUS" = 0 ] || fail "server with example settings exited $WAIT_STATUS on SIGTERM"
else fail "server does not start with the example settings"; fi
SERVER_ENV=()

# ------------------------------------------------------------------------------------
section "sysctl file"
n=0; bad=0
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  if ! [[ $line =~ ^([a-z0-9_.-]+)\ =\ (.+)$ ]]; then echo "      bad line: $line"; bad=1; continue; fi
  key=${BASH_REMATCH[1]}; n=$((n + 1))
  if [ -e "/proc/sys/${key//.//}" ]; then
    printf '      %-34s %-24s (now: %s)\n' "$key" "${BASH_REMATCH[2]}" "$(tr '\t' ' ' <"/proc/sys/${key//.//}")"
  else echo "      unknown key: $key"; bad=1; fi
done <"$DEPLOY/sysctl.d/60-roulette.conf"
for k in fs.file-max fs.nr_open net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.ip_local_port_range \
  net.ipv4.tcp_mem net.ipv4.tcp_rmem net.ipv4.tcp_wmem; do
  grep -q "^$k = " "$DEPLOY/sysctl.d/60-roulette.conf" || { echo "      missing $k"; bad=1; }
done
nr_open=$(sed -n 's/^fs.nr_open = //p' "$DEPLOY/sysctl.d/60-roulette.conf")
[ "${nr_open:-0}" -ge 1048576 ] || { echo "      fs.nr_open below LimitNOFILE=1048576"; bad=1; }
[ $bad = 0 ] && pass "60-roulette.conf: $n keys, all known to this kernel (not applied)" || fail "60-roulette.conf"

# ------------------------------------------------------------------------------------
section "cloud-init"
run_ok "cloud-init schema --config-file deploy/cloud-init.yaml" cloud-init schema --config-file "$DEPLOY/cloud-init.yaml"
run_ok "cloud-init.yaml: the package's files are not written; release tokens, node settings (0600) and the install script are" \
  $PY - "$DEPLOY" <<'PYEOF'
import re, sys, yaml
d = sys.argv[1]
ci = yaml.safe_load(open(f"{d}/cloud-init.yaml"))
files = {f["path"]: f for f in ci["write_files"]}
bad = 0
# The .deb owns these now; a copy written by cloud-init would shadow or fight it.
for owned in ("/etc/systemd/system/roulette.service", "/etc/sysctl.d/60-roulette.conf", "/usr/local/bin/roulette"):
    if owned in files:
        print(f"writes {owned}, which the package installs"); bad = 1
rel = files["/etc/roulette/release.conf"]["content"].splitlines()
print("release.conf:", rel)
if rel != ["ROULETTE_RELEASE_URL=@RELEASE_URL@", "ROULETTE_RELEASE_SHA256=@RELEASE_SHA256@"]:
    print("release.conf must hold exactly the two tokens"); bad = 1
env = files["/etc/roulette/roulette.env"]
if env.get("permissions") != "0600" or env.get("owner") != "root:root":
    print("node settings: want root:root 0600 (the file may hold the Redis password)"); bad = 1
# Every setting shown is a real variable with the example value the documented file has.
documented = {m.group(1): m.group(0).lstrip("#") for m in
              (re.match(r"^#?((?:ROULETTE_[A-Z_]+|RUST_LOG))=.*$", l) for l in open(f"{d}/roulette.env")) if m}
shown = []
for line in env["content"].splitlines():
    m = re.match(r"^(#?)((?:ROULETTE_[A-Z_]+|RUST_LOG))=.*$", line)
    if not m:
        continue
    shown.append(m.group(2))
    if m.group(1) != "#":
        print("active setting in the unedited file:", line); bad = 1
    if documented.get(m.group(2)) != line.lstrip("#"):
        print(f"{line!r} differs from deploy/roulette.env ({documented.get(m.group(2))!r})"); bad = 1
print("node settings shown:", " ".join(shown))
if "ROULETTE_CLUSTER" not in shown:
    print("no #ROULETTE_CLUSTER= line for README's sed"); bad = 1
script = files["/usr/local/sbin/roulette-install-release"]
if script.get("permissions") != "0755":
    print("install script not 0755"); bad = 1
cmds = [" ".join(c) if isinstance(c, list) else c for c in ci["runcmd"]]
print("runcmd:", " ; ".join(cmds))
if cmds != ["/usr/local/sbin/roulette-install-release"]:
    print("runcmd should only run roulette-install-release (the package applies sysctl and starts the unit)"); bad = 1
text = open(f"{d}/cloud-init.yaml").read()
if "releases.example.invalid" in text:
    print("old placeholder URL left"); bad = 1
# replace() and sed change every occurrence: each token must stand only where its value goes.
for tok in ("@RELEASE_URL@", "@RELEASE_SHA256@"):
    if text.count(tok) != 1:
        print(f"{tok} appears {text.count(tok)} times, want once"); bad = 1
sys.exit(bad)
PYEOF
# The install script, run for real in a scratch root against file:// URLs, with apt-get
# replaced by a stub that records its arguments (release-check.sh runs it with the real
# apt-get and the real .deb).
FR="$WORK/ciroot"; mkdir -p "$FR/etc/roulette" "$FR/usr/bin" "$FR/stub"
ci_file() { $PY -c 'import sys,yaml; [sys.stdout.write(f["content"]) for f in yaml.safe_load(open(sys.argv[1]))["write_files"] if f["path"]==sys.argv[2]]' "$DEPLOY/cloud-init.yaml" "$1"; }
ci_file /usr/local/sbin/roulette-install-release | sed "s#/etc/roulette/#$FR/etc/roulette/#g; s#/usr/bin/roulette#$FR/usr/bin/roulette#g" >"$FR/install.sh"
cp "$BIN" "$FR/usr/bin/roulette"
printf '#!/bin/sh\necho "apt-get $*" >>%s/apt.log\n' "$FR" >"$FR/stub/apt-get"; chmod 0755 "$FR/stub/apt-get"
FAKE_DEB="$WORK/roulette_test.deb"; printf 'not really a deb\n' >"$FAKE_DEB"
FAKE_SHA=$(sha256sum "$FAKE_DEB" | cut -d' ' -f1)
ci_run() { # URL SHA -> runs the script; the exit status is the script's
  printf 'ROULETTE_RELEASE_URL=%s\nROULETTE_RELEASE_SHA256=%s\n' "$1" "$2" >"$FR/etc/roulette/release.conf"
  rm -f "$FR/apt.log"
  PATH="$FR/stub:$PATH" sh "$FR/install.sh" >"$WORK/ci-install.log" 2>&1
}
ci_ok=1
sh -n "$FR/install.sh" || ci_ok=0
ci_file /etc/roulette/release.conf >"$FR/etc/roulette/release.conf"
PATH="$FR/stub:$PATH" sh "$FR/install.sh" >"$WORK/ci-install.log" 2>&1 && ci_ok=0
grep -q 'set ROULETTE_RELEASE_URL' "$WORK/ci-install.log" || ci_ok=0
echo "      tokens left in: $(tail -1 "$WORK/ci-install.log")"
ci_run "file://$FAKE_DEB" "" && ci_ok=0
grep -q 'refusing to install without it' "$WORK/ci-install.log" || ci_ok=0
echo "      empty checksum: $(tail -1 "$WORK/ci-install.log" | cut -c1-110)..."
ci_run "file://$FAKE_DEB" "$(printf '%064d' 0)" && ci_ok=0
[ ! -e "$FR/apt.log" ] && grep -q 'SHA-256 mismatch' "$WORK/ci-install.log" || ci_ok=0
echo "      wrong checksum: $(tail -1 "$WORK/ci-install.log" | cut -c1-110)..."
if ci_run "file://$FAKE_DEB" "$FAKE_SHA"; then
  echo "      matching checksum: $(cat "$FR/apt.log")"
  grep -q -- '--force-confold' "$FR/apt.log" && grep -q "install .*/roulette.deb\$" "$FR/apt.log" || ci_ok=0
else indent <"$WORK/ci-install.log"; ci_ok=0; fi
[ $ci_ok = 1 ] && pass "roulette-install-release: refuses the tokens, an empty and a wrong SHA-256 (apt-get never called), installs a matching .deb with --force-confold" ||
  fail "roulette-install-release script"

# A cluster node's user-data, made the way README "Deploying a cluster" says: sed fills in
# the release tokens and turns the commented ROULETTE_CLUSTER line into the real setting.
NODE_CI="$WORK/node-user-data.yaml"
TEST_URL="redis://:$(printf '%064d' 0 | tr 0 a)@10.0.0.5:6379"
sed -e "s|^\( *\)#ROULETTE_CLUSTER=.*|\1ROULETTE_CLUSTER=$TEST_URL|" \
    -e "s|@RELEASE_URL@|https://releases.example.org/roulette/0.1.0/roulette_0.1.0-1_amd64.deb|" \
    -e "s|@RELEASE_SHA256@|$(sha256sum "$BIN" | cut -d' ' -f1)|" \
    "$DEPLOY/cloud-init.yaml" >"$NODE_CI"
run_ok "cluster node user-data (tokens and ROULETTE_CLUSTER set by the README's sed): schema valid, only that line active, 0600" \
  $PY - "$NODE_CI" "$DEPLOY/cloud-init.yaml" "$TEST_URL" <<'PYEOF'
import re, subprocess, sys, yaml
node_ci, orig, url = sys.argv[1:4]
r = subprocess.run(["cloud-init", "schema", "--config-file", node_ci], capture_output=True, text=True)
print(r.stdout.strip() or r.stderr.strip())
bad = r.returncode != 0
files = {f["path"]: f for f in yaml.safe_load(open(node_ci))["write_files"]}
src_files = {f["path"]: f for f in yaml.safe_load(open(orig))["write_files"]}
entry = files["/etc/roulette/roulette.env"]
rel = dict(l.split("=", 1) for l in files["/etc/roulette/release.conf"]["content"].splitlines())
print(f"release.conf: URL {rel['ROULETTE_RELEASE_URL']}, SHA256 {rel['ROULETTE_RELEASE_SHA256'][:12]}...")
if "@" in rel["ROULETTE_RELEASE_URL"] or not re.fullmatch(r"[0-9a-f]{64}", rel["ROULETTE_RELEASE_SHA256"]):
    bad = True
if "@RELEASE_" in open(node_ci).read():
    print("a token is left"); bad = True
got, src = entry["content"].splitlines(), src_files["/etc/roulette/roulette.env"]["content"].splitlines()
active = [l for l in got if l and not l.startswith("#")]
diff = [(a, b) for a, b in zip(src, got) if a != b]
print(f"active lines: {active}; lines changed: {len(diff)}; permissions {entry.get('permissions')}")
if active != [f"ROULETTE_CLUSTER={url}"] or len(diff) != 1 or len(got) != len(src):
    bad = True
if entry.get("permissions") != "0600":
    print("the env file may hold the Redis password: want permissions '0600'"); bad = True
sys.exit(1 if bad else 0)
PYEOF

# ------------------------------------------------------------------------------------
section "Redis (deploy/redis): setup.sh"
RDEPLOY=$DEPLOY/redis
run_quiet "bash -n deploy/redis/setup.sh" bash -n "$RDEPLOY/setup.sh"
if command -v shellcheck >/dev/null; then
  run_quiet "shellcheck deploy/redis/setup.sh" shellcheck -S warning "$RDEPLOY/setup.sh"
fi
# Install into a scratch root. 127.0.0.2 stands in for the VM's private address (it is
# loopback here, so the live check below can really listen on it).
RROOT="$WORK/redisroot"
setup_ok=1
out=$(DESTDIR=$RROOT REDIS_BIND_IP=127.0.0.2 bash "$RDEPLOY/setup.sh" 2>&1) || setup_ok=0
printf '%s\n' "$out" | indent
RLOCAL="$RROOT/etc/redis/roulette-local.conf"
for f in "0640 etc/redis/redis.conf" "0640 etc/redis/roulette-local.conf" "0644 etc/sysctl.d/60-roulette-redis.conf"; do
  got=$(stat -c '%04a' "$RROOT/${f#* }" 2>/dev/null)
  [ "$got" = "${f%% *}" ] || { echo "      WRONG mode $got: ${f#* }"; setup_ok=0; }
done
cmp -s "$RDEPLOY/redis.conf" "$RROOT/etc/redis/redis.conf" || { echo "      installed redis.conf differs from deploy/redis/redis.conf"; setup_ok=0; }
RPASS=$(sed -n 's/^requirepass //p' "$RLOCAL" 2>/dev/null)
[[ $RPASS =~ ^[0-9a-f]{64}$ ]] || { echo "      password is not 64 hex digits: '$RPASS'"; setup_ok=0; }
grep -qx 'bind 127.0.0.2 127.0.0.1 -::1' "$RLOCAL" || { echo "      roulette-local.conf lacks 'bind 127.0.0.2 127.0.0.1 -::1'"; setup_ok=0; }
# A re-run without arguments changes nothing and keeps the password and the address.
cp "$RLOCAL" "$WORK/local.before"
out=$(DESTDIR=$RROOT bash "$RDEPLOY/setup.sh" 2>&1) || setup_ok=0
[ "$(printf '%s\n' "$out" | grep -c '^redis setup: unchanged ')" = 3 ] && cmp -s "$WORK/local.before" "$RLOCAL" ||
  { printf '%s\n' "$out" | indent; echo "      re-run changed files"; setup_ok=0; }
url=$(DESTDIR=$RROOT bash "$RDEPLOY/setup.sh" --print-url 2>&1)
[ "$url" = "redis://:$RPASS@127.0.0.2:6379" ] || { echo "      --print-url: $url"; setup_ok=0; }
echo "      re-run: 3 files unchanged, password kept; --print-url: redis://:<64 hex>@127.0.0.2:6379"
# Address detection (the cloud-init path): exactly one private IPv4 address, else refuse.
DESTDIR="$WORK/det1" REDIS_HOST_ADDRS="192.0.2.7 10.1.2.3" bash "$RDEPLOY/setup.sh" >/dev/null 2>&1
grep -qx 'bind 10.1.2.3 127.0.0.1 -::1' "$WORK/det1/etc/redis/roulette-local.conf" 2>/dev/null || { echo "      did not pick 10.1.2.3 among 192.0.2.7 10.1.2.3"; setup_ok=0; }
for addrs in "192.0.2.7" "10.1.2.3 192.168.5.5" ; do
  if DESTDIR="$WORK/det2" REDIS_HOST_ADDRS="$addrs" bash "$RDEPLOY/setup.sh" >/dev/null 2>&1 || [ -e "$WORK/det2" ]; then
    echo "      guessed an address among '$addrs' (must refuse)"; setup_ok=0; fi
done
if DESTDIR="$WORK/det3" bash "$RDEPLOY/setup.sh" --bind 10.0.0.256 >/dev/null 2>&1 || [ -e "$WORK/det3" ]; then
  echo "      accepted --bind 10.0.0.256"; setup_ok=0; fi
echo "      address detection: picked 10.1.2.3 of '192.0.2.7 10.1.2.3'; refused '192.0.2.7' (none private), '10.1.2.3 192.168.5.5' (two), --bind 10.0.0.256"
# The sysctl file it writes: every key known to this kernel (nothing is applied).
while read -r key _ value; do
  [ -e "/proc/sys/${key//.//}" ] && echo "      sysctl $key = $value (now: $(cat "/proc/sys/${key//.//}"))" ||
    { echo "      unknown sysctl $key"; setup_ok=0; }
done < <(grep -E '^[a-z]' "$RROOT/etc/sysctl.d/60-roulette-redis.conf")
grep -q '^vm.overcommit_memory = 1$' "$RROOT/etc/sysctl.d/60-roulette-redis.conf" || { echo "      no vm.overcommit_memory = 1"; setup_ok=0; }
[ $setup_ok = 1 ] && pass "setup.sh: DESTDIR install (conf byte for byte, 0640 local conf with bind + 64-hex password, sysctl), idempotent re-run, address detection" ||
  fail "deploy/redis/setup.sh"

section "Redis (deploy/redis): redis-server on the installed redis.conf, on loopback"
# A runtime copy of the installed (= shipped) redis.conf: free port, pid file and dir in
# the scratch dir, the include pointing at the roulette-local.conf setup.sh wrote, the
# placeholder bind on 127.0.0.1. Everything else as shipped.
RPORT=$(free_port)
RDIR="$WORK/redis"; mkdir -p "$RDIR/data"
sed -e "s#^bind .*#bind 127.0.0.1#; s#^port .*#port $RPORT#; s#^pidfile .*#pidfile $RDIR/redis.pid#" \
  -e "s#^dir .*#dir $RDIR/data#; s#^include /etc/redis/roulette-local.conf\$#include $RLOCAL#" \
  "$RROOT/etc/redis/redis.conf" >"$RDIR/redis.conf"
changed=$(diff "$RDEPLOY/redis.conf" "$RDIR/redis.conf" | grep -c '^>')
echo "      runtime copy: $changed lines rewritten (bind, port, pidfile, dir, include)"
[ "$changed" = 5 ] || fail "redis.conf runtime copy: expected 5 rewritten lines, got $changed"
# Control: without its roulette-local.conf, Redis must refuse to start.
sed "s#^include .*#include $RDIR/missing.conf#" "$RDIR/redis.conf" >"$RDIR/nolocal.conf"
if timeout 5 redis-server "$RDIR/nolocal.conf" >"$RDIR/nolocal.log" 2>&1; then
  fail "redis-server started without roulette-local.conf"
else pass "redis-server refuses to start without roulette-local.conf (control): $(sed -n 's/.*\(Fatal error.*\)/\1/p' "$RDIR/nolocal.log" | head -1)"; fi
redis-server "$RDIR/redis.conf" >"$RDIR/redis.log" 2>&1 &
RSRV_PID=$!; PIDS+=("$RSRV_PID")
rcli() { REDISCLI_AUTH=$RPASS redis-cli --no-auth-warning -h 127.0.0.1 -p "$RPORT" --raw "$@" 2>&1; }
for _ in $(seq 100); do [ "$(rcli PING)" = PONG ] && break; kill -0 "$RSRV_PID" 2>/dev/null || break; sleep 0.05; done
if [ "$(rcli PING)" != PONG ]; then
  indent <"$RDIR/redis.log"; fail "redis-server did not start on the shipped redis.conf"
else
  echo "      $(rcli INFO server | grep -E '^redis_version' | tr -d '\r') on 127.0.0.1:$RPORT and 127.0.0.2:$RPORT"
  auth_ok=1
  r1=$(redis-cli -h 127.0.0.1 -p "$RPORT" PING 2>&1)
  r2=$(REDISCLI_AUTH=wrong redis-cli --no-auth-warning -h 127.0.0.1 -p "$RPORT" PING 2>&1 | head -1)
  r3=$(rcli PING)
  r4=$(REDISCLI_AUTH=$RPASS redis-cli --no-auth-warning -h 127.0.0.2 -p "$RPORT" PING 2>&1)
  # redis-cli 7.0 turns redis://:PASSWORD@ into AUTH "" PASSWORD (an empty user name, which
  # fails), so the nodes' URL form is checked as the one-argument AUTH it stands for (r3, r4,
  # r6), and the spelt-out form redis://default:PASSWORD@ through -u.
  r5=$(redis-cli --no-auth-warning -u "redis://default:$RPASS@127.0.0.1:$RPORT" PING 2>&1)
  r6=$(printf 'AUTH %s\nPING\n' "$RPASS" | redis-cli -h 127.0.0.2 -p "$RPORT" 2>&1 | tr '\n' ' ')
  echo "      no password -> $r1"
  echo "      wrong password -> $r2"
  echo "      AUTH <password> (what redis://:PASSWORD@HOST:PORT sends) -> $r3 on 127.0.0.1, $r4 on 127.0.0.2 (the 'private' address); inline: $r6"
  echo "      redis-cli -u redis://default:<password>@127.0.0.1:$RPORT -> $r5"
  r7=$(DESTDIR=$RROOT bash "$RDEPLOY/setup.sh" --cli -p "$RPORT" PING 2>&1)
  echo "      setup.sh --cli PING -> $r7"
  [[ $r1 == NOAUTH* && $r2 == *WRONGPASS* && $r3 == PONG && $r4 == PONG && $r5 == PONG && $r6 == "OK PONG " && $r7 == PONG ]] || auth_ok=0
  [ $auth_ok = 1 ] && pass "password required (requirepass from roulette-local.conf), AUTH works on both bound addresses" ||
    fail "Redis authentication"
  # Every setting that matters, as Redis reports it, against what the files say (the
  # last occurrence wins, roulette-local.conf last, as Redis reads them).
  cfg_ok=1
  to_bytes() { # Redis memory units: k=1000, kb=1024, m, mb, g, gb
    awk -v v="$1" 'BEGIN{ n=v+0; u=tolower(v); sub(/^[0-9]+/, "", u);
      f["" ]=1; f["k"]=1e3; f["kb"]=1024; f["m"]=1e6; f["mb"]=1048576; f["g"]=1e9; f["gb"]=1073741824;
      if (!(u in f)) { print "bad:" v; exit } printf "%d\n", n*f[u] }'
  }
  for key in save appendonly maxmemory-policy maxmemory tcp-keepalive timeout maxclients protected-mode tcp-backlog bind requirepass disable-thp; do
    want=$(cat "$RDEPLOY/redis.conf" "$RLOCAL" | sed -n "s/^$key //p" | tail -1)
    got=$(rcli CONFIG GET "$key" | sed -n 2p)
    case $key in
      save) [ "$want" = '""' ] && want= ;;
      maxmemory) want=$(to_bytes "$want") ;;
    esac
    shown=$got; [ "$key" = requirepass ] && shown="<64 hex, matches roulette-local.conf>"
    if [ "$got" = "$want" ]; then printf '      %-17s %s\n' "$key" "${shown:-\"\"}"; else
      printf '      %-17s %s (file says %s)\n' "$key" "$got" "$want"; cfg_ok=0; fi
  done
  got=$(rcli CONFIG GET client-output-buffer-limit | sed -n 2p)
  echo "      client-output-buffer-limit: $got"
  [[ $got == *"pubsub 33554432 8388608 60"* ]] || cfg_ok=0
  [ "$(rcli CONFIG GET save | sed -n 2p)" = "" ] && [ "$(rcli CONFIG GET appendonly | sed -n 2p)" = no ] &&
    [ "$(rcli CONFIG GET maxmemory-policy | sed -n 2p)" = noeviction ] || cfg_ok=0
  [ $cfg_ok = 1 ] && pass "CONFIG GET matches redis.conf + roulette-local.conf: save \"\", appendonly no, noeviction, maxmemory, keepalive, timeout 0, maxclients, bind" ||
    fail "Redis CONFIG GET differs from the files"
  # noeviction for real: shrink maxmemory at runtime, write heartbeat-like keys with a TTL
  # and queue entries until Redis refuses; nothing may have been evicted, and pops,
  # deletes and PUBLISH must still work.
  rcli CONFIG SET maxmemory 2mb >/dev/null
  for i in $(seq 1 8000); do
    printf 'SET hb:node%d %0300d EX 600\n' "$i" 0
    if [ $((i % 10)) = 0 ]; then printf 'ZADD q %d s%d\n' "$i" "$i"; fi
  done | rcli >"$RDIR/fill.out"
  n_ok=$(grep -cx OK "$RDIR/fill.out"); n_z=$(grep -cx 1 "$RDIR/fill.out"); n_oom=$(grep -c '^OOM ' "$RDIR/fill.out")
  n_keys=$(rcli DBSIZE); n_q=$(rcli ZCARD q)
  evicted=$(rcli INFO stats | sed -n 's/^evicted_keys:\([0-9]*\).*/\1/p')
  pub=$(rcli PUBLISH node.x frame); pop=$(rcli ZPOPMIN q | head -1); del=$(rcli DEL hb:node1)
  echo "      full (maxmemory 2mb at runtime): $n_ok SETs ok, $n_z ZADDs ok, $n_oom refused with OOM; keys $n_keys (= $n_ok SETs + queue), queue $n_q, evicted_keys $evicted"
  echo "      while full: PUBLISH -> $pub, ZPOPMIN -> $pop, DEL -> $del"
  if [ "$n_oom" -gt 0 ] && [ "$evicted" = 0 ] && [ "$n_keys" = $((n_ok + 1)) ] && [ "$n_q" = "$n_z" ] &&
     [ "$pub" = 0 ] && [ -n "$pop" ] && [ "$del" = 1 ]; then
    pass "noeviction: a full Redis refuses new writes (OOM) and evicts nothing; PUBLISH, pops and deletes still work"
  else fail "noeviction behaviour"; fi
  rcli FLUSHALL >/dev/null
  # Persistence off: a normal SHUTDOWN writes no dump.rdb and no AOF.
  rcli SHUTDOWN >/dev/null
  wait_exit "$RSRV_PID" 10
  left=$(find "$RDIR/data" -mindepth 1 | wc -l)
  echo "      SHUTDOWN: exit status $WAIT_STATUS; files left in dir: $left"
  [ "$WAIT_STATUS" = 0 ] && [ "$left" = 0 ] && pass "persistence off: no dump.rdb or appendonlydir after SHUTDOWN" ||
    { fail "Redis shutdown (status $WAIT_STATUS, $left files in dir)"; ls -la "$RDIR/data" | indent; }
fi

section "Redis (deploy/redis): cloud-init"
run_ok "cloud-init schema --config-file deploy/redis/cloud-init.yaml" cloud-init schema --config-file "$RDEPLOY/cloud-init.yaml"
run_ok "deploy/redis/cloud-init.yaml embeds redis.conf and setup.sh unchanged, installs and runs them" $PY - "$RDEPLOY" <<'PYEOF'
import sys, yaml
d = sys.argv[1]
ci = yaml.safe_load(open(f"{d}/cloud-init.yaml"))
files = {f["path"]: f for f in ci["write_files"]}
bad = 0
for dst, src, mode in [("/usr/local/lib/roulette-redis/redis.conf", "redis.conf", "0644"),
                       ("/usr/local/lib/roulette-redis/setup.sh", "setup.sh", "0755")]:
    f = files.get(dst, {})
    same = f.get("content") == open(f"{d}/{src}").read()
    print(f"{dst} == deploy/redis/{src}: {same}; permissions {f.get('permissions')}")
    bad |= not same or f.get("permissions") != mode
print("packages:", " ".join(ci.get("packages", [])))
bad |= "redis-server" not in ci.get("packages", [])
cmds = [" ".join(c) if isinstance(c, list) else c for c in ci["runcmd"]]
print("runcmd:", " ; ".join(cmds))
bad |= not any(c.startswith("/usr/local/lib/roulette-redis/setup.sh") for c in cmds)
sys.exit(bad)
PYEOF

# ------------------------------------------------------------------------------------
section "load balancers: config checks"
LB="$WORK/lb"; mkdir -p "$LB/nginx/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$LB/key.pem" -out "$LB/cert.pem" >/dev/null 2>&1 && cat "$LB/cert.pem" "$LB/key.pem" >"$LB/site.pem" ||
  fail "openssl: throw-away certificate"
sed "s#/etc/haproxy/certs/roulette.pem#$LB/site.pem#g" "$DEPLOY/haproxy.cfg" >"$LB/haproxy.cfg"
out=$(haproxy -c -f "$LB/haproxy.cfg" 2>&1); rc=$?
printf '%s\n' "$out" | indent
if [ $rc -eq 0 ] && ! printf '%s' "$out" | grep -qE 'WARNING|ALERT'; then pass "haproxy -c -f haproxy.cfg"; else fail "haproxy -c (rc $rc)"; fi
for want in 'balance leastconn' 'timeout tunnel 1h' 'timeout client-fin' 'crt /etc/haproxy/certs/roulette.pem' 'uri /healthz'; do
  grep -q "$want" "$DEPLOY/haproxy.cfg" || fail "haproxy.cfg lacks '$want'"
done
sed -e "s#/etc/nginx/certs/roulette.crt#$LB/cert.pem#; s#/etc/nginx/certs/roulette.key#$LB/key.pem#" \
  -e "s#/var/log/nginx/#$LB/nginx/logs/#; s#/run/nginx.pid#$LB/nginx/nginx.pid#" "$DEPLOY/nginx.conf" >"$LB/nginx/nginx.conf"
out=$(nginx -t -p "$LB/nginx" -c "$LB/nginx/nginx.conf" 2>&1); rc=$?
printf '%s\n' "$out" | indent
if [ $rc -eq 0 ] && ! printf '%s' "$out" | grep -qE '\[(warn|emerg|alert|crit)\]'; then pass "nginx -t"; else fail "nginx -t (rc $rc)"; fi

section "load balancers: live on loopback in front of two nodes"
# Runtime copies of the shipped configs: loopback ports, small limits (this machine caps
# fds at its hard limit), the two nodes A and B as backends, logs to files, and for
# HAProxy a 1 s check interval instead of 2 s (the drained node below ends its drain after
# ~5 s, when the server gives up waiting for a close reply, so detection must be faster).
P_HTTPS=$(free_port); P_HTTP=$(free_port); P_STATS=$(free_port); N_HTTPS=$(free_port); N_HTTP=$(free_port)
# The nodes trust the load balancers on loopback, as deployed nodes trust theirs: HAProxy
# names each client in a PROXY v2 header, nginx's own connections (no header) count as its.
if start_server NODEA --shards 1 --trusted-proxy 127.0.0.1/32 &&
  start_server NODEB --shards 1 --trusted-proxy 127.0.0.1/32; then
  export LB P_HTTPS P_HTTP P_STATS N_HTTPS N_HTTP NODEA_ADDR NODEB_ADDR
  $PY - "$DEPLOY/haproxy.cfg" "$LB/haproxy-live.cfg" <<'PYEOF'
import os, re, sys
E = os.environ
s = open(sys.argv[1]).read()
for pat, rep in [
    (r"log /dev/log local0 info", "log stdout format raw local0 info"),
    (r"\n\s*(user|group) haproxy", ""), (r"\n\s*daemon\b", ""),
    (r"maxconn 400000", "maxconn 2000"), (r"maxconn 200000", "maxconn 1000"), (r"maxconn 100000", "maxconn 500"),
    (r"check inter 2s", "check inter 1s"),
    (r"bind :443 ([^\n]*)/etc/haproxy/certs/roulette.pem", rf"bind 127.0.0.1:{E['P_HTTPS']} \g<1>{E['LB']}/site.pem"),
    (r"\n\s*bind :::443[^\n]*", ""), (r"bind :80\b", f"bind 127.0.0.1:{E['P_HTTP']}"), (r"\n\s*bind :::80[^\n]*", ""),
    (r"server node1 \S+", f"server node1 {E['NODEA_ADDR']}"), (r"server node2 \S+", f"server node2 {E['NODEB_ADDR']}"),
    (r"\n\s*server node3[^\n]*", ""), (r"bind 127.0.0.1:8404", f"bind 127.0.0.1:{E['P_STATS']}")]:
    s, n = re.subn(pat, rep, s)
    assert n, pat
open(sys.argv[2], "w").write(s)
PYEOF
  $PY - "$DEPLOY/nginx.conf" "$LB/nginx/nginx-live.conf" <<'PYEOF'
import os, re, sys
E = os.environ
s = open(sys.argv[1]).read()
for pat, rep in [
    (r"worker_processes auto;", "worker_processes 1;\ndaemon off;"), (r"worker_rlimit_nofile \d+;", "worker_rlimit_nofile 4096;"),
    (r"worker_connections \d+;", "worker_connections 1024;"),
    (r"/run/nginx.pid", f"{E['LB']}/nginx/nginx.pid"), (r"/var/log/nginx/", f"{E['LB']}/nginx/logs/"),
    (r"listen 80;", f"listen 127.0.0.1:{E['N_HTTP']};"), (r"listen 443 ssl;", f"listen 127.0.0.1:{E['N_HTTPS']} ssl;"),
    (r"\n\s*listen \[::\][^\n]*", ""),
    (r"/etc/nginx/certs/roulette.crt", f"{E['LB']}/cert.pem"), (r"/etc/nginx/certs/roulette.key", f"{E['LB']}/key.pem"),
    (r"server 10.0.0.11:8080", f"server {E['NODEA_ADDR']}"), (r"server 10.0.0.12:8080", f"server {E['NODEB_ADDR']}"),
    (r"\n\s*server 10.0.0.13:8080[^\n]*", "")]:
    s, n = re.subn(pat, rep, s)
    assert n, pat
open(sys.argv[2], "w").write(s)
PYEOF
  haproxy -db -f "$LB/haproxy-live.cfg" >"$LB/haproxy.log" 2>&1 &
  HA_PID=$!; PIDS+=("$HA_PID")
  nginx -p "$LB/nginx" -c "$LB/nginx/nginx-live.conf" >"$LB/nginx.log" 2>&1 &
  NG_PID=$!; PIDS+=("$NG_PID")
  for _ in $(seq 100); do
    curl -skf -o /dev/null "https://127.0.0.1:$P_HTTPS/healthz" && curl -skf -o /dev/null "https://127.0.0.1:$N_HTTPS/" && break
    sleep 0.1
  done
  ha_state() { # node -> UP/DOWN/... from the stats CSV (field 18 = status)
    curl -s "http://127.0.0.1:$P_STATS/stats;csv" | awk -F, -v n="$1" '$1=="roulette_nodes" && $2==n {print $18}'
  }
  lb_ok=1
  r1=$($WS get-tls "127.0.0.1:$P_HTTPS" /healthz 2>&1); r2=$($WS get "127.0.0.1:$P_HTTP" /ws 2>&1)
  r3=$($WS upgrade-tls "127.0.0.1:$P_HTTPS" 4 2>&1); r4=$($WS upgrade-tls "127.0.0.1:$N_HTTPS" 4 2>&1)
  echo "      haproxy: https /healthz -> $r1; http /ws -> $r2; 4 wss upgrades -> $r3; node1 $(ha_state node1), node2 $(ha_state node2)"
  echo "      nginx:   4 wss upgrades -> $r4"
  [[ $r1 == *"200 OK"* && $r2 == *" 301 "* && $r3 == "101 101 101 101" && $r4 == "101 101 101 101" ]] || lb_ok=0
  # Drain node A, with a client that never answers the close frame so that A stays in the
  # drain (up to 5 s) instead of exiting at once.
  $WS hold "$NODEA_ADDR" 30 >"$LB/hold.log" 2>&1 &
  HOLD_PID=$!; PIDS+=("$HOLD_PID")
  for _ in $(seq 100); do grep -q held "$LB/hold.log" && break; sleep 0.05; done
  ha_lines=$(wc -l <"$LB/haproxy.log")
  kill -TERM "$NODEA_PID"
  t0=$(date +%s.%N)
  # Before HAProxy's check notices, and with nginx (no active checks at all), a new
  # upgrade may still be sent to A: A's 503 must be retried on B (retry-on 503 /
  # proxy_next_upstream http_503), so every client still gets 101.
  sleep 0.1
  r7=$($WS upgrade-tls "127.0.0.1:$P_HTTPS" 6 2>&1)
  rA=$($WS get "$NODEA_ADDR" /healthz 2>&1); rAw=$($WS upgrade "$NODEA_ADDR" 1 2>&1)
  r6=$($WS upgrade-tls "127.0.0.1:$N_HTTPS" 6 2>&1)
  state=
  for _ in $(seq 50); do state=$(ha_state node1); [[ $state == DOWN* ]] && break; sleep 0.1; done
  t1=$(date +%s.%N)
  r5=$($WS upgrade-tls "127.0.0.1:$P_HTTPS" 6 2>&1)
  kill -0 "$NODEA_PID" 2>/dev/null && alive="still draining" || alive="already exited"
  echo "      node A draining: direct /healthz -> $rA; direct upgrade -> $rAw"
  ha_retried=$(tail -n +"$((ha_lines + 1))" "$LB/haproxy.log" | grep '"GET /ws ' | grep -c ' 101 .* [0-9]*/[0-9]*/[0-9]*/[0-9]*/+\{0,1\}[1-9] ')
  ng_retried=$(grep -c 'ustatus=503, 101' "$LB/nginx/logs/access.log")
  echo "      haproxy right after SIGTERM: 6 wss upgrades -> $r7 ($ha_retried sent to A first, retried on B)"
  echo "      nginx while A drains: 6 wss upgrades -> $r6 ($ng_retried answered 503 by A, then 101 by B)"
  echo "      haproxy marked node1 $state $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s after SIGTERM: $(grep -o 'node1 is DOWN, reason: [^,]*, code: [0-9]*' "$LB/haproxy.log" | head -1)"
  echo "      haproxy after that: 6 wss upgrades -> $r5 (node A $alive)"
  [[ $rA == *" 503 "* && $rAw == 503 && $r6 == "101 101 101 101 101 101" && $state == DOWN* &&
     $r7 == "101 101 101 101 101 101" && $ng_retried -ge 1 &&
     $r5 == "101 101 101 101 101 101" ]] || lb_ok=0
  grep -q 'node1 is DOWN, reason: Layer7 wrong status, code: 503' "$LB/haproxy.log" || lb_ok=0
  wait_exit "$NODEA_PID" 15
  echo "      node A exit status: $WAIT_STATUS (drain over: the held client was dropped after the server's 5 s close wait)"
  [ "$WAIT_STATUS" = 0 ] || lb_ok=0
  if [ $lb_ok = 1 ]; then pass "haproxy and nginx proxy wss:// to the nodes and route around a draining node (503)"; else
    fail "live load-balancer check"; tail -5 "$LB/haproxy.log" | indent; tail -5 "$LB/nginx/logs/error.log" 2>/dev/null | indent; fi
  kill -TERM "$NODEB_PID" "$HA_PID" "$HOLD_PID" 2>/dev/null; kill -QUIT "$NG_PID" 2>/dev/null
  wait_exit "$NODEB_PID" 15; wait_exit "$HA_PID" 5; wait_exit "$NG_PID" 5; wait_exit "$HOLD_PID" 5
else
  fail "could not start two nodes for the live LB check"
fi

# ------------------------------------------------------------------------------------
section "Prometheus"
run_ok "promtool check config prometheus.yml" promtool check config "$DEPLOY/prometheus.yml"
run_ok "promtool check rules prometheus-rules.yml" promtool check rules "$DEPLOY/prometheus-rules.yml"
run_ok "promtool test rules prometheus-rules.test.yml" promtool test rules "$DEPLOY/prometheus-rules.test.yml"

# ------------------------------------------------------------------------------------
section "Grafana dashboard"
# Metric names are checked against the union of two live scrapes: a single node, and a
# cluster node (--cluster) on a throw-away loopback Redis, which adds roulette_cluster_*.
: >"$WORK/scrape-single.txt"; : >"$WORK/scrape-cluster.txt"
if start_server SCRAPE; then
  curl -sf "http://$SCRAPE_METRICS/metrics" >"$WORK/scrape-single.txt" || fail "scrape /metrics (single node)"
  kill -TERM "$SCRAPE_PID"; wait_exit "$SCRAPE_PID" 15
else fail "start server for the scrape"; fi
if grep -q '^roulette_cluster_' "$WORK/scrape-single.txt"; then
  fail "a single node (no --cluster) exports roulette_cluster_* metrics"
fi
echo "      single node: $(grep -vc '^#' "$WORK/scrape-single.txt") samples, $(grep -c '^# TYPE' "$WORK/scrape-single.txt") families, no roulette_cluster_*"
# Plain redis-server: loopback, free port, no password, persistence off, its dir in $WORK.
CRPORT=$(free_port)
CRDIR="$WORK/cluster-redis"; mkdir -p "$CRDIR"
redis-server --bind 127.0.0.1 --port "$CRPORT" --save '' --appendonly no --dir "$CRDIR" \
  --daemonize no --logfile '' >"$CRDIR/redis.log" 2>&1 &
CRSRV_PID=$!; PIDS+=("$CRSRV_PID")
for _ in $(seq 100); do
  [ "$(redis-cli -h 127.0.0.1 -p "$CRPORT" PING 2>/dev/null)" = PONG ] && break
  kill -0 "$CRSRV_PID" 2>/dev/null || break; sleep 0.05
done
if [ "$(redis-cli -h 127.0.0.1 -p "$CRPORT" PING 2>/dev/null)" != PONG ]; then
  indent <"$CRDIR/redis.log"; fail "redis-server for the cluster node did not start"
elif start_server CLUSTER --cluster "redis://127.0.0.1:$CRPORT" --node-name deploy-check; then
  for _ in $(seq 200); do
    grep -q 'cluster: connected to Redis' "$CLUSTER_LOG" && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || break; sleep 0.05
  done
  # The link is up once the log says so; the gauge follows at once.
  up=
  for _ in $(seq 50); do
    curl -sf "http://$CLUSTER_METRICS/metrics" >"$WORK/scrape-cluster.txt" || break
    up=$(sed -n 's/^roulette_cluster_redis_up \([0-9]*\)$/\1/p' "$WORK/scrape-cluster.txt")
    [ "$up" = 1 ] && break; sleep 0.1
  done
  echo "      cluster node: $(grep -o 'cluster: connected to Redis.*' "$CLUSTER_LOG" | head -1)"
  echo "      cluster node: $(grep -vc '^#' "$WORK/scrape-cluster.txt") samples, $(grep -c '^# TYPE' "$WORK/scrape-cluster.txt") families ($(grep -c '^# TYPE roulette_cluster_' "$WORK/scrape-cluster.txt") roulette_cluster_*); $(grep -E '^roulette_cluster_(redis_up|nodes) ' "$WORK/scrape-cluster.txt" | paste -sd';' | sed 's/;/; /g')"
  if [ "$up" = 1 ] && grep -q 'path="cross_node"' "$WORK/scrape-cluster.txt"; then
    pass "cluster node (--cluster redis://127.0.0.1:$CRPORT) reports roulette_cluster_redis_up 1 and path=\"cross_node\" relays"
  else
    indent <"$CLUSTER_LOG"; fail "cluster node: roulette_cluster_redis_up '${up}', want 1 (and path=\"cross_node\")"
  fi
  kill -TERM "$CLUSTER_PID"; wait_exit "$CLUSTER_PID" 15
  [ "$WAIT_STATUS" = 0 ] || fail "cluster node exited $WAIT_STATUS on SIGTERM"
else fail "start a cluster node for the scrape"; fi
redis-cli -h 127.0.0.1 -p "$CRPORT" SHUTDOWN NOSAVE >/dev/null 2>&1; wait_exit "$CRSRV_PID" 10
cat "$WORK/scrape-single.txt" "$WORK/scrape-cluster.txt" >"$WORK/scrape.txt"
run_ok "dashboard structure, datasources and metric names; rule metric names (single + cluster node scrapes)" \
  $PY - "$DEPLOY" "$WORK/scrape.txt" "$WORK/exprs.yml" "$WORK/scrape-single.txt" <<'PYEOF'
import json, re, sys, yaml
deploy, scrape, exprs_out, scrape_single = sys.argv[1:5]
def scraped(path):
    names = set()
    for line in open(path):
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif line.strip() and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names
live, single = scraped(scrape), scraped(scrape_single)
future = set()
for h in ("roulette_match_wait_seconds", "roulette_loop_iteration_seconds"):
    future |= {h + "_bucket", h + "_sum", h + "_count"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "and", "or", "unless", "inf", "nan", "le"}

def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                       # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)                      # grafana variables
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tail = e[m.end():].lstrip()
        if tail.startswith("("):
            continue                                        # function call
        if re.match(r"\d", m.group(0)) or m.group(0) in KEYWORDS:
            continue
        if e[max(0, m.start() - 1)] in "0123456789.":
            continue                                        # unit suffix of a number (5m)
        names.add(m.group(0))
    return names

errors, exprs = [], []
d = json.load(open(f"{deploy}/grafana-dashboard.json"))
sv = d.get("schemaVersion", 0)
if not 36 <= sv <= 41:
    errors.append(f"schemaVersion {sv}")
tvars = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
ds_var = next((n for n, v in tvars.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"), None)
if not ds_var and "__inputs" not in d:
    errors.append("no Prometheus datasource variable (or __inputs DS_PROMETHEUS)")
if "instance" not in tvars:
    errors.append("no 'instance' template variable")
ds_refs = {"${%s}" % ds_var, "$" + str(ds_var), "${DS_PROMETHEUS}"}
def ds_ok(ds):
    return isinstance(ds, dict) and ds.get("type") == "prometheus" and ds.get("uid") in ds_refs
ids, n_panels, n_targets, rects = set(), 0, 0, []
for p in d["panels"]:
    if p.get("id") in ids:
        errors.append(f"duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    g = p["gridPos"]
    for (x, y, w, h, t) in rects:
        if g["x"] < x + w and x < g["x"] + g["w"] and g["y"] < y + h and y < g["y"] + g["h"]:
            errors.append(f"panel {p['title']!r} overlaps {t!r}")
    rects.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
    if p["type"] == "row":
        continue
    n_panels += 1
    if not ds_ok(p.get("datasource")):
        errors.append(f"panel {p['title']!r}: datasource {p.get('datasource')!r}")
    if not p.get("targets"):
        errors.append(f"panel {p['title']!r}: no targets")
    for t in p.get("targets", []):
        n_targets += 1
        if not ds_ok(t.get("datasource", p.get("datasource"))):
            errors.append(f"panel {p['title']!r} target {t.get('refId')}: datasource")
        if not t.get("expr"):
            errors.append(f"panel {p['title']!r} target {t.get('refId')}: no expr")
            continue
        exprs.append((f"panel {p['title']!r}", t["expr"]))
for a in d.get("annotations", {}).get("list", []):
    if a.get("expr"):
        exprs.append((f"annotation {a['name']!r}", a["expr"]))
wanted = ["online clients", "websocket connections", "pairings", "waiting", "time to match",
          "relayed", "bytes in", "close", "rate-limited", "slow-consumer", "loop iteration p99",
          "rss per connection", "file descriptors", "cpu",
          # the Cluster row
          "redis link up", "live nodes", "cluster-wide online clients", "redis round-trip p50 / p99",
          "cross-node records", "chats ended by failures", "redis errors"]
if not any(p["type"] == "row" and p["title"] == "Cluster" for p in d["panels"]):
    errors.append("no 'Cluster' row")
titles = " | ".join(p["title"].lower() for p in d["panels"])
for w in wanted:
    if w not in titles:
        errors.append(f"no panel about {w!r}")
used = set()
for where, e in exprs:
    for n in metric_names(e):
        used.add(n)
        if n not in live and n not in future:
            errors.append(f"{where}: unknown metric {n!r} in {e}")
# Alert/recording rules: same metric check (plus Prometheus' own `up`).
rules = yaml.safe_load(open(f"{deploy}/prometheus-rules.yml"))
recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
for g in rules["groups"]:
    for r in g["rules"]:
        for n in metric_names(r["expr"]):
            if n not in live and n not in recorded and n != "up":
                errors.append(f"rule {r.get('alert') or r.get('record')}: unknown metric {n!r}")
# Hand every dashboard expression to promtool as a recording rule (PromQL syntax check).
def promql(e):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", ".*", e)
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:expr_{i}", "expr": promql(e)} for i, (_, e) in enumerate(exprs)]}]},
    open(exprs_out, "w"))
print(f"schemaVersion {sv}; variables: {', '.join(tvars)}; {n_panels} panels, {n_targets} targets, "
      f"{len(exprs)} expressions, {len(used)} metric names "
      f"({len(used & future)} from the upcoming histograms: {', '.join(sorted(used & future)) or '-'})")
rule_names = {n for g in rules["groups"] for r in g["rules"] for n in metric_names(r["expr"])}
cluster_only = sorted(n for n in (used | rule_names) & live if n not in single)
print(f"{len(cluster_only)} names in dashboard/rules only a cluster node exports: {', '.join(cluster_only) or '-'}")
missing_live = sorted(n for n in used if n not in live)
if missing_live:
    print("not in this build's scrape yet (allowed):", ", ".join(missing_live))
for e in errors:
    print("ERROR:", e)
sys.exit(1 if errors else 0)
PYEOF
run_ok "dashboard PromQL parses (promtool check rules on the extracted expressions)" promtool check rules "$WORK/exprs.yml"

# ------------------------------------------------------------------------------------
section "install.sh"
run_quiet "bash -n deploy/install.sh" bash -n "$DEPLOY/install.sh"
if command -v shellcheck >/dev/null; then
  run_quiet "shellcheck deploy/install.sh scripts/deploy-check.sh" shellcheck -S warning "$DEPLOY/install.sh" "$ROOT/scripts/deploy-check.sh"
fi
DEST="$WORK/destdir"
out=$(DESTDIR=$DEST bash "$DEPLOY/install.sh" "$BIN" 2>&1); rc=$?
printf '%s\n' "$out" | tail -2 | indent
inst_ok=1
[ $rc = 0 ] || inst_ok=0
# The unit as installed: install.sh's marker line, then deploy/roulette.service pointed at
# /usr/local/bin (the .deb's copy runs /usr/bin/roulette).
{ sed -n 's/^MARKER=.\(.*\).$/\1/p' "$DEPLOY/install.sh"
  sed 's#^ExecStart=/usr/bin/roulette$#ExecStart=/usr/local/bin/roulette#' "$DEPLOY/roulette.service"; } >"$WORK/unit-expected"
grep -qx 'ExecStart=/usr/local/bin/roulette' "$WORK/unit-expected" && [ "$(head -c 1 "$WORK/unit-expected")" = '#' ] ||
  { echo "      could not build the expected unit"; inst_ok=0; }
for f in "0755 usr/local/bin/roulette:$BIN" "0644 etc/systemd/system/roulette.service:$WORK/unit-expected" \
  "0600 etc/roulette/roulette.env:$DEPLOY/roulette.env" "0644 etc/sysctl.d/60-roulette.conf:$DEPLOY/sysctl.d/60-roulette.conf"; do
  mode=${f%% *}; rest=${f#* }; path=${rest%%:*}; src=${rest#*:}
  got=$(stat -c '%04a' "$DEST/$path" 2>/dev/null)
  if [ "$got" = "$mode" ] && cmp -s "$src" "$DEST/$path"; then echo "      $mode $path"; else
    echo "      WRONG: $path (mode $got)"; inst_ok=0; fi
done
[ -z "$(find "$DEST" -name '*.new.*')" ] || { echo "      leftover temp files"; inst_ok=0; }
echo "ROULETTE_MAX_CONNECTIONS=1234" >>"$DEST/etc/roulette/roulette.env"
DESTDIR=$DEST bash "$DEPLOY/install.sh" "$BIN" >"$WORK/install2.log" 2>&1 || inst_ok=0
grep -q '^ROULETTE_MAX_CONNECTIONS=1234$' "$DEST/etc/roulette/roulette.env" && grep -q keeping "$WORK/install2.log" ||
  { echo "      re-run overwrote the existing env file"; inst_ok=0; }
[ ! -e "$DEST/usr/local/bin/roulette.previous" ] || { echo "      re-installing the same binary made a roulette.previous"; inst_ok=0; }
DRY="$WORK/dry"
DESTDIR=$DRY bash "$DEPLOY/install.sh" --dry-run "$BIN" >"$WORK/dry.log" 2>&1 || inst_ok=0
[ ! -e "$DRY" ] || { echo "      --dry-run created files"; inst_ok=0; }
echo "      dry run printed $(grep -c '^+ ' "$WORK/dry.log") commands and changed nothing"
bash "$DEPLOY/install.sh" "$WORK/nonexistent" >/dev/null 2>&1 && { echo "      accepted a missing binary"; inst_ok=0; }
[ $inst_ok = 1 ] && pass "install.sh: DESTDIR install (files, modes, contents), env file kept on re-run, --dry-run changes nothing" ||
  fail "install.sh DESTDIR run"

# A release tarball laid out as scripts/release.sh makes it, holding a second binary (the
# same program with bytes appended, so it still runs and differs), served over file://.
inst_ok=1
REL="$WORK/rel/roulette-9.9.9"
mkdir -p "$REL/bin" "$REL/deploy/sysctl.d"
cp "$BIN" "$REL/bin/roulette"; printf 'next release' >>"$REL/bin/roulette"
cp "$DEPLOY/install.sh" "$DEPLOY/roulette.service" "$DEPLOY/roulette.env" "$REL/deploy/"
cp "$DEPLOY/sysctl.d/60-roulette.conf" "$REL/deploy/sysctl.d/"
TARBALL="$WORK/roulette-9.9.9-x86_64-linux-gnu.tar.gz"
tar -czf "$TARBALL" -C "$WORK/rel" roulette-9.9.9
TAR_SHA=$(sha256sum "$TARBALL" | cut -d' ' -f1)
snapshot() { (cd "$DEST" && find . -type f -exec sha256sum {} + | sort) >"$1"; }
snapshot "$WORK/before"
if DESTDIR=$DEST bash "$DEPLOY/install.sh" --url "file://$TARBALL" --sha256 "$(printf '%064d' 0)" >"$WORK/mismatch.log" 2>&1; then
  echo "      accepted a wrong --sha256"; inst_ok=0; fi
if DESTDIR=$DEST bash "$DEPLOY/install.sh" --url "file://$TARBALL" >"$WORK/nosum.log" 2>&1; then
  echo "      accepted --url without --sha256"; inst_ok=0; fi
snapshot "$WORK/after"
cmp -s "$WORK/before" "$WORK/after" || { echo "      a refused install changed files"; inst_ok=0; }
echo "      wrong SHA-256: $(grep -o 'SHA-256 mismatch.*' "$WORK/mismatch.log" | cut -c1-60)...; no checksum: $(grep -o 'refusing[^:]*' "$WORK/nosum.log")"
out=$(DESTDIR=$DEST bash "$DEPLOY/install.sh" --url "file://$TARBALL" --sha256 "$TAR_SHA" 2>&1) || { printf '%s\n' "$out" | indent; inst_ok=0; }
cmp -s "$REL/bin/roulette" "$DEST/usr/local/bin/roulette" && cmp -s "$BIN" "$DEST/usr/local/bin/roulette.previous" ||
  { echo "      tarball install: wrong roulette / roulette.previous"; inst_ok=0; }
grep -q '^ROULETTE_MAX_CONNECTIONS=1234$' "$DEST/etc/roulette/roulette.env" || { echo "      tarball install replaced the env file"; inst_ok=0; }
echo "      tarball (file://, SHA-256 ok): roulette is the new binary, roulette.previous the one it replaced"
out=$(DESTDIR=$DEST bash "$DEPLOY/install.sh" --rollback 2>&1) || { printf '%s\n' "$out" | indent; inst_ok=0; }
cmp -s "$BIN" "$DEST/usr/local/bin/roulette" && cmp -s "$REL/bin/roulette" "$DEST/usr/local/bin/roulette.previous" ||
  { echo "      --rollback did not swap roulette and roulette.previous"; inst_ok=0; }
echo "      --rollback: the previous binary is back, the newer one is roulette.previous; $(printf '%s\n' "$out" | grep -c '^+ ') steps"
rm -f "$DEST/usr/local/bin/roulette.previous"
DESTDIR=$DEST bash "$DEPLOY/install.sh" --rollback >"$WORK/rb.log" 2>&1 && { echo "      --rollback without roulette.previous succeeded"; inst_ok=0; }
printf '!<arch>\ndebian-binary\n' >"$WORK/fake.deb"
DESTDIR=$DEST bash "$DEPLOY/install.sh" "$WORK/fake.deb" >"$WORK/deb.log" 2>&1 && { echo "      accepted a .deb with DESTDIR"; inst_ok=0; }
grep -q 'DESTDIR is for the binary/tarball route' "$WORK/deb.log" || { indent <"$WORK/deb.log"; inst_ok=0; }
[ $inst_ok = 1 ] && pass "install.sh --url/--sha256/--rollback under DESTDIR: wrong or missing checksum refused (nothing changed), tarball installed keeping roulette.previous, rollback swaps it back; a .deb is refused with DESTDIR" ||
  fail "install.sh release artifacts and rollback"

# ------------------------------------------------------------------------------------
section "summary"
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "deploy-check: all checks passed"
else
  printf 'deploy-check: %d check(s) FAILED:\n' "${#FAILED[@]}"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
