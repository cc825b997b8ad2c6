"""The scale-out configurations in deploy/ agree with the code they configure: every Airflow setting is an
option Airflow has, the pod templates are what KubernetesExecutor needs, and the Kubernetes manifest of the
service uses the port, probes, settings and secrets the service actually has (docs/scaling.md)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{path.name}: not NAME=value: {line!r}"
            pairs[name] = value
    return pairs


def _mmops_names() -> set[str]:
    """Every MMOPS_ variable the code reads."""
    names: set[str] = set()
    for path in [*(REPO / "mmops").rglob("*.py"), *(REPO / "dags").rglob("*.py")]:
        names |= set(re.findall(r"MMOPS_[A-Z][A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    from mmops.config import Settings

    return names | {f"MMOPS_{f.upper()}" for f in Settings.model_fields}


@pytest.mark.parametrize("name", ["celery.env", "kubernetes.env"])
def test_airflow_settings_are_options_airflow_has(name: str, tmp_path: Path) -> None:
    pairs = _env_file(DEPLOY / "airflow" / name)
    options = [n.removeprefix("AIRFLOW__").lower().split("__") for n in pairs if n.startswith("AIRFLOW__")]
    assert all(len(o) == 2 for o in options), options
    code = ("import json, sys\nfrom airflow.configuration import conf\n"
            f"print('RESULT', json.dumps([o for o in {options!r} if not conf.has_option(*o)]))")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # every name is a real option (no typo is silent); the celery provider (installed on Celery hosts, not
    # here) has two options without a default, which core Airflow does not know of until it is installed
    unknown_options = json.loads(out.stdout.split("RESULT", 1)[1])
    assert unknown_options == ([["celery", "result_backend"], ["celery_broker_transport_options", "visibility_timeout"]]
                               if name == "celery.env" else [])
    assert pairs["AIRFLOW__CORE__EXECUTOR"] in ("CeleryExecutor", "KubernetesExecutor")
    unknown = {n for n in pairs if n.startswith("MMOPS_")} - _mmops_names()
    assert not unknown, f"{name} sets MMOPS_ names the code never reads: {unknown}"
    assert not any(re.search(r"://[^/@\s]+:[^/@\s]+@", v) for v in pairs.values()), "a password in a config file"


@pytest.mark.parametrize("name", ["cpu-pod-template.yaml", "gpu-pod-template.yaml"])
def test_pod_templates_are_what_kubernetes_executor_runs(name: str) -> None:
    pod = yaml.safe_load((DEPLOY / "airflow" / name).read_text())
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    [base] = pod["spec"]["containers"]
    assert base["name"] == "base"  # the container KubernetesExecutor puts the task command in
    assert pod["spec"]["restartPolicy"] == "Never"  # Airflow retries, not the kubelet
    env = {e["name"]: e for e in base["env"]}
    assert set(env) <= _mmops_names()
    assert all("valueFrom" in env[n] for n in env if n in ("MMOPS_DATABASE_URL", "MMOPS_PSEUDONYM_KEY"))
    gpus = base["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == 1) == name.startswith("gpu")


def test_the_service_manifest_matches_the_service() -> None:
    from mmops.config import load_params
    from mmops.serving.middleware import OPEN_PATHS

    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "mmops-service.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "PersistentVolumeClaim"}
    dep = docs["Deployment"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    [svc] = pod["containers"]
    assert svc["ports"][0]["containerPort"] == load_params(REPO / "params.yaml").serve.port
    # the probes reach routes that answer without the bearer token, so they work with auth on
    probes = [svc[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert set(probes) <= OPEN_PATHS
    env = {e["name"]: e for e in svc["env"]}
    assert {n for n in env if n.startswith("MMOPS_")} <= _mmops_names()
    assert env["MMOPS_API_TOKEN"]["valueFrom"]["secretKeyRef"]  # from a Secret, never a literal
    assert env["MMOPS_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "value" not in env["MMOPS_API_TOKEN"]
    # in-flight requests finish before the pod is killed: the grace period exceeds the service's timeout
    service_src = (REPO / "mmops" / "serving" / "service.py").read_text()
    timeout = int(re.search(r"^TIMEOUT_S = (\d+)$", service_src, re.M)[1])
    assert 'traffic={"timeout": TIMEOUT_S}' in service_src
    assert pod["terminationGracePeriodSeconds"] > timeout
    logs = next(m for m in svc["volumeMounts"] if m["name"] == "prediction-logs")["mountPath"]
    assert logs == env["MMOPS_HOME"]["value"] + "/var/predictions"  # where Settings.prediction_log_dir points
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert docs["Service"]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
