#!/usr/bin/env python3
"""Checks of the rendered Kubernetes manifests that kubernetes-validate cannot make.

Run by .ci/check-deploy inside its virtualenv (PyYAML, jsonschema, kubernetes-validate,
cloudcoil-models-prometheus-operator).

  deploy_checks.py crs FILE...
      Every document must be a Prometheus Operator custom resource (PodMonitor or
      ServiceMonitor) and must validate against the schema of that CRD, made strict (no
      unknown fields at any depth), as kubernetes-validate --strict does for core kinds.
      The schema is generated from cloudcoil's pydantic models of the prometheus-operator
      CRDs (the package cloudcoil-models-prometheus-operator, built from the CRDs'
      openAPIV3Schema), so no network is needed.

  deploy_checks.py policy KIND BASE.yaml MONITORING.yaml
      KIND is `sidecar` or `shared`. What the deployment promises, checked on what
      kustomize rendered: the restricted security context on every container, the probes on
      the admin port, a termination grace above --shutdown-grace, the native sidecar, memory
      limits that hold --max-capacity plus the measured fixed overhead, the admin token
      wherever the admin listener leaves loopback, only the documented Secret, and that
      every selector (Service, PodDisruptionBudget, PodMonitor, ServiceMonitor) finds what
      it is meant to find.

  deploy_checks.py split RENDERED.yaml CORE.yaml CRS.yaml
      Splits what kustomize rendered: core kinds (for kubernetes-validate --strict) and
      monitoring.coreos.com custom resources (for `crs`). Prints the two counts.

  deploy_checks.py dockerfile Dockerfile .dockerignore
      What the image promises beyond hadolint's rules: a locked release build of the one
      binary with cache mounts, a distroless non-root runtime of the builder's Debian
      release, a numeric non-root USER, OCI labels, an exec-form ENTRYPOINT, both ports
      EXPOSEd, no secret in ENV/ARG, and build output and history kept out of the context.

  deploy_checks.py context Dockerfile .dockerignore DEST
      Copies into DEST what the build stage's COPY lines take from the context, less what
      .dockerignore leaves out (Docker's patterns, approximated with fnmatch), so that
      `cargo metadata --locked` can prove the image's build sees a complete workspace.

  deploy_checks.py unit UNIT CONFIG.toml
      The systemd unit: the directives deploy/README.md promises (DynamicUser, the
      EnvironmentFile, --check-config before start and reload, SIGHUP reload, the
      sandbox), and TimeoutStopSec above the config's --shutdown-grace.
"""

import ipaddress
import re
import sys
import tomllib

import yaml

# The soak test's bound (README: Soak test): RSS stays within --max-capacity plus this.
FIXED_OVERHEAD_MIB = 96
SECRET_NAME = "baremetal-image-cache"
SECRET_KEYS = {"admin-token", "redis-url", "redis-grant-key"}
PROXY_IMAGE = "baremetal-image-cache"
DEFAULT_SHUTDOWN_GRACE_S = 30.0
DEFAULT_MAX_CAPACITY_MIB = 256.0

failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")


def load(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


# --- crs ------------------------------------------------------------------------------------


def strict(schema):
    """The schema with additionalProperties: false on every object that lists properties."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def check_crs(paths):
    import jsonschema
    from cloudcoil.models.prometheus_operator import v1

    models = {"PodMonitor": v1.PodMonitor, "ServiceMonitor": v1.ServiceMonitor}
    validators = {
        kind: jsonschema.Draft202012Validator(
            strict(model.model_json_schema(by_alias=True, mode="validation"))
        )
        for kind, model in models.items()
    }
    for path in paths:
        docs = load(path)
        if not docs:
            fail(path, "no resources rendered")
        for doc in docs:
            kind = doc.get("kind")
            name = f"{path}: {kind}/{doc.get('metadata', {}).get('name')}"
            if doc.get("apiVersion") != "monitoring.coreos.com/v1" or kind not in validators:
                fail(name, "only monitoring.coreos.com/v1 PodMonitor or ServiceMonitor here")
                continue
            errors = sorted(validators[kind].iter_errors(doc), key=lambda e: list(e.path))
            for error in errors:
                # Optional fields are anyOf [schema, null]: name the error inside.
                error = jsonschema.exceptions.best_match([error])
                at = ".".join(str(p) for p in error.absolute_path) or "(top)"
                fail(name, f"{at}: {error.message}")
            if not errors:
                print(f"OK   {name} validates against the prometheus-operator CRD schema (strict)")


# --- policy ---------------------------------------------------------------------------------


def duration_s(text):
    total, rest = 0.0, text.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "days": 86400}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|days|d|h|m|s)", rest):
        total += float(number) * units[unit]
    return total


def size_mib(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", str(text))
    if not m:
        raise ValueError(f"not a size: {text!r}")
    scale = {None: 1, "B": 1, "KiB": 1024, "KB": 1000, "MiB": 1024**2, "MB": 1000**2,
             "GiB": 1024**3, "GB": 1000**3}[m.group(2)]
    return float(m.group(1)) * scale / 1024**2


def quantity_mib(q):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", str(q))
    scale = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1e3, "M": 1e6,
             "G": 1e9}[m.group(2)]
    return float(m.group(1)) * scale / 1024**2


def is_loopback(addr):
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def arg_after(args, flag):
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def mount_of(container, volumes, path):
    """The volume behind `path` in this container, and the path inside that volume."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            return volumes.get(mount["name"]), path[len(prefix):]
    return None, None


def pod_port_names(deployment):
    spec = deployment["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    return {port.get("name") for c in containers for port in c.get("ports", [])}


def check_container_security(where, container):
    sc = container.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(where, "securityContext.allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(where, "securityContext.readOnlyRootFilesystem must be true")
    if sc.get("runAsNonRoot") is not True:
        fail(where, "securityContext.runAsNonRoot must be true")
    if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
        fail(where, "securityContext.capabilities.drop must include ALL")
    if (sc.get("capabilities") or {}).get("add"):
        fail(where, "securityContext.capabilities.add must be empty")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        fail(where, "securityContext.seccompProfile.type must be RuntimeDefault")
    res = container.get("resources") or {}
    for part in ("requests", "limits"):
        if "memory" not in (res.get(part) or {}):
            fail(where, f"resources.{part}.memory is missing")


def check_policy(kind, base_path, monitoring_path):
    docs = load(base_path)
    monitors = load(monitoring_path)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail(base_path, "no Deployment rendered")
    proxies = []  # (deployment, container, is_init, config)
    for dep in deployments:
        dname = f"{base_path}: Deployment/{dep['metadata']['name']}"
        tmpl = dep["spec"]["template"]
        pod = tmpl["spec"]
        if not matches(dep["spec"]["selector"].get("matchLabels"), tmpl["metadata"]["labels"]):
            fail(dname, "selector does not match the pod template's labels")
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            fail(dname, "pod securityContext.runAsNonRoot must be true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(dname, "pod securityContext.seccompProfile.type must be RuntimeDefault")
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(field):
                fail(dname, f"{field} must not be set")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for vol in volumes.values():
            if "hostPath" in vol:
                fail(dname, f"volume {vol['name']}: hostPath is not allowed")
            if "secret" in vol and vol["secret"]["secretName"] != SECRET_NAME:
                fail(dname, f"volume {vol['name']}: unknown Secret {vol['secret']['secretName']}")
        all_containers = [(c, True) for c in pod.get("initContainers", [])] + [
            (c, False) for c in pod.get("containers", [])
        ]
        for c, is_init in all_containers:
            where = f"{dname} container {c['name']}"
            check_container_security(where, c)
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref["name"] != SECRET_NAME or ref["key"] not in SECRET_KEYS):
                    fail(where, f"env {env['name']}: Secret {ref['name']}/{ref['key']} is not "
                         f"the documented one ({SECRET_NAME}: {sorted(SECRET_KEYS)})")
            image = c["image"].rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
            if image != PROXY_IMAGE:
                continue
            config_path = arg_after(c.get("args", []), "--config")
            if not config_path:
                fail(where, "no --config argument")
                continue
            vol, key = mount_of(c, volumes, config_path)
            cm = configmaps.get(((vol or {}).get("configMap") or {}).get("name"))
            if cm is None or key not in cm.get("data", {}):
                fail(where, f"--config {config_path} is not a key of a mounted, rendered ConfigMap")
                continue
            config = tomllib.loads(cm["data"][key])
            for secret_key in ("redis", "redis-grant-key"):
                if secret_key in config:
                    fail(where, f"the ConfigMap holds the secret `{secret_key}`: use the Secret")
            proxies.append((dep, c, is_init, config, volumes))
    if not proxies:
        fail(base_path, f"no container runs the {PROXY_IMAGE} image")

    for dep, c, is_init, config, volumes in proxies:
        failures_before = len(failures)
        where = f"{base_path}: Deployment/{dep['metadata']['name']} container {c['name']}"
        pod = dep["spec"]["template"]["spec"]
        if kind == "sidecar":
            if not is_init or c.get("restartPolicy") != "Always":
                fail(where, "the proxy must be a native sidecar (an initContainer with "
                     "restartPolicy: Always)")
            if not is_loopback(config.get("listen", "127.0.0.1:8080")):
                fail(where, "a sidecar's proxy listener stays on loopback")
        elif kind == "shared":
            if dep["spec"].get("replicas", 1) < 2:
                fail(where, "a shared service runs 2 or more replicas")
            if not pod.get("topologySpreadConstraints") and not (pod.get("affinity") or {}).get(
                    "podAntiAffinity"):
                fail(where, "replicas need topology spread constraints or pod anti-affinity")
            if config.get("auth-mode", "per-credential") != "per-credential":
                fail(where, "a shared service must use auth-mode per-credential")
            names = {e["name"] for e in c.get("env", [])}
            if "BAREMETAL_IMAGE_CACHE_REDIS" not in names:
                fail(where, "a shared service needs the Redis tier (BAREMETAL_IMAGE_CACHE_REDIS)")

        # Probes: on the admin listener's port, by name, with the right paths.
        admin_port = int(config.get("admin-listen", "127.0.0.1:9464").rsplit(":", 1)[1])
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                            ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                fail(where, f"{probe} must be an httpGet on the admin port")
                continue
            port = ports.get(get["port"], get["port"])
            if port != admin_port or get.get("path") != path:
                fail(where, f"{probe} must GET {path} on the admin port {admin_port}, "
                     f"not {get.get('path')} on {get['port']}")
        if is_loopback(config.get("admin-listen", "127.0.0.1:9464")):
            fail(where, "the kubelet's probes cannot reach an admin listener on loopback")

        # The admin listener leaves loopback: purges must need the token, from the Secret.
        token = arg_after(c.get("args", []), "--admin-token-file") or config.get(
            "admin-token-file")
        vol, key = mount_of(c, volumes, token or "")
        secret = (vol or {}).get("secret")
        if not token or not secret or key not in {i["path"] for i in secret.get("items", [])}:
            fail(where, "an admin listener off loopback needs --admin-token-file on the "
                 "mounted Secret")
        elif secret.get("optional"):
            fail(where, "the admin token's Secret must not be optional")

        # Termination: the grace period covers the preStop pause and --shutdown-grace.
        grace = duration_s(config.get("shutdown-grace", "30s")) if "shutdown-grace" in config \
            else DEFAULT_SHUTDOWN_GRACE_S
        pause = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get(
            "seconds", 0)
        period = pod.get("terminationGracePeriodSeconds", 30)
        if period <= grace + pause:
            fail(where, f"terminationGracePeriodSeconds {period} must exceed --shutdown-grace "
                 f"{grace:g}s plus the preStop pause {pause}s")

        # Memory: the limit holds --max-capacity plus the measured fixed overhead.
        capacity = size_mib(config.get("max-capacity", f"{DEFAULT_MAX_CAPACITY_MIB}MiB"))
        limit = quantity_mib(((c.get("resources") or {}).get("limits") or {}).get("memory", 0))
        if limit < capacity + FIXED_OVERHEAD_MIB:
            fail(where, f"memory limit {limit:g}Mi is below max-capacity {capacity:g}MiB + "
                 f"{FIXED_OVERHEAD_MIB}MiB of fixed overhead")
        if len(failures) > failures_before:
            continue
        print(f"OK   {where}: probes on :{admin_port}, grace {period}s > {grace:g}s + "
              f"{pause}s, memory limit {limit:g}Mi >= {capacity:g} + {FIXED_OVERHEAD_MIB} MiB")

    # Selectors find what they are meant to find.
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    services = by_kind.get("Service", [])
    for svc in services:
        if not any(matches(svc["spec"].get("selector"), labels) for labels in pods):
            fail(f"{base_path}: Service/{svc['metadata']['name']}", "selects no pod")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(pdb["spec"]["selector"].get("matchLabels"), labels) for labels in pods):
            fail(f"{base_path}: PodDisruptionBudget/{pdb['metadata']['name']}", "selects no pod")
    if kind == "shared" and (not services or not by_kind.get("PodDisruptionBudget")):
        fail(base_path, "a shared service needs a Service and a PodDisruptionBudget")
    for mon in monitors:
        name = f"{monitoring_path}: {mon['kind']}/{mon['metadata']['name']}"
        selector = mon["spec"]["selector"].get("matchLabels")
        if mon["kind"] == "PodMonitor":
            targets = [(dep["spec"]["template"]["metadata"]["labels"], pod_port_names(dep))
                       for dep in deployments]
            wanted = [e["port"] for e in mon["spec"]["podMetricsEndpoints"]]
        else:
            targets = [(svc["metadata"].get("labels", {}),
                        {p.get("name") for p in svc["spec"]["ports"]}) for svc in services]
            wanted = [e["port"] for e in mon["spec"]["endpoints"]]
        found = [port_names for labels, port_names in targets if matches(selector, labels)]
        if not found:
            fail(name, "selects nothing that the base renders")
        for port in wanted:
            if not any(port in names for names in found):
                fail(name, f"no selected target has a port named {port}")
        for endpoint in mon["spec"].get("podMetricsEndpoints", mon["spec"].get("endpoints", [])):
            jobs = [r for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
            if not any(r.get("replacement") == "baremetal-image-cache" for r in jobs):
                fail(name, 'the alert rules need job="baremetal-image-cache"')
        if not failures:
            print(f"OK   {name} selects the base's targets, port(s) {', '.join(wanted)}")


# --- split ----------------------------------------------------------------------------------


def split(rendered, core_path, crs_path):
    docs = load(rendered)
    crs = [d for d in docs if d.get("apiVersion", "").startswith("monitoring.coreos.com/")]
    core = [d for d in docs if d not in crs]
    for path, part in ((core_path, core), (crs_path, crs)):
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(part, f, sort_keys=False)
    print(f"{len(core)} {len(crs)}")


# --- dockerfile and its context --------------------------------------------------------------


def dockerfile_stages(path):
    """[(stage name, [(instruction, rest)])], line continuations joined, comments dropped."""
    stages, logical = [], ""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    joined = []
    for line in lines:
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        joined.append(logical + line)
        logical = ""
    for line in joined:
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            name = rest.split(" AS ")[-1].strip() if " AS " in rest.upper() else ""
            stages.append((name.lower(), [(instruction, rest.strip())]))
        elif stages:
            stages[-1][1].append((instruction, rest.strip()))
    return stages


def ignore_patterns(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip().rstrip("/") for line in f
                if line.strip() and not line.lstrip().startswith("#")]


def pattern_regex(pattern):
    """A .dockerignore pattern as a regex (Go's filepath.Match, plus ** for any depth)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(rel, patterns):
    """Whether .dockerignore leaves out this path (a pattern that matches a folder leaves
    out everything in it)."""
    if any(p.startswith("!") for p in patterns):
        raise SystemExit("exceptions (!) in .dockerignore are not supported by this check")
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(pattern_regex(p.lstrip("/")).fullmatch(prefix)
               for p in patterns for prefix in prefixes)


def check_dockerfile(path, ignore_path):
    stages = dockerfile_stages(path)
    if len(stages) < 2:
        fail(path, "must be multi-stage (a build stage and a runtime stage)")
        return
    build = [rest for name, instrs in stages for ins, rest in instrs
             if ins == "RUN" and "cargo build" in rest]
    if not build:
        fail(path, "no RUN with cargo build")
    for rest in build:
        for needed in ("--release", "--locked", "--bin baremetal-image-cache"):
            if needed not in rest:
                fail(path, f"the cargo build lacks {needed}")
        for cache in ("/usr/local/cargo/registry", "/usr/local/cargo/git", "target"):
            if not re.search(r"--mount=type=cache,[^ ]*target=[^ ]*" + re.escape(cache), rest):
                fail(path, f"no BuildKit cache mount for {cache}")
    build_from = stages[0][1][0][1]
    runtime = stages[-1][1]
    runtime_from = re.split(r"\s+AS\s+", runtime[0][1], flags=re.I)[0]
    if "bookworm" in build_from and "debian12" not in runtime_from:
        fail(path, "builder (bookworm) and runtime must be the same Debian release (glibc)")
    if "distroless" not in runtime_from or "nonroot" not in runtime_from:
        fail(path, "the runtime should be a distroless nonroot image")
    users = [rest for ins, rest in runtime if ins == "USER"]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]):
        fail(path, "the runtime needs a numeric, non-root USER (uid:gid)")
    entry = [rest for ins, rest in runtime if ins == "ENTRYPOINT"]
    if not entry or not entry[-1].startswith("["):
        fail(path, "ENTRYPOINT must be in exec form")
    exposed = " ".join(rest for ins, rest in runtime if ins == "EXPOSE")
    for port in ("8080", "9464"):
        if port not in exposed:
            fail(path, f"EXPOSE {port} (documentation of the default ports)")
    labels = " ".join(rest for ins, rest in runtime if ins == "LABEL")
    for label in ("title", "description", "licenses", "version", "revision", "source"):
        if f"org.opencontainers.image.{label}=" not in labels:
            fail(path, f"no org.opencontainers.image.{label} label")
    for name, instrs in stages:
        for ins, rest in instrs:
            if ins in ("ENV", "ARG") and re.search(
                    r"(REDIS|TOKEN|GRANT|PASSWORD|SECRET|_KEY)", rest.upper()):
                fail(path, f"{ins} {rest}: no secret may be baked into the image")
    patterns = ignore_patterns(ignore_path)
    for must in ("target", ".git", "fuzz"):
        if must not in patterns:
            fail(ignore_path, f"{must}/ must be ignored")
    if not failures:
        print(f"OK   {path}: {len(stages)} stages, runtime {runtime_from}, user {users[-1]}, "
              f"locked release build with cache mounts, OCI labels, no secrets")


def build_context(path, ignore_path, dest):
    import os
    import shutil

    patterns = ignore_patterns(ignore_path)
    copied = 0
    build_stage = dockerfile_stages(path)[0][1]
    for ins, rest in build_stage:
        if ins != "COPY" or "--from" in rest:
            continue
        sources = [w for w in rest.split() if not w.startswith("--")][:-1]
        for source in sources:
            source = source.rstrip("/")
            if os.path.isfile(source):
                files = [source]
            else:
                files = [os.path.join(root, f) for root, _, names in os.walk(source)
                         for f in names]
            for file in files:
                rel = os.path.relpath(file)
                if ignored(rel, patterns):
                    continue
                os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
                shutil.copy2(file, os.path.join(dest, rel))
                copied += 1
    print(copied)


# --- the systemd unit -------------------------------------------------------------------------


def check_unit(path, config_path):
    directives = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, _, value = line.partition("=")
                directives.setdefault(key.strip(), []).append(value.strip())

    def one(key):
        values = directives.get(key, [])
        return values[-1] if values else None

    expected = {
        "DynamicUser": "yes", "KillSignal": "SIGTERM", "Restart": "on-failure",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native", "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "ProtectProc": "invisible", "UMask": "0077",
    }
    for key, value in expected.items():
        if one(key) != value:
            fail(path, f"{key}={value} expected, found {one(key)!r}")
    if "@system-service" not in directives.get("SystemCallFilter", []):
        fail(path, "SystemCallFilter=@system-service expected")
    if not one("EnvironmentFile") or "/etc/baremetal-image-cache/" not in one("EnvironmentFile"):
        fail(path, "EnvironmentFile= under /etc/baremetal-image-cache/ expected")
    if not one("LimitNOFILE"):
        fail(path, "LimitNOFILE= expected")
    start = one("ExecStart") or ""
    if "--config /etc/baremetal-image-cache/" not in start:
        fail(path, "ExecStart= must read the config under /etc/baremetal-image-cache/")
    pre = directives.get("ExecStartPre", [])
    if not any("--check-config" in p and p.split()[0] == start.split()[0] for p in pre):
        fail(path, "ExecStartPre= must run the same binary with --check-config")
    if "/bin/kill -HUP $MAINPID" not in directives.get("ExecReload", []):
        fail(path, "ExecReload=/bin/kill -HUP $MAINPID expected")
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    grace = duration_s(config.get("shutdown-grace", "30s"))
    stop = duration_s(one("TimeoutStopSec") or "0s")
    if stop <= grace:
        fail(path, f"TimeoutStopSec {stop:g}s must exceed --shutdown-grace {grace:g}s")
    if not failures:
        print(f"OK   {path}: DynamicUser, EnvironmentFile, --check-config before start and "
              f"reload, SIGHUP reload, sandbox, TimeoutStopSec {stop:g}s > {grace:g}s")


def main(argv):
    if len(argv) >= 2 and argv[0] == "crs":
        check_crs(argv[1:])
    elif len(argv) == 4 and argv[0] == "split":
        split(*argv[1:])
    elif len(argv) == 3 and argv[0] == "dockerfile":
        check_dockerfile(*argv[1:])
    elif len(argv) == 4 and argv[0] == "context":
        build_context(*argv[1:])
    elif len(argv) == 3 and argv[0] == "unit":
        check_unit(*argv[1:])
    elif len(argv) == 4 and argv[0] == "policy" and argv[1] in ("sidecar", "shared"):
        check_policy(argv[1], argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
