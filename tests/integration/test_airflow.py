"""The real Airflow 3 DAGs: integrity, then `airflow dags test` runs on a SQLite metadata DB."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_project, venv_bin

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def airflow_env(root: Path) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(root / "var" / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "MMOPS_HOME": str(root)}


def airflow(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("airflow"), *args], env=airflow_env(root), cwd=root, capture_output=True,
                          text=True, timeout=timeout)


def test_dag_integrity(tmp_path: Path) -> None:
    """No import errors; every DAG has tags, an owner, docs and at least two retries (Astronomer's checks)."""
    code = "import json\nfrom airflow.dag_processing.dagbag import DagBag\n" + f"bag = DagBag({str(REPO / 'dags')!r})" + """
print("RESULT" + json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {i: {"tags": sorted(d.tags), "retries": d.default_args.get("retries"), "owner": d.owner,
                 "doc": bool(d.doc_md), "tasks": [t.task_id for t in d.tasks]} for i, d in bag.dags.items()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=airflow_env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert result["errors"] == {}
    dags = result["dags"]
    for domain in ("medical", "security", "industrial"):
        assert dags[f"mmops_ingest_{domain}"]["tasks"] == ["ingest", "label"]
        assert dags[f"mmops_train_{domain}"]["tasks"] == ["validate", "build", "train", "evaluate", "package"]
    assert "mmops_monitor" in dags
    for dag_id, dag in dags.items():
        assert "mmops" in dag["tags"] and dag["owner"] == "mmops" and dag["doc"], dag_id
        assert dag["retries"] >= 2, dag_id


def test_ingest_then_train_dags_and_a_failing_gate(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"security": "security-faces"}, with_code=True)
    env = {**os.environ, "MMOPS_HOME": str(root)}
    subprocess.run([venv_bin("mmops"), "data", "pull", "--domain", "security"], env=env, check=True,
                   capture_output=True, timeout=120)
    migrate = airflow(root, "db", "migrate")
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    airflow(root, "dags", "reserialize")
    errors = airflow(root, "dags", "list-import-errors")
    assert "No data found" in errors.stdout + errors.stderr

    ingest = airflow(root, "dags", "test", "mmops_ingest_security")
    assert ingest.returncode == 0 and "state=success" in ingest.stdout + ingest.stderr, ingest.stderr[-3000:]
    db = sqlite3.connect(root / "var" / "catalog.db")
    assert db.execute("select count(*) from samples where domain='security'").fetchone()[0] == 200
    assert db.execute("select count(*) from labels").fetchone()[0] == 200

    # A labels file that loses a whole class: the gate must stop the training DAG before anything is built.
    labels = root / "landing" / "security" / "labels.csv"
    good = labels.read_text()
    labels.write_text("".join(ln for ln in good.splitlines(keepends=True) if "non_face" not in ln))
    db.execute("delete from labels")
    db.commit()
    assert airflow(root, "dags", "test", "mmops_ingest_security").returncode == 0
    failed = airflow(root, "dags", "test", "mmops_train_security")
    log = failed.stdout + failed.stderr
    assert "state=failed" in log and "expect_column_distinct_values_to_contain_set" in log
    assert db.execute("select count(*) from dataset_versions").fetchone()[0] == 0

    labels.write_text(good)
    assert airflow(root, "dags", "test", "mmops_ingest_security").returncode == 0
    trained = airflow(root, "dags", "test", "mmops_train_security", timeout=600)
    assert "state=success" in trained.stdout + trained.stderr, trained.stderr[-3000:]
    row = db.execute("select version, bento_tag from model_versions where domain='security'").fetchone()
    assert row[0] == 1 and row[1].startswith("mmops-security:")
