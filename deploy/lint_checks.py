#!/usr/bin/env python3
"""Repository-specific checks of the container and Kubernetes files.

Run by deploy/lint.sh (which installs PyYAML); usable alone:
    python3 deploy/lint_checks.py [--no-hadolint-fallback]

Checks what generic linters cannot know about this service: YAML parses
(duplicate keys are errors), kustomization references exist, the probes,
sandbox settings, grace period, labels and ports agree with each other and
with the service's documented behaviour, the Dockerfile basics (also a
fallback when hadolint is unavailable), .dockerignore, the seccomp profile
and the runtime mappings copy. Prints one line per problem; exits 1 if any.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
K8S = DEPLOY / "kubernetes"
NAMESPACE = "lambda"
APP_IMAGE = "lambda-microservice"

problems: list[str] = []
notes: list[str] = []


def problem(where: Path | str, message: str) -> None:
    where = where.relative_to(ROOT) if isinstance(where, Path) else where
    problems.append(f"{where}: {message}")


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (YAML allows them and
    silently keeps the last one, which hides mistakes in manifests)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_all_yaml() -> dict[Path, list[dict]]:
    docs: dict[Path, list[dict]] = {}
    files = sorted(list(DEPLOY.rglob("*.yaml")) + list(DEPLOY.rglob("*.yml")))
    if not files:
        problem(DEPLOY, "no YAML files found")
    for path in files:
        try:
            loaded = [d for d in yaml.load_all(path.read_text(), Loader=UniqueKeyLoader) if d is not None]
        except yaml.YAMLError as error:
            problem(path, f"YAML does not parse: {error}")
            continue
        for doc in loaded:
            if not isinstance(doc, dict):
                problem(path, "a document is not a mapping")
            elif "kind" not in doc or "apiVersion" not in doc:
                problem(path, "a document has no kind/apiVersion")
        docs[path] = [d for d in loaded if isinstance(d, dict)]
    return docs


def objects(docs, kind: str | None = None, under: Path | None = None):
    for path, items in docs.items():
        if under is not None and under not in path.parents:
            continue
        for doc in items:
            if kind is None or doc.get("kind") == kind:
                yield path, doc


# --------------------------------------------------------------------------
# kustomize
# --------------------------------------------------------------------------
def check_kustomizations(docs) -> None:
    referenced: set[Path] = set()
    for path, doc in objects(docs):
        if doc.get("kind") not in ("Kustomization", "Component"):
            continue
        base = path.parent
        for field in ("resources", "components", "bases"):
            for entry in doc.get(field) or []:
                if "://" in entry or entry.startswith("github.com/"):
                    continue
                target = (base / entry).resolve()
                if not target.exists():
                    problem(path, f"{field} entry {entry!r} does not exist")
                    continue
                if target.is_dir():
                    if not any((target / n).exists() for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
                        problem(path, f"{field} entry {entry!r} is a directory without a kustomization")
                    elif base in target.parents or target == base:
                        pass
                    elif target in base.parents:
                        problem(path, f"{field} entry {entry!r} is an ancestor directory: kustomize refuses that (cycle)")
                else:
                    referenced.add(target)
        for patch in doc.get("patches") or []:
            if isinstance(patch, dict) and "path" in patch and not (base / patch["path"]).exists():
                problem(path, f"patch file {patch['path']!r} does not exist")
        if doc.get("kind") == "Kustomization" and path.parent == K8S:
            # The default kustomization must not deploy example or CRD files.
            for entry in doc.get("resources") or []:
                if "example" in entry or entry == "servicemonitor.yaml":
                    problem(path, f"{entry!r} must not be in the default kustomization")
    # Every plain manifest in the base directory is either referenced or a
    # documented optional file.
    optional = {"secret.example.yaml", "servicemonitor.yaml", "kustomization.yaml"}
    for manifest in sorted(K8S.glob("*.yaml")):
        if manifest.name not in optional and manifest.resolve() not in referenced:
            problem(manifest, "not listed in deploy/kubernetes/kustomization.yaml")


# --------------------------------------------------------------------------
# The Deployment and what must agree with it
# --------------------------------------------------------------------------
def check_workloads(docs) -> None:
    configmaps = {d["metadata"]["name"]: d for _, d in objects(docs, "ConfigMap", K8S)}
    config = configmaps.get("lambda-microservice-config", {}).get("data", {})
    deployments = [(p, d) for p, d in objects(docs, "Deployment") if d["metadata"]["name"] == "lambda-microservice"]
    if len(deployments) != 1:
        problem(K8S, f"expected one Deployment lambda-microservice, found {len(deployments)}")
        return
    path, deployment = deployments[0]
    spec = deployment["spec"]
    template = spec["template"]
    pod = template["spec"]
    labels = template["metadata"].get("labels", {})
    selector = spec["selector"]["matchLabels"]
    if not all(labels.get(k) == v for k, v in selector.items()):
        problem(path, "selector.matchLabels do not match the pod template labels")
    if spec.get("replicas", 1) < 3:
        problem(path, "fewer than 3 replicas")

    containers = pod["containers"]
    app = containers[0]
    ports = {p["name"]: p["containerPort"] for p in app.get("ports", [])}
    if ports.get("http") != 8080:
        problem(path, "container port `http` must be 8080 (BIND_ADDR)")
    if config.get("BIND_ADDR") != "0.0.0.0:8080":
        problem(path, "ConfigMap BIND_ADDR must be 0.0.0.0:8080 in a container")

    # Probes: readiness on /health, liveness NOT on /health (503 on DB loss).
    readiness = app.get("readinessProbe", {})
    liveness = app.get("livenessProbe", {})
    if readiness.get("httpGet", {}).get("path") != "/health":
        problem(path, "readinessProbe must be httpGet /health")
    if liveness.get("httpGet", {}).get("path") == "/health":
        problem(path, "livenessProbe must not use /health: it is 503 while the database is down")
    if not liveness:
        problem(path, "no livenessProbe")
    if not app.get("startupProbe"):
        problem(path, "no startupProbe")

    # Sandbox settings: never privileged, no capabilities, bwrap's needs met.
    security = app.get("securityContext", {})
    if security.get("privileged"):
        problem(path, "the container must not be privileged")
    if security.get("allowPrivilegeEscalation") is not False:
        problem(path, "allowPrivilegeEscalation must be false (bwrap is not setuid)")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problem(path, "capabilities.drop must be [ALL]")
    if security.get("capabilities", {}).get("add"):
        problem(path, "no capabilities may be added")
    if security.get("seccompProfile", {}).get("type") not in ("Unconfined", "Localhost"):
        problem(path, "seccompProfile must be Unconfined or Localhost: RuntimeDefault blocks bubblewrap")
    if security.get("appArmorProfile", {}).get("type") not in ("Unconfined", "Localhost"):
        problem(path, "appArmorProfile must be Unconfined or Localhost: the runtime default denies mount")
    if security.get("procMount") == "Unmasked" and pod.get("hostUsers") is not False:
        problem(path, "procMount: Unmasked is only accepted with hostUsers: false")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problem(path, "pod must set runAsNonRoot: true")

    # Volumes: DATA_DIR and /tmp writable with a read-only root.
    mounts = {m["mountPath"]: m["name"] for m in app.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount_path in (config.get("DATA_DIR", "/var/lib/lambda"), "/tmp"):
        name = mounts.get(mount_path)
        if name is None or "emptyDir" not in volumes.get(name, {}):
            problem(path, f"{mount_path} must be an emptyDir mount")
    if config.get("DATA_DIR", "").startswith("/tmp"):
        problem(path, "DATA_DIR must not be under /tmp (the sandbox mounts its own /tmp)")
    mappings_file = config.get("RUNTIME_MAPPINGS_FILE", "")
    if not any(mappings_file.startswith(m.rstrip("/") + "/") for m in mounts):
        problem(path, f"RUNTIME_MAPPINGS_FILE {mappings_file} is not under a mounted volume")
    env = {e["name"]: e.get("value") for e in app.get("env", [])}
    for variable in ("DATABASE_URL", "JWT_SECRET"):
        if variable in env:
            problem(path, f"{variable} must come from a file ({variable}_FILE), not a plain env value")
        file_value = env.get(f"{variable}_FILE", "")
        if file_value and not any(file_value.startswith(m.rstrip("/") + "/") for m in mounts):
            problem(path, f"{variable}_FILE {file_value} is not under a mounted volume")

    # Grace period: preStop + execute timeout cap + time to flush.
    pre_stop = app.get("lifecycle", {}).get("preStop", {})
    sleep_seconds = 0
    if "sleep" in pre_stop:
        sleep_seconds = int(pre_stop["sleep"]["seconds"])
    elif "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        if command[:1] == ["sleep"] and len(command) == 2:
            sleep_seconds = int(command[1])
    if sleep_seconds == 0:
        problem(path, "a preStop sleep is needed so endpoints are removed before SIGTERM")
    timeout = int(config.get("RUNTIME_TIMEOUT_SECONDS", 30))
    grace = int(pod.get("terminationGracePeriodSeconds", 30))
    if grace < sleep_seconds + timeout + 5:
        problem(path, f"terminationGracePeriodSeconds {grace} < preStop {sleep_seconds} + RUNTIME_TIMEOUT_SECONDS {timeout} + 5")

    # Resources: room for the service plus the blank workers at 256 MiB each.
    limits = app.get("resources", {}).get("limits", {})
    requests = app.get("resources", {}).get("requests", {})
    if "memory" not in limits or "memory" not in requests or "cpu" not in requests:
        problem(path, "memory requests/limits and cpu requests are required (HPA uses cpu requests)")
    else:
        worker_mib = int(config.get("WORKER_MEMORY_MB", 256))
        blank = int(config.get("WORKERS_PER_LANGUAGE", 2))
        need_mib = 256 + 2 * blank * worker_mib  # nodejs + python blank workers
        if to_mib(limits["memory"]) < need_mib:
            problem(path, f"memory limit {limits['memory']} is below the service plus blank workers ({need_mib} MiB)")

    # Image name used everywhere is the one the Dockerfile builds.
    for p, doc in objects(docs):
        for c in pod_containers(doc):
            image = c.get("image", "")
            if image.split(":")[0].split("@")[0].endswith(APP_IMAGE) and not re.search(r"[:@]", image):
                problem(p, f"image {image!r} has no tag or digest")
            if image.endswith(":latest"):
                problem(p, f"image {image!r} uses :latest")

    # Service, PDB, HPA, NetworkPolicy select these pods and name real ports.
    for p, service in objects(docs, "Service", K8S):
        if service["metadata"]["name"] != "lambda-microservice":
            continue
        if not all(labels.get(k) == v for k, v in service["spec"]["selector"].items()):
            problem(p, "Service selector does not match the Deployment's pods")
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            problem(p, "Service must be ClusterIP")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in ports:
                problem(p, f"Service targetPort {target!r} is not a container port name")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        found = list(objects(docs, kind, K8S))
        if not found:
            problem(K8S, f"no {kind}")
        for p, doc in found:
            sel = (doc["spec"].get("selector") or doc["spec"].get("podSelector") or {}).get("matchLabels", {})
            if not all(labels.get(k) == v for k, v in sel.items()):
                problem(p, f"{kind} selector does not match the Deployment's pods")
    for p, hpa in objects(docs, "HorizontalPodAutoscaler", K8S):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", "lambda-microservice"):
            problem(p, "HPA does not target the Deployment")
        if hpa["spec"].get("minReplicas", 1) < 2:
            problem(p, "HPA minReplicas below 2 leaves no replica during a rollout")
    for p, policy in objects(docs, "NetworkPolicy", K8S):
        ingress_ports = {port.get("port") for rule in policy["spec"].get("ingress", []) for port in rule.get("ports", [])}
        if ingress_ports != {8080}:
            problem(p, f"ingress must allow only port 8080, allows {sorted(map(str, ingress_ports))}")
        egress_ports = {port.get("port") for rule in policy["spec"].get("egress", []) for port in rule.get("ports", [])}
        if egress_ports != {5432, 53}:
            problem(p, f"egress must allow only PostgreSQL (5432) and DNS (53), allows {sorted(map(str, egress_ports))}")
        if set(policy["spec"].get("policyTypes", [])) != {"Ingress", "Egress"}:
            problem(p, "policyTypes must be Ingress and Egress")

    # Namespaces: everything namespaced lives in `lambda`.
    for p, doc in objects(docs):
        if doc.get("kind") in ("Kustomization", "Component", "Namespace"):
            continue
        ns = doc.get("metadata", {}).get("namespace")
        if ns is not None and ns != NAMESPACE:
            problem(p, f"{doc['kind']} {doc['metadata'].get('name')} is in namespace {ns!r}, not {NAMESPACE!r}")

    # Runtime mappings copy equals the repository's file.
    mapping_cm = configmaps.get("lambda-microservice-runtime-mappings", {}).get("data", {})
    shipped = ROOT / "config" / "runtime_mappings.json"
    try:
        copy = json.loads(mapping_cm.get("runtime_mappings.json", ""))
    except ValueError as error:
        problem(K8S / "configmap.yaml", f"runtime_mappings.json is not valid JSON: {error}")
    else:
        if shipped.exists() and json.loads(shipped.read_text()) != copy:
            problem(K8S / "configmap.yaml", "runtime_mappings.json differs from config/runtime_mappings.json")

    # No secret material in the ConfigMap; the example Secret holds placeholders only.
    for key in config:
        if re.search(r"SECRET|PASSWORD|DATABASE_URL|TOKEN", key) and not key.endswith("_FILE"):
            problem(K8S / "configmap.yaml", f"{key} looks secret: put it in the Secret")
    for p, secret in objects(docs, "Secret", K8S):
        if "postgres-example" in p.parts:
            continue
        for key, value in (secret.get("stringData") or {}).items():
            if "REPLACE_ME" not in str(value):
                problem(p, f"example Secret value {key} must be a REPLACE_ME placeholder")
        if secret.get("data"):
            problem(p, "example Secret must use stringData placeholders, not data")


def pod_containers(doc: dict):
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec") or {}
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def to_mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity))
    if not match:
        return 0.0
    return float(match.group(1)) * (units.get(match.group(2), 1 / 2**20) if match.group(2) else 1 / 2**20)


# --------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def check_dockerfile() -> None:
    path = ROOT / "Dockerfile"
    if not path.exists():
        problem("Dockerfile", "missing")
        return
    instructions = dockerfile_instructions(path.read_text())
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args.setdefault(name.strip(), value.strip())
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    stages = set()
    if len(froms) < 2:
        problem(path, "must be multi-stage (a builder and a runtime stage)")
    for rest in froms:
        parts = rest.split()
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
        if image in stages:
            pass
        elif ":" not in image.split("/")[-1] and "@" not in image:
            problem(path, f"base image {image!r} is not pinned to a tag or digest")
        elif image.endswith(":latest"):
            problem(path, f"base image {image!r} uses :latest")
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    images = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), r.split()[0]) for r in froms]
    if not any(i.startswith("rust:") and "bookworm" in i for i in images):
        problem(path, "the builder must use the official rust:*-bookworm image")
    if not images or not images[-1].startswith("debian:bookworm-slim"):
        problem(path, "the runtime stage must be debian:bookworm-slim")
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    keywords = [k for k, _ in final]
    user = [rest for k, rest in final if k == "USER"]
    if not user:
        problem(path, "the runtime stage sets no USER")
    elif user[-1].split(":")[0] in ("root", "0"):
        problem(path, "the runtime stage runs as root")
    if "HEALTHCHECK" not in keywords:
        problem(path, "no HEALTHCHECK")
    if not any(k == "EXPOSE" and "8080" in rest for k, rest in final):
        problem(path, "EXPOSE 8080 missing")
    text = path.read_text()
    for needle, why in (
        ("cargo build --release --locked -p lambda-server", "the build command"),
        ("--mount=type=cache", "a BuildKit cache mount for dependencies"),
        ("DATA_DIR=/var/lib/lambda", "DATA_DIR"),
        ("BIND_ADDR=0.0.0.0:8080", "BIND_ADDR"),
        ("bubblewrap", "bubblewrap"),
        ("nodejs", "nodejs"),
        ("python3", "python3"),
        ("tini", "tini"),
        ("WITH_RUST", "the build arg to leave the Rust toolchain out"),
    ):
        if needle not in text:
            problem(path, f"missing {why} ({needle!r})")
    if re.search(r"\bcurl\b", " ".join(rest for k, rest in final if k in ("RUN", "HEALTHCHECK"))):
        problem(path, "the runtime image should not need curl")

    # Every local COPY source must survive .dockerignore.
    ignore_path = ROOT / ".dockerignore"
    if not ignore_path.exists():
        problem(".dockerignore", "missing")
        return
    patterns = [l.strip() for l in ignore_path.read_text().splitlines() if l.strip() and not l.startswith("#")]
    for required in ("target", "data", ".git"):
        if not any(p.rstrip("/") in (required, f"/{required}", f"**/{required}") for p in patterns):
            problem(ignore_path, f"does not exclude {required}/")

    def to_regex(pattern: str) -> re.Pattern:
        # Docker's rules (Go filepath.Match plus `**`): `*` and `?` stop at
        # `/`, `**` crosses directories.
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
        return re.compile(out + r"\Z")

    rules = []
    for pattern in patterns:
        negate = pattern.startswith("!")
        rules.append((negate, to_regex((pattern[1:] if negate else pattern).strip("/"))))

    def ignored(rel: str) -> bool:
        # A path is excluded when a pattern matches it or one of its parents;
        # the last matching pattern wins.
        parts = rel.strip("/").split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        verdict = False
        for negate, regex in rules:
            if any(regex.match(c) for c in candidates):
                verdict = not negate
        return verdict

    for keyword, rest in instructions:
        if keyword != "COPY" or "--from=" in rest:
            continue
        sources = [s for s in rest.split() if not s.startswith("--")][:-1]
        for source in sources:
            if source in (".", "./"):
                continue
            if not (ROOT / source).exists():
                problem(path, f"COPY source {source!r} does not exist")
            elif ignored(source):
                problem(path, f"COPY source {source!r} is excluded by .dockerignore")
    for needed in (
        "Cargo.toml",
        "Cargo.lock",
        "crates/server/Cargo.toml",
        "crates/server/src/main.rs",
        "runtimes/nodejs/worker.js",
        "runtimes/rust/deps/Cargo.lock",
        "config/runtime_mappings.json",
        *workspace_manifests(),
    ):
        if ignored(needed):
            problem(ignore_path, f"excludes {needed}, which the build needs")


def workspace_manifests() -> list[str]:
    """Cargo.toml of every workspace member: cargo needs them all to load
    the workspace, even to build one package."""
    manifest = ROOT / "Cargo.toml"
    if not manifest.exists():
        return []
    match = re.search(r"^members\s*=\s*\[(.*?)\]", manifest.read_text(), re.S | re.M)
    out = []
    for member in re.findall(r'"([^"]+)"', match.group(1) if match else ""):
        for directory in sorted(ROOT.glob(member)):
            if (directory / "Cargo.toml").exists():
                out.append(str((directory / "Cargo.toml").relative_to(ROOT)))
    return out


# --------------------------------------------------------------------------
# seccomp profile
# --------------------------------------------------------------------------
def check_seccomp() -> None:
    for path in sorted((DEPLOY / "seccomp").glob("*.json")):
        try:
            profile = json.loads(path.read_text())
        except ValueError as error:
            problem(path, f"invalid JSON: {error}")
            continue
        if profile.get("defaultAction") not in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"):
            problem(path, "defaultAction must be SCMP_ACT_ALLOW or SCMP_ACT_ERRNO")
        blocked = set()
        for rule in profile.get("syscalls", []):
            if not rule.get("names") or not str(rule.get("action", "")).startswith("SCMP_ACT_"):
                problem(path, "every rule needs names and an SCMP_ACT_* action")
            if rule.get("action") != "SCMP_ACT_ALLOW":
                blocked.update(rule.get("names", []))
        needed = {"unshare", "clone", "mount", "umount2", "pivot_root", "sethostname", "execve", "wait4"}
        if profile.get("defaultAction") == "SCMP_ACT_ALLOW" and needed & blocked:
            problem(path, f"blocks syscalls bubblewrap needs: {sorted(needed & blocked)}")


def main() -> int:
    docs = load_all_yaml()
    check_kustomizations(docs)
    check_workloads(docs)
    check_dockerfile()
    check_seccomp()
    for line in problems:
        print(f"  FAIL {line}")
    n_files = len(docs)
    n_docs = sum(len(v) for v in docs.values())
    print(f"  {n_files} YAML files, {n_docs} documents parsed; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
