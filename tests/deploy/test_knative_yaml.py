#!/usr/bin/env python3
"""Offline check of Knative Service manifests (docker/knative/service.yaml).

Three layers, each of which can fail the file:

1. The CRD's openAPIV3Schema (shared/data/knative/service-crd.yaml), with a
   small recursive validator for the structural-schema subset the CRD uses:
   type, properties, required, items, additionalProperties, anyOf,
   x-kubernetes-preserve-unknown-fields, x-kubernetes-int-or-string,
   x-kubernetes-list-type (map/set uniqueness), enum, pattern and format
   (int32/int64 ranges). Unknown fields are errors wherever the schema does
   not preserve them (as `kubectl apply --validate=strict` does). Fields whose
   description says "This is accessible behind a feature flag - X" are errors
   unless flag X is enabled (defaults: what Knative enables out of the box).
2. The rules Knative's webhook enforces that a schema cannot express
   (knative/serving pkg/apis/serving/k8s_validation.go, revision_validation.go,
   pkg/apis/autoscaling annotation validation): one container port, port name
   h2c/http1/"", reserved ports, reserved env vars (PORT, K_*), probe ports
   equal to the user port, readiness probe period/threshold rules, volume
   mounts, timeouts <= max-revision-timeout-seconds (600), containerConcurrency
   <= 1000, autoscaling annotations.
3. Thaw's deployment policy for the shipped file (--policy): a GPU limit,
   scale to zero, containerConcurrency set, a startupProbe on /readyz with an
   explicit port whose budget fits in the progress deadline, THAW_MODEL set.

Usage:
  test_knative_yaml.py                 # validate the shipped file and check
                                       # that negative examples fail (CTest)
  test_knative_yaml.py [--policy] [--feature FLAG]... [--max-timeout S] FILE...
      --policy       also apply Thaw's deployment policy (layer 3)
      --feature      a config-features flag the cluster enables
      --max-timeout  the cluster's max-revision-timeout-seconds (600)

Exit: 0 pass, 1 fail, 77 skip (shared/ with the CRD is missing).
Env: THAW_SOURCE_DIR (repo root; default: this script's repo).
"""

import copy
import math
import os
import re
import sys

try:
    import yaml
except ImportError:  # the project venv has PyYAML (scripts/pyenv.sh)
    print("SKIP: PyYAML is not installed in this Python", file=sys.stderr)
    sys.exit(77)

ROOT = os.environ.get("THAW_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
CRD = os.path.join(ROOT, "..", "shared", "data", "knative", "service-crd.yaml")
SERVICE = os.path.join(ROOT, "docker", "knative", "service.yaml")

# Knative Serving's config-features defaults (pkg/apis/config/features.go):
# these gated fields are enabled out of the box.
DEFAULT_FEATURES = {"kubernetes.podspec-volumes-emptydir", "multi-container"}

RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
VALID_PORT_NAMES = {"h2c", "http1", ""}
RESERVED_PATHS = {"/", "/dev", "/dev/log"}
MAX_REVISION_TIMEOUT = 600  # config-defaults max-revision-timeout-seconds
MAX_CONTAINER_CONCURRENCY = 1000  # config-defaults container-concurrency-max-limit
GATE_RE = re.compile(r"accessible behind a feature flag - ([a-z0-9.-]+)")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
QUANTITY_SUFFIX = {
    "": 1,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


# ---------------------------------------------------------------------------
# 1. OpenAPI v3 structural schema subset
# ---------------------------------------------------------------------------


def _type_ok(value, typ):
    if typ == "object":
        return isinstance(value, dict)
    if typ == "array":
        return isinstance(value, list)
    if typ == "string":
        return isinstance(value, str)
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ == "boolean":
        return isinstance(value, bool)
    return True  # no or unknown type: accept


def _tname(value):
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def validate_schema(value, schema, path, errs, gates):
    """Append "path: message" strings to errs; gated fields to gates."""
    desc = schema.get("description", "")
    m = GATE_RE.search(desc) if isinstance(desc, str) else None
    if m:
        gates.append((path, m.group(1)))

    if value is None:
        if not schema.get("nullable"):
            errs.append(f"{path}: null is not allowed")
        return

    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            errs.append(f"{path}: must be an integer or a string, got {_tname(value)}")
            return
        if (
            isinstance(value, str)
            and "pattern" in schema
            and not re.search(schema["pattern"], value)
        ):
            errs.append(f"{path}: {value!r} does not match {schema['pattern']}")
        return

    if "anyOf" in schema:
        for branch in schema["anyOf"]:
            sub = []
            validate_schema(value, branch, path, sub, [])
            if not sub:
                break
        else:
            errs.append(f"{path}: matches none of anyOf")
            return

    typ = schema.get("type")
    if typ and not _type_ok(value, typ):
        errs.append(f"{path}: expected {typ}, got {_tname(value)} ({value!r})")
        return

    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errs.append(f"{path}: {value!r} does not match {schema['pattern']}")
    fmt = schema.get("format")
    if fmt in INT_RANGES and isinstance(value, int) and not isinstance(value, bool):
        lo, hi = INT_RANGES[fmt]
        if not lo <= value <= hi:
            errs.append(f"{path}: {value} out of {fmt} range")

    if isinstance(value, dict):
        props = schema.get("properties", {})
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for req in schema.get("required", []):
            if req not in value:
                errs.append(f"{path}: missing required field {req!r}")
        for key, sub in value.items():
            kpath = f"{path}.{key}"
            if not isinstance(key, str):
                errs.append(f"{path}: key {key!r} is not a string")
            elif key in props:
                validate_schema(sub, props[key], kpath, errs, gates)
            elif isinstance(addl, dict):
                validate_schema(sub, addl, kpath, errs, gates)
            elif addl is True or preserve:
                pass
            else:
                errs.append(f"{kpath}: unknown field")
    elif isinstance(value, list):
        items = schema.get("items")
        if items:
            for i, item in enumerate(value):
                validate_schema(item, items, f"{path}[{i}]", errs, gates)
        ltype = schema.get("x-kubernetes-list-type")
        if ltype == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = set()
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    k = tuple(repr(item.get(x)) for x in keys)
                    if k in seen:
                        shown = ", ".join(f"{x}={item.get(x)!r}" for x in keys)
                        errs.append(f"{path}[{i}]: duplicate entry for key {shown}")
                    seen.add(k)
        elif ltype == "set":
            seen = set()
            for i, item in enumerate(value):
                if repr(item) in seen:
                    errs.append(f"{path}[{i}]: duplicate entry {item!r}")
                seen.add(repr(item))


def load_crd_schema(path):
    with open(path) as f:
        crd = yaml.safe_load(f)
    for ver in crd["spec"]["versions"]:
        if ver["name"] == "v1":
            return (
                crd["spec"]["group"],
                crd["spec"]["names"]["kind"],
                ver["schema"]["openAPIV3Schema"],
            )
    raise SystemExit(f"{path}: no v1 version")


# ---------------------------------------------------------------------------
# 2. Knative webhook rules
# ---------------------------------------------------------------------------


def parse_duration(s):
    """Go time.ParseDuration subset -> seconds, or None."""
    if not isinstance(s, str) or not DURATION_RE.match(s):
        return None
    mult = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(
        float(n) * mult[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", s)
    )


def parse_quantity(q):
    if isinstance(q, bool):
        return None
    if isinstance(q, (int, float)):
        return float(q)
    m = QUANTITY_RE.match(str(q))
    if not m:
        return None
    try:
        num = float(m.group(1))
    except ValueError:
        return None
    suf = m.group(2) or ""
    if suf[:1] in "eE" and suf:
        return num * 10 ** int(suf[1:])
    return num * QUANTITY_SUFFIX[suf]


def _probe_port_errors(probe, ppath, user_port, errs, require_port):
    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
    if not handlers:
        errs.append(f"{ppath}: expected exactly one of httpGet, tcpSocket, exec, grpc")
    elif len(handlers) > 1:
        errs.append(f"{ppath}: more than one handler: {handlers}")
    for h in ("httpGet", "tcpSocket", "grpc"):
        if h not in probe or not isinstance(probe[h], dict):
            continue
        port = probe[h].get("port")
        if port is None:
            if require_port:
                errs.append(
                    f"{ppath}.{h}.port: must be set explicitly (the kubelet runs this probe"
                    f" as written; Knative does not fill in the port)"
                )
            continue
        if isinstance(port, str) and not port.isdigit():
            if port != user_port["name"]:
                errs.append(
                    f"{ppath}.{h}.port: {port!r}: probe port must match container port"
                    f" name {user_port['name']!r}"
                )
        elif int(port) != user_port["containerPort"]:
            errs.append(
                f"{ppath}.{h}.port: {port}: probe port must match containerPort"
                f" {user_port['containerPort']}"
            )


def _probe_numbers(probe, ppath, errs, readiness):
    def num(k):
        v = probe.get(k, 0)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    for k in ("periodSeconds", "initialDelaySeconds", "timeoutSeconds", "failureThreshold"):
        if num(k) < 0:
            errs.append(f"{ppath}.{k}: must be >= 0")
    if "successThreshold" in probe and num("successThreshold") < 1:
        errs.append(f"{ppath}.successThreshold: must be >= 1")
    if readiness and num("periodSeconds") == 0:
        if num("failureThreshold") != 0:
            errs.append(f"{ppath}.failureThreshold: disallowed when periodSeconds is zero")
        if num("timeoutSeconds") != 0:
            errs.append(f"{ppath}.timeoutSeconds: disallowed when periodSeconds is zero")


def knative_rules(doc, features):
    errs = []
    if doc.get("apiVersion") != "serving.knative.dev/v1":
        errs.append(f"apiVersion: {doc.get('apiVersion')!r}, expected 'serving.knative.dev/v1'")
    if doc.get("kind") != "Service":
        errs.append(f"kind: {doc.get('kind')!r}, expected 'Service'")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        return errs + ["metadata: expected object"]
    known_meta = {"name", "namespace", "labels", "annotations", "generateName"}
    for k in meta:
        if k not in known_meta:
            errs.append(f"metadata.{k}: unknown or server-set field")
    name = meta.get("name")
    if not isinstance(name, str) or not DNS1035_LABEL.match(name) or len(name) > 63:
        errs.append(
            f"metadata.name: {name!r} must be a DNS-1035 label (lowercase, starts with a letter)"
        )
    elif len(name) + len("-00001") > 63:
        errs.append(
            f"metadata.name: {name!r} too long: revision names <name>-00001 must be <= 63 chars"
        )
    for k in ("labels", "annotations"):
        for kk, vv in (meta.get(k) or {}).items():
            if not isinstance(vv, str):
                errs.append(f"metadata.{k}.{kk}: value must be a string, got {_tname(vv)}")

    spec = doc.get("spec") or {}
    tmpl = spec.get("template") or {}
    tmeta = tmpl.get("metadata") or {}
    ann = tmeta.get("annotations") or {}
    errs += autoscaling_rules(ann, features)

    rs = tmpl.get("spec")
    if not isinstance(rs, dict):
        return errs + ["spec.template.spec: missing"]
    P = "spec.template.spec"
    # timeouts (revision_validation.go validateTimeoutSeconds)
    ts = rs.get("timeoutSeconds")
    if ts is not None:
        if not isinstance(ts, int) or ts < 0 or ts > MAX_REVISION_TIMEOUT:
            errs.append(
                f"{P}.timeoutSeconds: {ts!r} must be in 0..{MAX_REVISION_TIMEOUT}"
                f" (max-revision-timeout-seconds; raise it in config-defaults first)"
            )
    cap = ts if isinstance(ts, int) and ts > 0 else MAX_REVISION_TIMEOUT
    for k in ("responseStartTimeoutSeconds", "idleTimeoutSeconds"):
        v = rs.get(k)
        if v is not None and (not isinstance(v, int) or v < 0 or v > cap):
            errs.append(f"{P}.{k}: {v!r} must be in 0..{cap} (timeoutSeconds)")
    cc = rs.get("containerConcurrency")
    if cc is not None and (not isinstance(cc, int) or cc < 0 or cc > MAX_CONTAINER_CONCURRENCY):
        errs.append(f"{P}.containerConcurrency: {cc!r} must be in 0..{MAX_CONTAINER_CONCURRENCY}")

    containers = rs.get("containers") or []
    if not containers:
        errs.append(f"{P}.containers: at least one container is required")
        return errs
    if len(containers) > 1 and "multi-container" not in features:
        errs.append(
            f"{P}.containers: multi-container is off, but found {len(containers)} containers"
        )
    volumes = {}
    for i, v in enumerate(rs.get("volumes") or []):
        vname = v.get("name")
        if vname in volumes:
            errs.append(f"{P}.volumes[{i}].name: duplicate volume name {vname!r}")
        if not isinstance(vname, str) or not DNS1123_LABEL.match(vname):
            errs.append(f"{P}.volumes[{i}].name: {vname!r} is not a DNS-1123 label")
        kinds = [k for k in v if k != "name"]
        if len(kinds) != 1:
            errs.append(f"{P}.volumes[{i}]: expected exactly one volume source, got {kinds}")
        ed = v.get("emptyDir")
        if isinstance(ed, dict):
            if ed.get("medium", "") not in ("", "Memory"):
                errs.append(
                    f"{P}.volumes[{i}].emptyDir.medium: {ed.get('medium')!r} must be '' or 'Memory'"
                )
            if "sizeLimit" in ed and (
                parse_quantity(ed["sizeLimit"]) is None or parse_quantity(ed["sizeLimit"]) < 0
            ):
                errs.append(f"{P}.volumes[{i}].emptyDir.sizeLimit: {ed['sizeLimit']!r} invalid")
            for k in ed:
                if k not in ("medium", "sizeLimit"):
                    errs.append(f"{P}.volumes[{i}].emptyDir.{k}: unknown field")
        volumes[vname] = v
    mounted = set()

    # validateContainersPorts: a single port across all containers
    nports = sum(len(c.get("ports") or []) for c in containers)
    if nports > 1:
        errs.append(
            f"{P}.containers[*].ports: more than one container port is set"
            f" (only a single port is allowed across all containers)"
        )
    if nports == 0 and len(containers) > 1:
        errs.append(f"{P}.containers[*].ports: missing: the serving container must name its port")
    user_port = {"name": "", "containerPort": 8080}
    for c in containers:
        if c.get("ports"):
            user_port = {
                "name": c["ports"][0].get("name", ""),
                "containerPort": c["ports"][0].get("containerPort", 8080),
            }
            break

    names = set()
    for i, c in enumerate(containers):
        cp = f"{P}.containers[{i}]"
        serving = bool(c.get("ports")) or len(containers) == 1
        cname = c.get("name", "")
        if cname == "queue-proxy":
            errs.append(f"{cp}.name: 'queue-proxy' is a reserved container name")
        if cname in names:
            errs.append(f"{cp}.name: duplicate container name {cname!r}")
        names.add(cname)
        if cname and not DNS1123_LABEL.match(cname):
            errs.append(f"{cp}.name: {cname!r} is not a DNS-1123 label")
        if not c.get("image"):
            errs.append(f"{cp}.image: missing")
        elif re.search(r"\s", c["image"]) or c["image"] != c["image"].strip():
            errs.append(f"{cp}.image: {c['image']!r} is not a valid image reference")
        for j, p in enumerate(c.get("ports") or []):
            pn = p.get("name", "")
            if pn not in VALID_PORT_NAMES:
                errs.append(
                    f"{cp}.ports[{j}].name: {pn!r} is not allowed (must be empty, 'h2c' or 'http1')"
                )
            port = p.get("containerPort", 0)
            if port in RESERVED_PORTS:
                errs.append(f"{cp}.ports[{j}].containerPort: {port} is a reserved port")
            if not isinstance(port, int) or not 0 <= port <= 65535:
                errs.append(f"{cp}.ports[{j}].containerPort: {port!r} out of 0..65535")
            if p.get("protocol", "TCP") != "TCP":
                errs.append(f"{cp}.ports[{j}].protocol: {p.get('protocol')!r} must be TCP")
        for j, e in enumerate(c.get("env") or []):
            en = e.get("name", "")
            reserved = RESERVED_ENV if serving else RESERVED_ENV - {"PORT"}
            if en in reserved or en.startswith("K_"):
                errs.append(
                    f"{cp}.env[{j}].name: {en!r} is a reserved environment variable"
                    f" (Knative sets PORT and K_*)"
                )
            vf = e.get("valueFrom") or {}
            for g in ("fieldRef", "resourceFieldRef"):
                if g in vf and "kubernetes.podspec-fieldref" not in features:
                    errs.append(
                        f"{cp}.env[{j}].valueFrom.{g}: needs feature kubernetes.podspec-fieldref"
                    )
        if "lifecycle" in c:
            errs.append(f"{cp}.lifecycle: Knative owns the lifecycle hooks")
        # probes
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            ppath = f"{cp}.{kind}"
            if not serving:
                errs.append(f"{ppath}: probes are only allowed on the serving container")
                continue
            _probe_port_errors(probe, ppath, user_port, errs, require_port=(kind == "startupProbe"))
            _probe_numbers(probe, ppath, errs, readiness=(kind == "readinessProbe"))
        # resources
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for k in res:
            if k not in ("requests", "limits"):
                errs.append(f"{cp}.resources.{k}: not allowed by Knative")
        for rname in set(req) & set(lim):
            a, b = parse_quantity(req[rname]), parse_quantity(lim[rname])
            if a is not None and b is not None and a > b:
                errs.append(
                    f"{cp}.resources.requests.{rname}: {req[rname]} exceeds limit {lim[rname]}"
                )
        for rname in set(req) | set(lim):
            if "/" in rname and not rname.startswith("kubernetes.io/"):  # extended resource
                if (
                    rname in req
                    and rname in lim
                    and parse_quantity(req[rname]) != parse_quantity(lim[rname])
                ):
                    errs.append(
                        f"{cp}.resources: extended resource {rname}: requests must equal limits"
                    )
                for src in (req, lim):
                    if rname in src:
                        q = parse_quantity(src[rname])
                        if q is None or q != int(q):
                            errs.append(
                                f"{cp}.resources: extended resource {rname}: {src[rname]!r} must be an integer"
                            )
        # volume mounts
        paths = set()
        for j, vm in enumerate(c.get("volumeMounts") or []):
            vp = f"{cp}.volumeMounts[{j}]"
            vname = vm.get("name")
            mounted.add(vname)
            if vname not in volumes:
                errs.append(f"{vp}.name: volumeMount {vname!r} has no matching volume")
            mp = vm.get("mountPath", "")
            clean = os.path.normpath(mp) if mp else ""
            if not mp:
                errs.append(f"{vp}.mountPath: missing")
            elif clean in RESERVED_PATHS:
                errs.append(f"{vp}.mountPath: {clean!r} is a reserved path")
            elif not mp.startswith("/"):
                errs.append(f"{vp}.mountPath: {mp!r} must be absolute")
            elif clean in paths:
                errs.append(f"{vp}.mountPath: {mp!r} must be unique")
            paths.add(clean)
            vol = volumes.get(vname) or {}
            if (
                "emptyDir" not in vol
                and "persistentVolumeClaim" not in vol
                and not vm.get("readOnly")
            ):
                errs.append(
                    f"{vp}.readOnly: volume mount should be readOnly for this type of volume"
                )
            if (
                "mountPropagation" in vm
                and "kubernetes.podspec-volumes-mount-propagation" not in features
            ):
                errs.append(
                    f"{vp}.mountPropagation: needs feature kubernetes.podspec-volumes-mount-propagation"
                )
    for vname in volumes:
        if vname not in mounted:
            errs.append(f"{P}.volumes: volume with name {vname!r} not mounted")

    # traffic
    traffic = spec.get("traffic")
    if traffic is not None:
        total = 0
        for i, t in enumerate(traffic):
            pct = t.get("percent", 0)
            if not isinstance(pct, int) or not 0 <= pct <= 100:
                errs.append(f"spec.traffic[{i}].percent: {pct!r} must be in 0..100")
            else:
                total += pct
            if t.get("latestRevision") is True and t.get("revisionName"):
                errs.append(
                    f"spec.traffic[{i}]: revisionName and latestRevision: true are exclusive"
                )
            for k in ("configurationName", "url"):
                if k in t:
                    errs.append(f"spec.traffic[{i}].{k}: not allowed on a Service")
        if traffic and total != 100:
            errs.append(f"spec.traffic: percents sum to {total}, must be 100")
    return errs


def autoscaling_rules(ann, features):
    errs = []
    A = "spec.template.metadata.annotations"

    def get(key, *aliases):
        for k in (key,) + aliases:
            if k in ann:
                return k, ann[k]
        return None, None

    def as_int(k, v):
        try:
            return int(str(v))
        except ValueError:
            errs.append(f"{A}.{k}: {v!r} is not an integer")
            return None

    k, cls = get("autoscaling.knative.dev/class")
    cls = cls or "kpa.autoscaling.knative.dev"
    k, metric = get("autoscaling.knative.dev/metric")
    if metric is not None:
        allowed = (
            {"concurrency", "rps"}
            if cls == "kpa.autoscaling.knative.dev"
            else {"cpu", "memory", "concurrency", "rps"}
        )
        if metric not in allowed:
            errs.append(f"{A}.{k}: {metric!r} is not a valid metric for class {cls}")
    ks, mins = get("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/minScale")
    kx, maxs = get("autoscaling.knative.dev/max-scale", "autoscaling.knative.dev/maxScale")
    mn = as_int(ks, mins) if mins is not None else 0
    mx = as_int(kx, maxs) if maxs is not None else 0
    if mn is not None and mn < 0:
        errs.append(f"{A}.{ks}: must be >= 0")
    if mx is not None and mx < 0:
        errs.append(f"{A}.{kx}: must be >= 0")
    if mn is not None and mx is not None and mx != 0 and mn > mx:
        errs.append(f"{A}: min-scale={mn} is greater than max-scale={mx}")
    k, init = get("autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/initialScale")
    if init is not None:
        n = as_int(k, init)
        if n is not None and n < 0:
            errs.append(f"{A}.{k}: must be >= 0")
        if n == 0 and "allow-zero-initial-scale" not in features:
            errs.append(f'{A}.{k}: 0 needs allow-zero-initial-scale: "true" in config-autoscaler')
    k, tgt = get("autoscaling.knative.dev/target")
    if tgt is not None:
        try:
            if float(tgt) < 0.01:
                errs.append(f"{A}.{k}: must be >= 0.01")
        except ValueError:
            errs.append(f"{A}.{k}: {tgt!r} is not a number")
    k, tu = get(
        "autoscaling.knative.dev/target-utilization-percentage",
        "autoscaling.knative.dev/targetUtilizationPercentage",
    )
    if tu is not None:
        try:
            if not 1 <= float(tu) <= 100:
                errs.append(f"{A}.{k}: must be in 1..100")
        except ValueError:
            errs.append(f"{A}.{k}: {tu!r} is not a number")
    k, win = get("autoscaling.knative.dev/window")
    if win is not None:
        d = parse_duration(win)
        if d is None or not 6 <= d <= 3600:
            errs.append(f"{A}.{k}: {win!r} must be a duration in 6s..1h")
    for key, alias, hi in (
        (
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
            "autoscaling.knative.dev/scaleToZeroPodRetentionPeriod",
            None,
        ),
        (
            "autoscaling.knative.dev/scale-down-delay",
            "autoscaling.knative.dev/scaleDownDelay",
            3600,
        ),
    ):
        k, v = get(key, alias)
        if v is not None:
            d = parse_duration(v)
            if d is None or d < 0 or (hi is not None and d > hi):
                errs.append(
                    f"{A}.{k}: {v!r} must be a non-negative duration" + (" <= 1h" if hi else "")
                )
    k, pd = get("serving.knative.dev/progress-deadline")
    if pd is not None:
        d = parse_duration(pd)
        if d is None or d <= 0:
            errs.append(f"{A}.{k}: {pd!r} must be a positive duration")
    return errs


# ---------------------------------------------------------------------------
# 3. Thaw's deployment policy
# ---------------------------------------------------------------------------


def thaw_policy(doc):
    errs = []
    tmpl = (doc.get("spec") or {}).get("template") or {}
    ann = (tmpl.get("metadata") or {}).get("annotations") or {}
    rs = tmpl.get("spec") or {}
    cs = rs.get("containers") or [{}]
    c = next((x for x in cs if x.get("ports")), cs[0])
    if (
        ann.get("autoscaling.knative.dev/min-scale", ann.get("autoscaling.knative.dev/minScale"))
        != "0"
    ):
        errs.append('policy: autoscaling.knative.dev/min-scale must be "0" (scale to zero)')
    if (
        not isinstance(rs.get("containerConcurrency"), int)
        or rs.get("containerConcurrency", 0) <= 0
    ):
        errs.append("policy: containerConcurrency must be set (> 0, = THAW_MAX_SEQS)")
    env = {e.get("name"): e.get("value") for e in c.get("env") or []}
    if not env.get("THAW_MODEL"):
        errs.append("policy: env THAW_MODEL (checkpoint URI) must be set")
    if "THAW_MAX_SEQS" in env and str(rs.get("containerConcurrency")) != str(env["THAW_MAX_SEQS"]):
        errs.append(
            f"policy: containerConcurrency {rs.get('containerConcurrency')} != THAW_MAX_SEQS {env['THAW_MAX_SEQS']}"
        )
    if (
        "thaw.dev/model" in ann
        and env.get("THAW_MODEL")
        and ann["thaw.dev/model"] != env["THAW_MODEL"]
    ):
        errs.append("policy: annotation thaw.dev/model differs from THAW_MODEL")
    lim = (c.get("resources") or {}).get("limits") or {}
    req = (c.get("resources") or {}).get("requests") or {}
    if parse_quantity(lim.get("nvidia.com/gpu", 0)) != 1:
        errs.append("policy: resources.limits nvidia.com/gpu must be 1")
    for r in ("cpu", "memory"):
        if r not in req or r not in lim:
            errs.append(f"policy: resources requests and limits must set {r}")
    port = ((c.get("ports") or [{}])[0]).get("containerPort")
    if port != 8080:
        errs.append(f"policy: containerPort must be 8080 (thaw-runtime's default), got {port!r}")
    sp = c.get("startupProbe")
    if (
        not sp
        or (sp.get("httpGet") or {}).get("path") != "/readyz"
        or (sp.get("httpGet") or {}).get("port") is None
    ):
        errs.append("policy: startupProbe must be httpGet /readyz with an explicit port")
    else:
        budget = sp.get("initialDelaySeconds", 0) + sp.get("periodSeconds", 10) * sp.get(
            "failureThreshold", 3
        )
        if budget < 120:
            errs.append(f"policy: startupProbe allows only {budget}s for the model load (< 120s)")
        pd = parse_duration(ann.get("serving.knative.dev/progress-deadline", "600s")) or 600
        if budget > pd:
            errs.append(
                f"policy: startupProbe budget {budget}s exceeds the progress deadline {pd:g}s"
            )
    rp = c.get("readinessProbe")
    if not rp or (rp.get("httpGet") or {}).get("path") != "/readyz":
        errs.append("policy: readinessProbe must be httpGet /readyz")
    if "serving.knative.dev/progress-deadline" not in ann:
        errs.append("policy: serving.knative.dev/progress-deadline annotation must be set")
    for k in ("timeoutSeconds", "responseStartTimeoutSeconds"):
        if k not in rs:
            errs.append(f"policy: {k} must be set")
    return errs


# ---------------------------------------------------------------------------


def check_doc(doc, schema, features, policy):
    errs, gates = [], []
    if not isinstance(doc, dict):
        return ["document: expected a mapping"]
    # The root metadata is ObjectMeta, validated by the API server itself,
    # not by the CRD schema (which says only type: object): knative_rules
    # checks it.
    validate_schema({k: v for k, v in doc.items() if k != "metadata"}, schema, "", errs, gates)
    errs = [e[1:] if e.startswith(".") else e for e in errs]
    for path, flag in gates:
        if flag not in features:
            errs.append(
                f"{path.lstrip('.')}: needs Knative feature flag {flag}"
                f" (config-features; pass --feature {flag} if the cluster enables it)"
            )
    errs += knative_rules(doc, features)
    if policy:
        errs += thaw_policy(doc)
    return errs


def check_file(path, schema, features, policy):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        return [f"{path}: no YAML document"]
    out = []
    for i, d in enumerate(docs):
        out += [f"{path}#{i}: {e}" for e in check_doc(d, schema, features, policy)]
    return out


# Negative examples: each mutates the shipped Service and must be rejected
# with an error containing the given text.
def _c(d):
    return d["spec"]["template"]["spec"]["containers"][0]


def _set(fn):
    def mut(d):
        fn(d)
        return d

    return mut


NEGATIVE = [
    (
        "unknown field in the revision spec (typo)",
        "containerConcurency: unknown field",
        _set(lambda d: d["spec"]["template"]["spec"].__setitem__("containerConcurency", 8)),
    ),
    (
        "unknown field in a container",
        "lifecycle: unknown field",
        _set(
            lambda d: _c(d).__setitem__("lifecycle", {"preStop": {"exec": {"command": ["true"]}}})
        ),
    ),
    (
        "unknown field at the top of spec",
        "spec.replicas: unknown field",
        _set(lambda d: d["spec"].__setitem__("replicas", 1)),
    ),
    (
        "timeoutSeconds as a string",
        "expected integer",
        _set(lambda d: d["spec"]["template"]["spec"].__setitem__("timeoutSeconds", "600")),
    ),
    (
        "containerPort out of int32",
        "out of int32 range",
        _set(lambda d: _c(d)["ports"][0].__setitem__("containerPort", 2**31)),
    ),
    (
        "bad resource quantity",
        "does not match",
        _set(lambda d: _c(d)["resources"]["limits"].__setitem__("memory", "8 GB")),
    ),
    (
        "env entry without a name",
        "missing required field 'name'",
        _set(lambda d: _c(d)["env"].append({"value": "x"})),
    ),
    (
        "duplicate env name (list-type map)",
        "duplicate entry",
        _set(lambda d: _c(d)["env"].append({"name": "THAW_MODEL", "value": "/models/x"})),
    ),
    (
        "reserved env var PORT",
        "'PORT' is a reserved environment variable",
        _set(lambda d: _c(d)["env"].append({"name": "PORT", "value": "9000"})),
    ),
    (
        "reserved env var K_SERVICE",
        "'K_SERVICE' is a reserved environment variable",
        _set(lambda d: _c(d)["env"].append({"name": "K_SERVICE", "value": "x"})),
    ),
    (
        "a second container port",
        "more than one container port is set",
        _set(lambda d: _c(d)["ports"].append({"name": "http1", "containerPort": 9000})),
    ),
    (
        "a port name other than h2c/http1",
        "is not allowed",
        _set(lambda d: _c(d)["ports"][0].__setitem__("name", "http")),
    ),
    (
        "a reserved port",
        "8012 is a reserved port",
        _set(lambda d: _c(d)["ports"][0].__setitem__("containerPort", 8012)),
    ),
    (
        "readiness probe on another port",
        "probe port must match containerPort",
        _set(lambda d: _c(d)["readinessProbe"]["httpGet"].__setitem__("port", 9000)),
    ),
    (
        "startupProbe without an explicit port",
        "must be set explicitly",
        _set(lambda d: _c(d)["startupProbe"]["httpGet"].pop("port")),
    ),
    (
        "aggressive readiness probe with failureThreshold",
        "disallowed when periodSeconds is zero",
        _set(lambda d: _c(d)["readinessProbe"].__setitem__("failureThreshold", 3)),
    ),
    (
        "probe with two handlers",
        "more than one handler",
        _set(lambda d: _c(d)["livenessProbe"].__setitem__("tcpSocket", {"port": 8080})),
    ),
    (
        "timeoutSeconds above max-revision-timeout-seconds",
        "must be in 0..600",
        _set(lambda d: d["spec"]["template"]["spec"].__setitem__("timeoutSeconds", 3600)),
    ),
    (
        "responseStartTimeoutSeconds above timeoutSeconds",
        "responseStartTimeoutSeconds",
        _set(
            lambda d: d["spec"]["template"]["spec"].__setitem__("responseStartTimeoutSeconds", 900)
        ),
    ),
    (
        "feature-gated field (tolerations) without its flag",
        "needs Knative feature flag kubernetes.podspec-tolerations",
        _set(
            lambda d: d["spec"]["template"]["spec"].__setitem__(
                "tolerations",
                [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            )
        ),
    ),
    (
        "hostPath mount that is writable",
        "should be readOnly",
        _set(
            lambda d: (
                d["spec"]["template"]["spec"]["volumes"].append(
                    {"name": "ckpt", "hostPath": {"path": "/var/lib/thaw"}}
                ),
                _c(d)["volumeMounts"].append({"name": "ckpt", "mountPath": "/models"}),
            )
        ),
    ),
    (
        "mount on a reserved path",
        "is a reserved path",
        _set(lambda d: _c(d)["volumeMounts"][0].__setitem__("mountPath", "/dev")),
    ),
    (
        "container named queue-proxy",
        "reserved container name",
        _set(lambda d: _c(d).__setitem__("name", "queue-proxy")),
    ),
    (
        "min-scale above max-scale",
        "greater than max-scale",
        _set(
            lambda d: d["spec"]["template"]["metadata"]["annotations"].__setitem__(
                "autoscaling.knative.dev/min-scale", "9"
            )
        ),
    ),
    (
        "annotation value not a string",
        "expected string",
        _set(
            lambda d: d["spec"]["template"]["metadata"]["annotations"].__setitem__(
                "autoscaling.knative.dev/max-scale", 4
            )
        ),
    ),
    (
        "GPU request different from its limit",
        "requests must equal limits",
        _set(lambda d: _c(d)["resources"]["requests"].__setitem__("nvidia.com/gpu", "2")),
    ),
    (
        "traffic not summing to 100",
        "must be 100",
        _set(lambda d: d["spec"]["traffic"][0].__setitem__("percent", 50)),
    ),
    (
        "service name with upper case",
        "DNS-1035",
        _set(lambda d: d["metadata"].__setitem__("name", "SmolLM2")),
    ),
    (
        "policy: no GPU",
        "nvidia.com/gpu must be 1",
        _set(
            lambda d: (
                _c(d)["resources"]["limits"].pop("nvidia.com/gpu"),
                _c(d)["resources"]["requests"].pop("nvidia.com/gpu"),
            )
        ),
    ),
    (
        "policy: not scale to zero",
        'min-scale must be "0"',
        _set(
            lambda d: d["spec"]["template"]["metadata"]["annotations"].__setitem__(
                "autoscaling.knative.dev/min-scale", "1"
            )
        ),
    ),
    (
        "policy: startup budget beyond the progress deadline",
        "exceeds the progress deadline",
        _set(lambda d: _c(d)["startupProbe"].__setitem__("failureThreshold", 5000)),
    ),
    (
        "policy: THAW_MODEL missing",
        "THAW_MODEL",
        _set(
            lambda d: _c(d).__setitem__(
                "env", [e for e in _c(d)["env"] if e["name"] != "THAW_MODEL"]
            )
        ),
    ),
]


def self_test(schema, features):
    """The validator must accept a minimal valid Service and reject bad ones."""
    fails = 0
    minimal = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"template": {"spec": {"containers": [{"image": "example.com/hello:1"}]}}},
    }
    errs = check_doc(minimal, schema, features, policy=False)
    if errs:
        print(f"FAIL self-test: a minimal Service was rejected: {errs}")
        fails += 1
    else:
        print("ok   self-test: a minimal Service passes the schema and webhook rules")
    return fails


def main(argv):
    global MAX_REVISION_TIMEOUT
    args, features, policy, files = list(argv), set(DEFAULT_FEATURES), False, []
    while args:
        a = args.pop(0)
        if a == "--feature" and args:
            features.add(args.pop(0))
        elif a == "--max-timeout" and args:
            MAX_REVISION_TIMEOUT = int(args.pop(0))
        elif a == "--policy":
            policy = True
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            files.append(a)
    if not os.path.isfile(CRD):
        print(f"SKIP: {os.path.normpath(CRD)} not found (shared/ is not beside the repo)")
        return 77
    group, kind, schema = load_crd_schema(CRD)
    assert (group, kind) == ("serving.knative.dev", "Service"), (group, kind)

    if files:
        bad = 0
        for f in files:
            errs = check_file(f, schema, features, policy)
            for e in errs:
                print(e)
            print(f"{f}: {'FAIL' if errs else 'ok'} ({len(errs)} errors)")
            bad += bool(errs)
        return 1 if bad else 0

    fails = self_test(schema, features)
    errs = check_file(SERVICE, schema, features, policy=True)
    rel = os.path.relpath(SERVICE, ROOT)
    if errs:
        fails += 1
        print(f"FAIL {rel}:")
        for e in errs:
            print(f"     {e}")
    else:
        print(f"ok   {rel}: schema, webhook rules and policy")
    with open(SERVICE) as f:
        good = yaml.safe_load(f)
    for desc, expect, mutate in NEGATIVE:
        errs = check_doc(mutate(copy.deepcopy(good)), schema, features, policy=True)
        hit = [e for e in errs if expect in e]
        if hit:
            print(f"ok   rejects {desc}: {hit[0]}")
        else:
            fails += 1
            print(f"FAIL accepts {desc}: expected an error containing {expect!r}, got {errs}")
    total = 2 + len(NEGATIVE)
    print(f"{total - fails} passed, {fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
