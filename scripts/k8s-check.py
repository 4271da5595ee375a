#!/usr/bin/env python3
"""Checks of deploy/kubernetes that need more than a schema (run by scripts/k8s-check.sh in
the venv target/venv-deploy, which has PyYAML and jsonschema).

  provenance  the committed CRD schemas are the upstream bytes crds/README.md names
  crds        every custom resource validates against its CRD's openAPIV3Schema, strictly
              (unknown fields are errors, as `kubectl apply` reports them)
  consistency the drain, probe, CPU and wiring rules the manifests' comments mark "checked"
  skips       checkov skip annotations <-> the table in docs/deploy/kubernetes.md
  env         every ROULETTE_* name the Deployment sets is a flag of the binary (--help text
              on stdin), or one of the flags still landing (listed below)
  smoke-env   prints the Deployment's environment as NAME=VALUE lines for a local start

Every subcommand takes the manifest directory; it prints one line per finding and exits 1
if anything is wrong.
"""
import argparse
import hashlib
import ipaddress
import json
import os
import re
import sys

import jsonschema
import yaml

try:
    Loader = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml: same results, slower on the big CRDs
    Loader = yaml.SafeLoader

# Groups whose schemas kubernetes-validate ships; everything else is a custom resource.
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
                  "autoscaling", "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io",
                  "discovery.k8s.io", "node.k8s.io", "certificates.k8s.io", "admissionregistration.k8s.io",
                  "apiextensions.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io"}
NAMESPACE = "roulette"
MIN_MARGIN_S = 5          # terminationGracePeriodSeconds - (preStop + grace period)
MIN_WS_TIMEOUT_S = 3600   # proxy timeouts and the GKE backend service timeout
# Flags that land in the server in parallel with these manifests (clap ignores unknown
# ROULETTE_* variables, so setting them early is harmless). Once the binary lists one in
# --help it is checked like any other; drop it from here then.
LANDING_FLAGS: set = set()

errors = []


def err(msg):
    errors.append(msg)
    print(f"FAIL  {msg}")


def ok(msg):
    print(f"ok    {msg}")


def finish():
    sys.exit(1 if errors else 0)


def manifest_files(root):
    """The manifests: the top directory, optional/ and examples/ (never crds/)."""
    out = []
    for sub in ("", "optional", "examples"):
        d = os.path.join(root, sub)
        if os.path.isdir(d):
            out += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    return out


def load_docs(root):
    """[(file, document)] for every non-empty document of every manifest."""
    docs = []
    for f in manifest_files(root):
        with open(f) as fh:
            for d in yaml.load_all(fh, Loader=Loader):
                if d:
                    docs.append((os.path.relpath(f, root), d))
    return docs


def gvk(doc):
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    return group, version, doc.get("kind", "")


def find(docs, kind, name=None, group=None):
    hits = [d for _, d in docs if d.get("kind") == kind
            and (name is None or d.get("metadata", {}).get("name") == name)
            and (group is None or gvk(d)[0] == group)]
    return hits


# --------------------------------------------------------------------------- provenance
def cmd_provenance(root):
    crds = os.path.join(root, "crds")
    readme = open(os.path.join(crds, "README.md")).read()
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", readme, re.M)
    listed = {f for f, _ in rows}
    present = {f for f in os.listdir(crds) if f.endswith((".yaml", ".json"))}
    for f in sorted(present - listed):
        err(f"crds/{f} is not in crds/README.md")
    for f in sorted(listed - present):
        err(f"crds/README.md lists {f}, which is missing")
    for f, want in rows:
        p = os.path.join(crds, f)
        if not os.path.exists(p):
            continue
        data = open(p, "rb").read()
        if f.endswith(".yaml"):
            lines = data.split(b"\n")
            head = lines[:4]
            if not all(h.startswith(b"# ") for h in head) or not head[0].startswith(b"# Source: https://"):
                err(f"crds/{f}: no 4-line '# Source: / # Commit:' header")
                continue
            data = b"\n".join(lines[4:])
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            err(f"crds/{f}: SHA-256 {got}, crds/README.md says {want} (edited?)")
        else:
            ok(f"crds/{f}: upstream bytes (SHA-256 {want[:12]}...)")
    finish()


# --------------------------------------------------------------------------------- crds
def strict(s):
    """A copy of an OpenAPI schema in which objects with listed properties reject unknown
    ones, unless the schema says to keep unknown fields (what `kubectl apply` with the
    default strict field validation reports as an error)."""
    if isinstance(s, list):
        return [strict(x) for x in s]
    if not isinstance(s, dict):
        return s
    s = dict(s)
    if ("properties" in s and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")):
        s["additionalProperties"] = False
    for k in ("properties", "patternProperties"):
        if k in s:
            s[k] = {n: strict(v) for n, v in s[k].items()}
    for k in ("items", "additionalProperties", "not"):
        if isinstance(s.get(k), dict):
            s[k] = strict(s[k])
    for k in ("allOf", "anyOf", "oneOf"):
        if k in s:
            s[k] = strict(s[k])
    return s


def crd_schemas(root):
    """{(group, version, kind lower-case): (schema, source file)}."""
    crds = os.path.join(root, "crds")
    out = {}
    for f in sorted(os.listdir(crds)):
        p = os.path.join(crds, f)
        if f.endswith(".yaml"):
            crd = yaml.load(open(p), Loader=Loader)
            spec = crd["spec"]
            for v in spec["versions"]:
                out[(spec["group"], v["name"], spec["names"]["kind"].lower())] = (
                    v["schema"]["openAPIV3Schema"], f)
        elif f.endswith(".json"):
            m = re.fullmatch(r"(.+)_([a-z0-9]+)_(v[0-9a-z]+)\.json", f)
            if not m:
                err(f"crds/{f}: name is not GROUP_KIND_VERSION.json")
                continue
            out[(m.group(1), m.group(3), m.group(2))] = (json.load(open(p)), f)
    return out


DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def cmd_crds(root):
    schemas = crd_schemas(root)
    n = 0
    for f, d in load_docs(root):
        group, version, kind = gvk(d)
        if group in BUILTIN_GROUPS:
            continue
        name = d.get("metadata", {}).get("name", "?")
        where = f"{f}: {kind} {name} ({group}/{version})"
        hit = schemas.get((group, version, kind.lower()))
        if not hit:
            err(f"{where}: no schema in crds/ for this kind and version")
            continue
        schema, src = hit
        validator = jsonschema.Draft7Validator(strict(schema))
        problems = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
        meta = d.get("metadata", {})
        if not DNS1123.match(meta.get("name", "")) or len(meta.get("name", "")) > 253:
            problems.append(jsonschema.ValidationError("metadata.name is not a DNS-1123 subdomain"))
        if meta.get("namespace") != NAMESPACE:
            problems.append(jsonschema.ValidationError(f"metadata.namespace is not {NAMESPACE}"))
        for p in problems:
            path = ".".join(str(x) for x in p.absolute_path) or "(document)"
            err(f"{where}: {path}: {p.message[:300]}")
        if not problems:
            n += 1
            ok(f"{where} valid against crds/{src}")
    if n == 0 and not errors:
        err("no custom resource found to validate")
    print(f"{n} custom resources valid (x-kubernetes-validations CEL rules are not evaluated)")
    finish()


# -------------------------------------------------------------------------- consistency
def seconds(v, what):
    try:
        return float(str(v))
    except ValueError:
        err(f"{what}: {v!r} is not a number of seconds")
        return 0.0


def cpu_cores(q):
    """A CPU quantity as cores, or None if it is not a whole number of cores."""
    s = str(q)
    if s.endswith("m"):
        m = int(s[:-1])
        return m // 1000 if m % 1000 == 0 else None
    try:
        f = float(s)
    except ValueError:
        return None
    return int(f) if f == int(f) else None


def port_of(addr, what):
    m = re.fullmatch(r".*:(\d+)", str(addr))
    if not m:
        err(f"{what}: {addr!r} has no port")
        return None
    return int(m.group(1))


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def cmd_consistency(root):
    docs = load_docs(root)
    deps = find(docs, "Deployment", "roulette")
    if len(deps) != 1:
        err(f"want exactly one Deployment 'roulette', found {len(deps)}")
        finish()
    dep = deps[0]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    pod_labels = pod["metadata"]["labels"]
    c = next((c for c in spec["containers"] if c["name"] == "roulette"), None)
    if c is None:
        err("no container 'roulette'")
        finish()
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    # Namespaced objects all live in the one namespace.
    for f, d in docs:
        if d.get("kind") != "Namespace" and d.get("metadata", {}).get("namespace") != NAMESPACE:
            err(f"{f}: {d.get('kind')} {d.get('metadata', {}).get('name')} is not in namespace {NAMESPACE}")

    # Listeners <-> container ports <-> scrape annotation.
    http_port = port_of(env.get("ROULETTE_LISTEN"), "ROULETTE_LISTEN")
    metrics_port = port_of(env.get("ROULETTE_METRICS_LISTEN"), "ROULETTE_METRICS_LISTEN")
    if ports.get("http") != http_port:
        err(f"container port 'http' {ports.get('http')} != ROULETTE_LISTEN port {http_port}")
    if ports.get("metrics") != metrics_port:
        err(f"container port 'metrics' {ports.get('metrics')} != ROULETTE_METRICS_LISTEN port {metrics_port}")
    if not env.get("ROULETTE_METRICS_LISTEN", "").startswith("0.0.0.0:"):
        err("ROULETTE_METRICS_LISTEN must listen on the pod network (0.0.0.0:PORT) to be scraped")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/port") != str(metrics_port):
        err(f"prometheus.io/port {ann.get('prometheus.io/port')!r} != metrics port {metrics_port}")
    ok(f"listeners: http {http_port}, metrics {metrics_port} = container ports = scrape annotation")

    # Drain: terminationGracePeriodSeconds >= preStop sleep + grace period + margin.
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    pre = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" not in pre:
        err("preStop is not the kubelet's sleep action (the image has no shell or sleep binary)")
    pre_s = pre.get("sleep", {}).get("seconds", 0)
    grace = seconds(env.get("ROULETTE_GRACE_PERIOD"), "ROULETTE_GRACE_PERIOD")
    if "ROULETTE_GRACE_PERIOD" not in env:
        err("ROULETTE_GRACE_PERIOD is not set explicitly")
    margin = tgps - pre_s - grace
    if margin < MIN_MARGIN_S:
        err(f"terminationGracePeriodSeconds {tgps} < preStop {pre_s} + grace period {grace:g} + {MIN_MARGIN_S} s margin")
    else:
        ok(f"terminationGracePeriodSeconds {tgps} = preStop {pre_s} + grace period {grace:g} + margin {margin:g} (>= {MIN_MARGIN_S})")
    # The sum written in the comment is the sum in the file.
    text = open(os.path.join(root, "20-deployment.yaml")).read()
    m = re.search(r"#\s+(\d+) s \(preStop sleep\) \+ (\d+) s \(ROULETTE_GRACE_PERIOD\) \+ (\d+) s \([^)]*\) = (\d+) s", text)
    if not m:
        err("20-deployment.yaml: the comment with the sum 'N s (preStop sleep) + N s (ROULETTE_GRACE_PERIOD) + N s (...) = N s' is missing")
    else:
        a, b, mm, total = map(int, m.groups())
        if (a, b, total) != (pre_s, int(grace), tgps) or a + b + mm != total:
            err(f"20-deployment.yaml: the comment says {a} + {b} + {mm} = {total}, the file has preStop {pre_s}, grace {grace:g}, total {tgps}")
        else:
            ok(f"the comment's sum {a} + {b} + {mm} = {total} matches the fields")

    # Probes: GET /healthz on the container's http port, all three.
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(kind)
        if not p:
            err(f"no {kind}")
            continue
        hg = p.get("httpGet")
        if not hg:
            err(f"{kind} is not an HTTP GET")
            continue
        port = ports.get(hg["port"]) if isinstance(hg["port"], str) else hg["port"]
        if hg.get("path") != "/healthz" or port != http_port:
            err(f"{kind}: GET {hg.get('path')} on port {hg['port']} ({port}), want /healthz on {http_port}")
    live = c.get("livenessProbe", {})
    live_window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    if live_window < 30:
        err(f"livenessProbe restarts after {live_window} s of failures: not lenient (want >= 30 s)")
    ok(f"startup/readiness/liveness probes: GET /healthz on {http_port}; liveness window {live_window} s")

    # Shards = CPU limit in whole cores; no pinning on shared cores; memory limit = request.
    res = c.get("resources", {})
    limit = cpu_cores(res.get("limits", {}).get("cpu"))
    shards = env.get("ROULETTE_SHARDS")
    if limit is None:
        err(f"CPU limit {res.get('limits', {}).get('cpu')!r} is not a whole number of cores")
    elif str(limit) != str(shards):
        err(f"ROULETTE_SHARDS {shards!r} != CPU limit {limit} cores")
    else:
        ok(f"ROULETTE_SHARDS {shards} = CPU limit {limit} cores")
    if env.get("ROULETTE_PIN_CORES") != "false":
        err(f"ROULETTE_PIN_CORES {env.get('ROULETTE_PIN_CORES')!r}, want \"false\" (the pod does not own whole cores)")
    if res.get("requests", {}).get("memory") != res.get("limits", {}).get("memory"):
        err("memory request != memory limit")
    m = re.search(r"AT MOST ([\d,]+) WEBSOCKETS", text)
    if not m or m.group(1).replace(",", "") != env.get("ROULETTE_MAX_CONNECTIONS"):
        err(f"the sizing comment's connections per pod ({m.group(1) if m else 'missing'}) != ROULETTE_MAX_CONNECTIONS {env.get('ROULETTE_MAX_CONNECTIONS')}")
    else:
        ok(f"sizing comment and ROULETTE_MAX_CONNECTIONS agree: {env.get('ROULETTE_MAX_CONNECTIONS')} per pod")

    # Trusted proxies parse as CIDRs; the node name comes from the pod name.
    for cidr in (env.get("ROULETTE_TRUSTED_PROXY") or "").split(","):
        try:
            ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as e:
            err(f"ROULETTE_TRUSTED_PROXY: {cidr!r}: {e}")
    if env.get("ROULETTE_PROXY_HEADER") != "x-forwarded-for":
        err("ROULETTE_PROXY_HEADER is not x-forwarded-for (the ingress controllers send X-Forwarded-For)")
    nn = next((e for e in c.get("env", []) if e["name"] == "ROULETTE_NODE_NAME"), {})
    if nn.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        err("ROULETTE_NODE_NAME does not come from metadata.name")
    if env.get("ROULETTE_CLUSTER") is not None:
        err("ROULETTE_CLUSTER is set in the environment: the URL holds the password; use ROULETTE_CLUSTER_URL_FILE")
    url_file = env.get("ROULETTE_CLUSTER_URL_FILE")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    mdir = os.path.dirname(url_file or "")
    vol = next((v for v in spec.get("volumes", []) if v["name"] == mounts.get(mdir)), None)
    srcs = (vol or {}).get("projected", {}).get("sources", [])
    if not url_file or not any("secret" in s and any(i["path"] == os.path.basename(url_file)
                                                     for i in s["secret"].get("items", [])) for s in srcs):
        err(f"ROULETTE_CLUSTER_URL_FILE {url_file!r} is not a file of a mounted Secret")
    else:
        ok(f"cluster URL from a Secret file ({url_file}); node name from the pod name")

    # Security context that the comments promise (checkov checks these too).
    sc = c.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("runAsNonRoot")
            and (sc.get("seccompProfile") or spec.get("securityContext", {}).get("seccompProfile", {})).get("type") == "RuntimeDefault"
            and spec.get("automountServiceAccountToken") is False):
        err("container securityContext is looser than documented")

    # Service, Ingress, HTTPRoute, ServiceMonitor, PDB, NetworkPolicy point at what exists.
    svc = (find(docs, "Service", "roulette") or [None])[0]
    if not svc or not labels_match(svc["spec"]["selector"], pod_labels):
        err("Service 'roulette' missing or its selector does not match the pods")
        finish()
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for p in svc["spec"]["ports"]:
        tp = p["targetPort"]
        if (ports.get(tp) if isinstance(tp, str) else tp) is None:
            err(f"Service port {p['name']}: targetPort {tp} is not a container port")
    if svc_ports.get("http", {}).get("targetPort") not in ("http", http_port):
        err("Service port 'http' does not lead to the container's http port")
    for ing in find(docs, "Ingress"):
        a = ing["metadata"].get("annotations", {})
        for k in ("proxy-read-timeout", "proxy-send-timeout"):
            v = a.get(f"nginx.ingress.kubernetes.io/{k}")
            if v is None or int(v) < MIN_WS_TIMEOUT_S:
                err(f"Ingress {ing['metadata']['name']}: {k} {v!r} < {MIN_WS_TIMEOUT_S}")
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                if b["name"] != "roulette" or b["port"].get("name", b["port"].get("number")) not in ("http", svc_ports["http"]["port"]):
                    err(f"Ingress backend {b} is not the Service's http port")
    for rt in find(docs, "HTTPRoute"):
        for rule in rt["spec"]["rules"]:
            for b in rule["backendRefs"]:
                if b["name"] != "roulette" or b["port"] != svc_ports["http"]["port"]:
                    err(f"HTTPRoute backendRef {b} is not the Service's http port")
    for bp in find(docs, "GCPBackendPolicy"):
        t = bp["spec"]["default"].get("timeoutSec", 30)
        drain = bp["spec"]["default"].get("connectionDraining", {}).get("drainingTimeoutSec", 0)
        if t < MIN_WS_TIMEOUT_S:
            err(f"GCPBackendPolicy timeoutSec {t} < {MIN_WS_TIMEOUT_S}: the load balancer would cut WebSockets")
        if drain < tgps:
            err(f"GCPBackendPolicy drainingTimeoutSec {drain} < terminationGracePeriodSeconds {tgps}")
        if bp["spec"]["targetRef"].get("name") != "roulette":
            err("GCPBackendPolicy does not target the Service 'roulette'")
    for hc in find(docs, "HealthCheckPolicy"):
        h = hc["spec"]["default"]["config"].get("httpHealthCheck", {})
        if h.get("requestPath") != "/healthz":
            err(f"HealthCheckPolicy requestPath {h.get('requestPath')!r}, want /healthz")
    for sm in find(docs, "ServiceMonitor"):
        if not labels_match(sm["spec"]["selector"].get("matchLabels"), svc["metadata"]["labels"]):
            err("ServiceMonitor selector does not match the Service's labels")
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports or svc_ports[ep["port"]]["port"] != metrics_port:
                err(f"ServiceMonitor endpoint port {ep.get('port')!r} is not the Service's metrics port")
    pdbs = find(docs, "PodDisruptionBudget")
    if len(pdbs) != 1 or not labels_match(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels):
        err("no PodDisruptionBudget selecting the pods")
    elif dep["spec"].get("replicas", 1) < 2:
        err("a PodDisruptionBudget with fewer than 2 replicas blocks every drain")
    strat = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    if (strat.get("maxUnavailable"), strat.get("maxSurge")) != (0, 1):
        err(f"rolling update {strat}, want maxUnavailable 0, maxSurge 1")
    ok("Service, Ingress, HTTPRoute, GCPBackendPolicy, HealthCheckPolicy, ServiceMonitor, PDB and rollout wired to the pods' ports")

    # NetworkPolicy: 8080 only from the ingress controller namespace, 9898 only from monitoring.
    np = (find(docs, "NetworkPolicy", "roulette") or [None])[0]
    if not np or not labels_match(np["spec"]["podSelector"]["matchLabels"], pod_labels):
        err("NetworkPolicy 'roulette' missing or not selecting the pods")
    else:
        seen = {}
        for rule in np["spec"].get("ingress", []):
            froms = rule.get("from")
            if not froms:
                err("a NetworkPolicy ingress rule admits every source")
            nss = {f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                   for f in froms or []}
            for p in rule.get("ports") or [{"port": "any"}]:
                seen.setdefault(p["port"], set()).update(nss)
        want = {http_port: {"ingress-nginx"}, metrics_port: {"monitoring"}}
        if seen != want:
            err(f"NetworkPolicy admits {seen}, want {want}")
        else:
            ok(f"NetworkPolicy: {http_port} from namespace ingress-nginx only, {metrics_port} from monitoring only")
    finish()


# -------------------------------------------------------------------------------- skips
def annotation_skips(root):
    """{(check id, file): reason} from checkov.io/skipN annotations."""
    out = {}
    for f, d in load_docs(root):
        for k, v in (d.get("metadata", {}).get("annotations") or {}).items():
            if not re.fullmatch(r"checkov\.io/skip\d+", k):
                continue
            m = re.fullmatch(r"(CKV2?_K8S_\d+)=(.+)", str(v))
            if not m or "\n" in v or len(m.group(2).strip()) < 10:
                err(f"{f}: {k}: '{v}' is not CKV_K8S_NN=<one-line reason>")
                continue
            out[(m.group(1), f)] = m.group(2).strip()
    return out


def doc_skips(doc):
    """{(check id, file)} from the table under the heading 'checkov skips' in the guide."""
    text = open(doc).read()
    m = re.search(r"^#+ [^\n]*checkov skips[^\n]*$(.*?)(?=^#+ |\Z)", text, re.M | re.S | re.I)
    if not m:
        err(f"{doc}: no section titled '... checkov skips ...'")
        return set()
    rows = re.findall(r"^\| `?(CKV2?_K8S_\d+)`? \| `?(?:deploy/kubernetes/)?([^`|]+?)`? \|", m.group(1), re.M)
    return {(c, f.strip()) for c, f in rows}


def cmd_skips(root, doc, checkov_json):
    ann = annotation_skips(root)
    table = doc_skips(doc)
    for k in sorted(set(ann) - table):
        err(f"checkov skip {k[0]} in {k[1]} is missing from the table in {doc}")
    for k in sorted(table - set(ann)):
        err(f"{doc} lists checkov skip {k[0]} for {k[1]}, but no annotation skips it")
    if checkov_json:
        data = json.load(open(checkov_json))
        for rep in data if isinstance(data, list) else [data]:
            skipped = {(c["check_id"], c["file_path"].lstrip("/").split("deploy/kubernetes/")[-1])
                       for c in rep["results"]["skipped_checks"]}
            for k in sorted(set(ann) - skipped):
                err(f"checkov did not apply the skip {k[0]} in {k[1]} (annotation on the wrong object?)")
            for k in sorted(skipped - set(ann)):
                err(f"checkov skipped {k[0]} in {k[1]} without an annotation this check knows")
    for (c, f), reason in sorted(ann.items()):
        print(f"skip  {c} ({f}): {reason}")
    if not errors:
        ok(f"{len(ann)} checkov skip(s), each with a reason, each listed in {os.path.basename(doc)}")
    finish()


# ---------------------------------------------------------------------------------- env
def deployment_env(root):
    dep = find(load_docs(root), "Deployment", "roulette")[0]
    c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "roulette")
    return c.get("env", [])


def cmd_env(root):
    help_text = sys.stdin.read()
    known = set(re.findall(r"env:\s*(ROULETTE_[A-Z0-9_]+)", help_text))
    if not known:
        err("no [env: ROULETTE_...] names in the --help text")
        finish()
    names = [e["name"] for e in deployment_env(root) if e["name"].startswith("ROULETTE_")]
    text = open(os.path.join(root, "20-deployment.yaml")).read()
    names += re.findall(r"#\s*- name: (ROULETTE_[A-Z0-9_]+)", text)   # commented-out ones too
    landing = []
    for n in sorted(set(names)):
        if n in known:
            continue
        if n in LANDING_FLAGS:
            landing.append(n)
        else:
            err(f"{n}: not a flag of this binary (a typo is silently ignored by the server)")
    ok(f"{len(set(names))} ROULETTE_* names; {len(set(names)) - len(landing)} known to this binary"
       + (f"; still landing (not in this binary's --help yet): {', '.join(landing)}" if landing else ""))
    finish()


def cmd_smoke_env(root):
    for e in deployment_env(root):
        if "value" in e:
            print(f"{e['name']}={e['value']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["provenance", "crds", "consistency", "skips", "env", "smoke-env"])
    ap.add_argument("dir", help="deploy/kubernetes")
    ap.add_argument("--doc", help="docs/deploy/kubernetes.md (skips)")
    ap.add_argument("--checkov-json", help="checkov -o json output (skips)")
    a = ap.parse_args()
    if a.command == "provenance":
        cmd_provenance(a.dir)
    elif a.command == "crds":
        cmd_crds(a.dir)
    elif a.command == "consistency":
        cmd_consistency(a.dir)
    elif a.command == "skips":
        cmd_skips(a.dir, a.doc, a.checkov_json)
    elif a.command == "env":
        cmd_env(a.dir)
    else:
        cmd_smoke_env(a.dir)


if __name__ == "__main__":
    main()
