#!/usr/bin/env python3
"""Offline checks of deploy/kubernetes (run by scripts/test.sh, so CI runs them).

1. Every Kubernetes resource validates against the Kubernetes schemas, strictly (no unknown
   field), with `kubernetes-validate` (PyPI; it bundles the schemas, so no network is needed).
2. The KEDA objects (no schema in (1)) against the fields and types KEDA documents for a
   ScaledObject, a TriggerAuthentication and its PostgreSQL trigger
   (keda.sh/docs/latest/reference/scaledobject-spec, keda.sh/docs/latest/scalers/postgresql).
3. What the README promises of the manifests: the kustomization lists every file; the worker
   Deployment probes /healthz and /readyz, runs as non-root on a read-only root filesystem with
   resource requests, and its terminationGracePeriodSeconds covers worker.shutdown_grace plus
   the 10 s hard stop; no replica count fights KEDA; Secrets are referenced, never inlined; the
   ScaledObject scales that Deployment from zero, calls the demand function through a
   TriggerAuthentication, and scales down slowly.

Usage: scripts/check-kubernetes.py [DIR]   (default deploy/kubernetes)
Without kubernetes-validate installed, (1) fails unless STUDIO_SKIP_KUBERNETES_VALIDATE=1.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

HARD_STOP_SECONDS = 10  # worker::HARD_STOP: after the grace, cancelled jobs get this long
MARGIN_SECONDS = 5

# KEDA's documented fields (ScaledObject spec; the postgresql trigger; TriggerAuthentication).
SCALED_OBJECT_SPEC = {
    "scaleTargetRef": dict,
    "pollingInterval": int,
    "cooldownPeriod": int,
    "initialCooldownPeriod": int,
    "idleReplicaCount": int,
    "minReplicaCount": int,
    "maxReplicaCount": int,
    "fallback": dict,
    "advanced": dict,
    "triggers": list,
}
SCALE_TARGET_REF = {"apiVersion": str, "kind": str, "name": str, "envSourceContainerName": str}
FALLBACK = {"failureThreshold": int, "replicas": int, "behavior": str}
ADVANCED = {"restoreToOriginalReplicaCount": bool, "horizontalPodAutoscalerConfig": dict,
            "scalingModifiers": dict}
HPA_CONFIG = {"name": str, "behavior": dict}
TRIGGER = {"type": str, "name": str, "metadata": dict, "authenticationRef": dict,
           "metricType": str, "useCachedMetrics": bool}
METRIC_TYPES = {"AverageValue", "Value", "Utilization"}
POSTGRESQL_METADATA = {"connectionFromEnv", "host", "port", "userName", "passwordFromEnv",
                       "dbName", "sslmode", "query", "targetQueryValue",
                       "activationTargetQueryValue"}
POSTGRESQL_FLOAT_METADATA = {"targetQueryValue", "activationTargetQueryValue"}
POSTGRESQL_AUTH_PARAMETERS = {"connection", "password", "host", "port", "userName", "dbName",
                              "sslmode"}
TRIGGER_AUTH_SPEC = {"secretTargetRef": list, "env": list, "podIdentity": dict,
                     "hashiCorpVault": dict, "azureKeyVault": dict, "awsSecretManager": dict,
                     "gcpSecretManager": dict, "configMapTargetRef": list,
                     "boundServiceAccountToken": list}
SECRET_TARGET_REF = {"parameter": str, "name": str, "key": str}

errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def typed(where: str, obj, fields: dict) -> None:
    """`obj` has only the documented `fields`, each of its documented type."""
    if not isinstance(obj, dict):
        fail(where, f"expected a mapping, got {type(obj).__name__}")
        return
    for key, value in obj.items():
        if key not in fields:
            fail(where, f"unknown field {key!r} (KEDA documents {sorted(fields)})")
        elif fields[key] is int and (isinstance(value, bool) or not isinstance(value, int)):
            fail(where, f"{key} must be an integer, got {value!r}")
        elif not isinstance(value, fields[key]):
            fail(where, f"{key} must be a {fields[key].__name__}, got {value!r}")


def seconds(text: str) -> int:
    """A humantime duration as the worker parses it (the forms used here: 300s, 5m, 1h)."""
    total = 0
    for number, unit in re.findall(r"(\d+)\s*(ms|s|m|min|h)", text):
        total += int(number) * {"ms": 0, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return total


def load(directory: Path) -> dict[str, list[dict]]:
    docs = {}
    for path in sorted(directory.glob("*.yaml")):
        with path.open() as f:
            docs[path.name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return docs


def check_schemas(directory: Path, docs: dict[str, list[dict]]) -> None:
    native = [name for name, ds in docs.items()
              if all("keda.sh" not in d.get("apiVersion", "")
                     and d.get("kind") != "Kustomization" for d in ds)]
    tool = shutil.which("kubernetes-validate")
    if tool is None:
        if os.environ.get("STUDIO_SKIP_KUBERNETES_VALIDATE") == "1":
            print("check-kubernetes: kubernetes-validate not installed: schema check SKIPPED "
                  "(STUDIO_SKIP_KUBERNETES_VALIDATE=1)", file=sys.stderr)
            return
        fail("kubernetes-validate", "not installed: `pip install kubernetes-validate` "
             "(or STUDIO_SKIP_KUBERNETES_VALIDATE=1 to skip the schema check)")
        return
    result = subprocess.run([tool, "--strict", "--quiet", *native], cwd=directory,
                            capture_output=True, text=True)
    if result.returncode != 0:
        fail("kubernetes-validate", (result.stdout + result.stderr).strip())


def by_kind(docs: dict[str, list[dict]]) -> dict[tuple[str, str], tuple[str, dict]]:
    out = {}
    for name, ds in docs.items():
        for d in ds:
            out[(d.get("kind"), d.get("metadata", {}).get("name"))] = (name, d)
    return out


def check_kustomization(directory: Path, docs: dict[str, list[dict]]) -> None:
    kustomization = docs.get("kustomization.yaml", [{}])[0]
    listed = set(kustomization.get("resources", []))
    for name in docs:
        if name != "kustomization.yaml" and name not in listed:
            fail("kustomization.yaml", f"{name} is not listed in resources")
    for name in listed:
        if not (directory / name).exists():
            fail("kustomization.yaml", f"lists {name}, which does not exist")


def check_no_inline_secrets(docs: dict[str, list[dict]]) -> None:
    for name, ds in docs.items():
        for d in ds:
            if d.get("kind") == "Secret":
                fail(name, "a Secret is inlined: reference one created out of band")
        text = yaml.safe_dump_all(ds)
        if re.search(r"postgres(ql)?://[^@\s]*:[^@\s]*@", text):
            fail(name, "a connection string with a password is inlined")


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec.get("containers", [])


def check_pod_security(where: str, pod_spec: dict) -> None:
    pod_ctx = pod_spec.get("securityContext", {})
    if pod_ctx.get("runAsNonRoot") is not True:
        fail(where, "securityContext.runAsNonRoot must be true")
    for c in containers(pod_spec):
        ctx = c.get("securityContext", {})
        if ctx.get("readOnlyRootFilesystem") is not True:
            fail(where, f"container {c['name']}: readOnlyRootFilesystem must be true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            fail(where, f"container {c['name']}: allowPrivilegeEscalation must be false")
        if not c.get("resources", {}).get("requests"):
            fail(where, f"container {c['name']}: no resource requests")
        for env in c.get("env", []):
            if re.search(r"PASSWORD|SECRET|DATABASE_URL", env["name"]) and "value" in env:
                fail(where, f"container {c['name']}: {env['name']} inlined; use secretKeyRef")


def check_worker(directory: Path, objects) -> tuple[str, dict]:
    name, worker = objects.get(("Deployment", "studio-worker"), (None, None))
    if worker is None:
        fail("worker", "no Deployment named studio-worker")
        return "", {}
    spec = worker["spec"]
    if "replicas" in spec:
        fail(name, "spec.replicas is set: KEDA owns the worker's replica count")
    pod = spec["template"]["spec"]
    check_pod_security(name, pod)
    main = next(c for c in pod["containers"] if c["name"] == "worker")
    if main.get("args") != ["run"]:
        fail(name, "the worker container must run `run`")
    if main.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        fail(name, "livenessProbe must GET /healthz")
    if main.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fail(name, "readinessProbe must GET /readyz")
    config = tomllib.loads((directory / "worker.toml").read_text())
    grace = seconds(config.get("worker", {}).get("shutdown_grace", "25s"))
    needed = grace + HARD_STOP_SECONDS + MARGIN_SECONDS
    termination = pod.get("terminationGracePeriodSeconds", 30)
    if termination < needed:
        fail(name, f"terminationGracePeriodSeconds {termination} < worker.shutdown_grace "
                   f"{grace} s + hard stop {HARD_STOP_SECONDS} s + margin {MARGIN_SECONDS} s: "
                   "Kubernetes would SIGKILL a draining worker")
    listen = config.get("http", {}).get("listen", "127.0.0.1:9090")
    if listen.startswith("127.") or listen.startswith("localhost"):
        fail("worker.toml", f"http.listen = {listen!r}: the kubelet's probes cannot reach it")
    return name, config


def check_keda(objects, worker_config: dict) -> None:
    scaled = [(n, d) for (k, _), (n, d) in objects.items() if k == "ScaledObject"]
    if len(scaled) != 1:
        fail("keda", f"expected one ScaledObject, found {len(scaled)}")
        return
    name, so = scaled[0]
    if so.get("apiVersion") != "keda.sh/v1alpha1":
        fail(name, "apiVersion must be keda.sh/v1alpha1")
    spec = so.get("spec", {})
    typed(f"{name} spec", spec, SCALED_OBJECT_SPEC)
    typed(f"{name} spec.scaleTargetRef", spec.get("scaleTargetRef", {}), SCALE_TARGET_REF)
    if "fallback" in spec:
        typed(f"{name} spec.fallback", spec["fallback"], FALLBACK)
    advanced = spec.get("advanced", {})
    typed(f"{name} spec.advanced", advanced, ADVANCED)
    hpa = advanced.get("horizontalPodAutoscalerConfig", {})
    typed(f"{name} spec.advanced.horizontalPodAutoscalerConfig", hpa, HPA_CONFIG)
    target = spec.get("scaleTargetRef", {})
    if target.get("kind", "Deployment") != "Deployment" or target.get("name") != "studio-worker":
        fail(name, "scaleTargetRef must name the studio-worker Deployment")
    if spec.get("minReplicaCount") != 0:
        fail(name, "minReplicaCount must be 0 (scale to zero)")
    if not spec.get("maxReplicaCount", 100) >= 1:
        fail(name, "maxReplicaCount must be at least 1")
    scale_down = hpa.get("behavior", {}).get("scaleDown", {})
    if scale_down.get("stabilizationWindowSeconds", 0) < 60:
        fail(name, "scaleDown.stabilizationWindowSeconds must be at least 60 (no flapping "
                   "scale-in of draining pods)")
    triggers = spec.get("triggers", [])
    if len(triggers) != 1:
        fail(name, "expected exactly one trigger")
    for i, trigger in enumerate(triggers):
        where = f"{name} triggers[{i}]"
        typed(where, trigger, TRIGGER)
        if trigger.get("type") != "postgresql":
            fail(where, "type must be postgresql")
        if trigger.get("metricType", "AverageValue") not in METRIC_TYPES:
            fail(where, f"metricType must be one of {sorted(METRIC_TYPES)}")
        metadata = trigger.get("metadata", {})
        for key, value in metadata.items():
            if key not in POSTGRESQL_METADATA:
                fail(where, f"metadata.{key} is not a documented postgresql trigger field")
            if not isinstance(value, str):
                fail(where, f"metadata.{key} must be a string (KEDA's metadata is a string map)")
            elif key in POSTGRESQL_FLOAT_METADATA:
                try:
                    float(value)
                except ValueError:
                    fail(where, f"metadata.{key} = {value!r} is not a number")
        for required in ("query", "targetQueryValue"):
            if required not in metadata:
                fail(where, f"metadata.{required} is required")
        if "activationTargetQueryValue" not in metadata:
            fail(where, "metadata.activationTargetQueryValue must be set (wake from zero)")
        if "passwordFromEnv" in metadata or "connectionFromEnv" in metadata:
            fail(where, "connect through the TriggerAuthentication, not the worker's env")
        query = metadata.get("query", "")
        call = re.fullmatch(
            r"\s*select\s+public\.studio_autoscale_demand\(\s*array\[([^\]]*)\]\s*,\s*(\d+)\s*,"
            r"\s*interval\s+'[^']+'\s*\)\s*", query, re.IGNORECASE)
        if not call:
            fail(where, "the query must be `select public.studio_autoscale_demand(array[...], "
                        "<per_replica>, interval '...')`")
        else:
            kinds = {k.strip().strip("'") for k in call.group(1).split(",") if k.strip()}
            configured = set(worker_config.get("kinds", {}))
            if kinds != configured:
                fail(where, f"the query asks about kinds {sorted(kinds)}, the workers serve "
                            f"{sorted(configured)}")
            concurrency = worker_config.get("worker", {}).get("concurrency", 16)
            if int(call.group(2)) != concurrency:
                fail(where, f"per_replica {call.group(2)} differs from worker.concurrency "
                            f"{concurrency}")
            if metadata.get("targetQueryValue") != "1":
                fail(where, "the query returns replicas: targetQueryValue must be \"1\"")
        auth = trigger.get("authenticationRef", {})
        typed(f"{where} authenticationRef", auth, {"name": str, "kind": str})
        ref = objects.get((auth.get("kind", "TriggerAuthentication"), auth.get("name")))
        if ref is None:
            fail(where, f"authenticationRef {auth.get('name')!r} names no TriggerAuthentication")
            continue
        ta_name, ta = ref
        typed(f"{ta_name} spec", ta.get("spec", {}), TRIGGER_AUTH_SPEC)
        refs = ta.get("spec", {}).get("secretTargetRef", [])
        if not refs:
            fail(ta_name, "no secretTargetRef: the connection must come from a Secret")
        for j, secret_ref in enumerate(refs):
            typed(f"{ta_name} secretTargetRef[{j}]", secret_ref, SECRET_TARGET_REF)
            if secret_ref.get("parameter") not in POSTGRESQL_AUTH_PARAMETERS:
                fail(ta_name, f"parameter {secret_ref.get('parameter')!r} is not one the "
                              "postgresql scaler reads")


def main() -> int:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/kubernetes")
    docs = load(directory)
    check_schemas(directory, docs)
    check_kustomization(directory, docs)
    check_no_inline_secrets(docs)
    objects = by_kind(docs)
    for (kind, obj_name), (file, d) in objects.items():
        if kind == "Deployment" and obj_name != "studio-worker":
            check_pod_security(file, d["spec"]["template"]["spec"])
        if kind == "Job":
            check_pod_security(file, d["spec"]["template"]["spec"])
    _, worker_config = check_worker(directory, objects)
    check_keda(objects, worker_config)
    if errors:
        for e in errors:
            print(f"check-kubernetes: {e}", file=sys.stderr)
        return 1
    print(f"check-kubernetes: {directory}: {sum(len(d) for d in docs.values())} objects OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
