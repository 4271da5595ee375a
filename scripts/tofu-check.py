#!/usr/bin/env python3
"""Offline checks of deploy/tofu/ (run by scripts/tofu-check.sh with python-hcl2 on the path).

  parse      every .tf and terraform.tfvars.example file parses (python-hcl2)
  skips      every inline `#checkov:skip=CKV_...:reason` has a reason and a row in the skips table
             of docs/deploy/README.md, and every row there has its inline skip
  timeouts   the server's idle ping (--idle-ping, 30 s unless a deploy file sets
             ROULETTE_IDLE_PING) is below every load balancer timeout the configurations set or
             inherit (AWS ALB idle_timeout, AWS NLB's fixed 350 s, Google backend timeout_sec,
             Azure public IP / LB rule idle_timeout_in_minutes x 60 and Application Gateway
             request_timeout, Hetzner timeout_idle); where the timeout is configurable it must
             also be at least idle ping + pong timeout, so that the server, not the load
             balancer, ends a connection that went silent
  templates  the strings the configurations replace() in files of deploy/ are there

Usage: tofu-check.py REPO_ROOT. Exit status 1 if any check fails.
"""
import glob
import os
import re
import sys

import hcl2  # python-hcl2 (deploy/tofu/requirements-hcl2.txt)

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
TOFU = os.path.join(ROOT, "deploy", "tofu")
CLOUDS = ["aws", "gcp", "azure", "hetzner"]
failures = []
warnings = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL  {msg}")


def ok(msg):
    print(f"PASS  {msg}")


def unq(v):
    """python-hcl2 keeps the quotes of string literals and block labels."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


# --- parse -------------------------------------------------------------------------------------
parsed = {}
files = sorted(glob.glob(os.path.join(TOFU, "**", "*.tf"), recursive=True))
files += sorted(glob.glob(os.path.join(TOFU, "**", "terraform.tfvars.example"), recursive=True))
bad = 0
for path in files:
    try:
        with open(path) as f:
            parsed[path] = hcl2.load(f)
    except Exception as e:  # the parser raises lark errors of several kinds
        bad += 1
        fail(f"parse {os.path.relpath(path, ROOT)}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
for cloud in CLOUDS:
    for need in ("versions.tf", "variables.tf", "outputs.tf", "terraform.tfvars.example"):
        if not os.path.exists(os.path.join(TOFU, cloud, need)):
            fail(f"deploy/tofu/{cloud}/{need} is missing")
if not bad:
    ok(f"python-hcl2 parsed {len(files)} files ({sum(f.endswith('.tf') for f in files)} .tf, "
       f"{sum(not f.endswith('.tf') for f in files)} tfvars examples)")


def resources(cloud, rtype):
    """(name, body) of every `resource "rtype" "name"` in a cloud folder."""
    out = []
    for path, doc in parsed.items():
        if os.path.dirname(path) != os.path.join(TOFU, cloud):
            continue
        for block in doc.get("resource", []):
            for t, named in block.items():
                if unq(t) != rtype:
                    continue
                for name, body in named.items():
                    out.append((unq(name), body))
    return out


def folder_locals(cloud):
    loc = {}
    for path, doc in parsed.items():
        if os.path.dirname(path) == os.path.join(TOFU, cloud):
            for block in doc.get("locals", []):
                loc.update({k: v for k, v in block.items() if not k.startswith("__")})
    return loc


def number(v, loc, what):
    """A literal number, or an expression of locals and numbers such as ${local.a * 60}."""
    v = unq(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        m = re.fullmatch(r"\$\{(.*)\}", v.strip())
        expr = m.group(1) if m else v

        def sub(mm):
            val = loc.get(mm.group(1))
            if not isinstance(val, (int, float)):
                raise ValueError(f"local.{mm.group(1)} is not a number literal")
            return repr(val)

        expr = re.sub(r"local\.([A-Za-z_][A-Za-z0-9_]*)", sub, expr)
        if re.fullmatch(r"[0-9.+\-*/() ]+", expr):
            return eval(expr, {"__builtins__": {}}, {})  # digits and operators only
    raise ValueError(f"{what}: cannot evaluate {v!r}")


# --- skips -------------------------------------------------------------------------------------
skip_re = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z0-9]+_\d+)(?::(.*))?$")
block_re = re.compile(r'^\s*(resource|data)\s+"([^"]+)"\s+"([^"]+)"')
inline = {}
for path in sorted(glob.glob(os.path.join(TOFU, "**", "*.tf"), recursive=True)):
    cloud = os.path.relpath(os.path.dirname(path), TOFU)
    current = None
    for n, line in enumerate(open(path), 1):
        b = block_re.match(line)
        if b:
            current = f"{b.group(2)}.{b.group(3)}"
        s = skip_re.search(line.strip())
        if s:
            where = f"{os.path.relpath(path, ROOT)}:{n}"
            reason = (s.group(2) or "").strip()
            if not reason:
                fail(f"{where}: skip of {s.group(1)} has no reason")
            if current is None:
                fail(f"{where}: skip of {s.group(1)} outside a resource")
            inline[(s.group(1), cloud, current)] = where
readme = os.path.join(ROOT, "docs", "deploy", "README.md")
table = {}
if os.path.exists(readme):
    row_re = re.compile(r"^\|\s*`?(CKV2?_[A-Z0-9]+_\d+)`?\s*\|\s*`?([a-z0-9/_-]+)`?\s*\|\s*`?([A-Za-z0-9_.\-]+)`?\s*\|\s*(.*?)\s*\|\s*$")
    for line in open(readme):
        r = row_re.match(line)
        if r:
            if not r.group(4):
                fail(f"docs/deploy/README.md: row {r.group(1)} {r.group(3)} has no reason")
            table[(r.group(1), r.group(2), r.group(3))] = line.strip()
else:
    fail("docs/deploy/README.md is missing")
for k in sorted(set(inline) - set(table)):
    fail(f"{inline[k]}: skip {k[0]} on {k[1]}/{k[2]} is not in the skips table of docs/deploy/README.md")
for k in sorted(set(table) - set(inline)):
    fail(f"docs/deploy/README.md lists skip {k[0]} on {k[1]}/{k[2]}, which no .tf file has")
if set(inline) == set(table):
    ok(f"{len(inline)} checkov skips, each with a reason, all in docs/deploy/README.md and no other rows there")

# --- timeouts ----------------------------------------------------------------------------------
with open(os.path.join(ROOT, "src", "config.rs")) as f:
    config_rs = f.read()


def server_default(env):
    m = re.search(r'env\s*=\s*"' + env + r'"\s*,\s*default_value\s*=\s*"([0-9.]+)"', config_rs)
    if not m:
        fail(f"src/config.rs: no default_value for {env}")
        return None
    return float(m.group(1))


def deploy_override(env):
    """The largest value a deploy file sets (uncommented) for env, or None."""
    found = []
    pat = re.compile(r'^\s*"?' + env + r'"?\s*[=:]\s*"?([0-9.]+)')
    for path in glob.glob(os.path.join(ROOT, "deploy", "**", "*"), recursive=True):
        if not os.path.isfile(path) or path.endswith((".json", ".png")):
            continue
        for line in open(path, errors="replace"):
            m = pat.match(line)
            if m:
                found.append((float(m.group(1)), os.path.relpath(path, ROOT)))
    return max(found) if found else None


idle_ping = server_default("ROULETTE_IDLE_PING")
pong = server_default("ROULETTE_PONG_TIMEOUT")
src_ping = "server default"
for env, name in (("ROULETTE_IDLE_PING", "ping"), ("ROULETTE_PONG_TIMEOUT", "pong")):
    o = deploy_override(env)
    if o:
        if name == "ping":
            idle_ping, src_ping = o[0], f"set in {o[1]}"
        else:
            pong = o[0]
if idle_ping is not None and pong is not None:
    print(f"      idle ping {idle_ping:g} s ({src_ping}), pong timeout {pong:g} s")
    for cloud in CLOUDS:
        loc = folder_locals(cloud)
        found = []  # (seconds, what, configurable)
        try:
            for name, b in resources(cloud, "aws_lb"):
                if unq(b.get("load_balancer_type", "application")) == "network":
                    found.append((350, f"aws_lb.{name} (NLB, fixed TCP idle timeout)", False))
                else:
                    found.append((number(b.get("idle_timeout", 60), loc, name), f"aws_lb.{name}.idle_timeout", True))
            for name, b in resources(cloud, "google_compute_backend_service"):
                found.append((number(b.get("timeout_sec", 30), loc, name),
                              f"google_compute_backend_service.{name}.timeout_sec (WebSocket lifetime)", True))
            gw_ips = set()
            for name, b in resources(cloud, "azurerm_application_gateway"):
                for fe in b.get("frontend_ip_configuration", []):
                    m = re.search(r"azurerm_public_ip\.([A-Za-z0-9_-]+)\.", str(fe.get("public_ip_address_id", "")))
                    if m:
                        gw_ips.add(m.group(1))
                for s in b.get("backend_http_settings", []):
                    found.append((number(s.get("request_timeout", 30), loc, name),
                                  f"azurerm_application_gateway.{name} backend request_timeout", True))
            for name, b in resources(cloud, "azurerm_public_ip"):
                if name in gw_ips:
                    found.append((60 * number(b.get("idle_timeout_in_minutes", 4), loc, name),
                                  f"azurerm_public_ip.{name}.idle_timeout_in_minutes x 60 (gateway frontend)", True))
            for name, b in resources(cloud, "azurerm_lb_rule"):
                found.append((60 * number(b.get("idle_timeout_in_minutes", 4), loc, name),
                              f"azurerm_lb_rule.{name}.idle_timeout_in_minutes x 60", True))
            for name, b in resources(cloud, "hcloud_load_balancer_service"):
                for h in b.get("http", []) or [{}]:
                    if "timeout_idle" not in h:
                        fail(f"hetzner: hcloud_load_balancer_service.{name} does not set http.timeout_idle (its default is not documented)")
                        continue
                    found.append((number(h["timeout_idle"], loc, name),
                                  f"hcloud_load_balancer_service.{name}.http.timeout_idle", True))
        except ValueError as e:
            fail(f"{cloud}: {e}")
            continue
        if not found:
            fail(f"{cloud}: no load balancer timeout found to compare with the idle ping")
        for secs, what, configurable in found:
            need = idle_ping + pong if configurable else idle_ping
            rel = ">=" if configurable else ">"
            good = secs >= need if configurable else secs > idle_ping
            if secs <= idle_ping or not good:
                fail(f"{cloud}: {what} = {secs:g} s; it must be {rel} {need:g} s "
                     f"(idle ping{' + pong timeout' if configurable else ''})")
            else:
                ok(f"{cloud}: {what} = {secs:g} s {rel} {need:g} s")

# --- templates ---------------------------------------------------------------------------------
cloud_init = open(os.path.join(ROOT, "deploy", "cloud-init.yaml")).read()
missing = [t for t in ("@RELEASE_URL@", "@RELEASE_SHA256@") if t not in cloud_init]
if missing:
    msg = (f"deploy/cloud-init.yaml has no {' / '.join(missing)} yet: replace() in aws/azure/hetzner "
           f"changes nothing, and the nodes would install the file's own release settings")
    fail(msg)
else:
    ok("deploy/cloud-init.yaml has the @RELEASE_URL@ and @RELEASE_SHA256@ tokens the configurations replace")
redis_loc = folder_locals("hetzner").get("redis_runcmd")
if isinstance(redis_loc, list):
    redis_loc = redis_loc[0]
redis_ci = open(os.path.join(ROOT, "deploy", "redis", "cloud-init.yaml")).read()
frm = unq(redis_loc.get("from", "")) if isinstance(redis_loc, dict) else ""
frm = frm.encode().decode("unicode_escape") if frm else ""
if frm and frm in redis_ci:
    ok("hetzner: the runcmd line redis.tf rewrites (--bind) is in deploy/redis/cloud-init.yaml")
else:
    fail(f"hetzner: redis.tf replaces {frm!r}, which deploy/redis/cloud-init.yaml does not contain")

print(f"tofu-check.py: {len(failures)} failed, {len(warnings)} warnings")
sys.exit(1 if failures else 0)
