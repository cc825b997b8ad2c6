"""Real DVC: `dvc repro` runs the pipeline, a second one is a no-op, and data.dvc tracks the ingested data."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_project, venv_bin

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

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["lr"] = 0.001
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(root, "dvc", "status").stdout
    assert "train@security" in status and "ingest@security" not in status
