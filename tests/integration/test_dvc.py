"""Real DVC: `dvc repro` runs the pipeline, a second one is a no-op, and data.dvc tracks the ingested data."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import HANG_S, make_project, venv_bin

pytestmark = [pytest.mark.dvc, pytest.mark.slow]


def run(root: Path, *cmd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMOPS_HOME": str(root),
           "PATH": f"{Path(venv_bin('dvc')).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(list(cmd), cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: {out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


def test_repro_then_noop_then_param_change(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"security": "security-faces"}, with_code=True)
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    first = run(root, "dvc", "repro")
    for stage in ("pull", "ingest", "label", "validate", "build", "train", "evaluate", "package", "monitor"):
        assert f"Running stage '{stage}@security'" in first.stdout
    metrics = json.loads((root / "artifacts" / "security" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5
    assert (root / "dvc.lock").exists()

    second = run(root, "dvc", "repro")
    assert "Running stage" not in second.stdout
    assert "up to date" in run(root, "dvc", "status").stdout

    run(root, "dvc", "add", "data")
    assert "up to date" in run(root, "dvc", "status", "data.dvc").stdout

    # Another machine reproduces the result from git and a DVC remote (a local folder here; S3, GCS or Azure
    # the same way, docs/scaling.md): clone, `dvc pull`, and the data, dataset and model are the same bytes.
    remote = tmp_path / "remote"
    run(root, "dvc", "remote", "add", "-d", "store", str(remote))
    pushed = run(root, "dvc", "push")
    assert "pushed" in pushed.stdout and any(remote.rglob("*"))
    ignore = root / ".gitignore"  # dvc add wrote /data into it; the catalog and settings stay local too
    ignore.write_text(ignore.read_text() + "/var/\n.env\n")
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=mmops", "-c", "user.email=ci@mmops.example", "commit", "-qm", "result")
    clone = tmp_path / "elsewhere"
    run(tmp_path, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "data").exists() and not (clone / "artifacts" / "security" / "model").exists()
    run(clone, "dvc", "pull")
    for rel in ("artifacts/security/model/model.safetensors", "artifacts/security/dataset/manifest.json",
                "artifacts/security/reference_sketch.json"):
        assert (clone / rel).read_bytes() == (root / rel).read_bytes(), rel
    blobs = sorted(p.relative_to(root / "data").as_posix() for p in (root / "data").rglob("*") if p.is_file())
    assert blobs and blobs == sorted(p.relative_to(clone / "data").as_posix()
                                     for p in (clone / "data").rglob("*") if p.is_file())
    assert "up to date" in run(clone, "dvc", "status").stdout  # nothing to re-run: the same result

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["lr"] = 0.001
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(root, "dvc", "status").stdout
    assert "train@security" in status and "ingest@security" not in status

    # code that training runs changed (a modality's tensor conversion, say): train reruns, not a stale model
    run(root, "git", "checkout", "-q", "--", "params.yaml")
    assert "train@security" not in run(root, "dvc", "status").stdout
    modality = root / "mmops" / "modalities" / "image.py"  # security's cameras
    modality.write_text(modality.read_text() + "\n# edited\n")
    assert "train@security" in run(root, "dvc", "status").stdout


def test_a_failing_gate_stops_dvc_repro(tmp_path: Path) -> None:
    """A reviewer tightens the committed suite; the data no longer passes: `dvc repro` stops at validate."""
    root = make_project(tmp_path / "proj", {"security": "security-faces"}, with_code=True)
    run(root, "git", "init", "-q")
    run(root, "dvc", "init", "-q")
    suites = root / "expectations" / "security.yaml"
    doc = yaml.safe_load(suites.read_text())
    doc["suites"]["labels"].append({"expectation": "ExpectTableRowCountToBeBetween",
                                    "kwargs": {"min_value": 100_000}, "severity": "critical"})
    suites.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "MMOPS_HOME": str(root),
           "PATH": f"{Path(venv_bin('dvc')).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=HANG_S)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Running stage 'validate@security'" in log and "Running stage 'build@security'" not in log
    assert "expect_table_row_count_to_be_between" in log and "gate failed" in log
    assert not (root / "artifacts" / "security" / "dataset").exists()
    report = json.loads((root / "artifacts" / "security" / "validation.json").read_text())
    assert report["success"] is False and (root / "artifacts" / "security" / report["data_docs"]).exists()
