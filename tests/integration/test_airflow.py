"""The real Airflow 3 DAGs: integrity, then `airflow dags test` runs on a SQLite metadata DB."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import HANG_S, REPO, catalog_sql, make_project, venv_bin

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
                 "doc": bool(d.doc_md), "tasks": [t.task_id for t in d.tasks],
                 "params": {k: {"default": d.params.get_param(k).value,
                                "description": d.params.get_param(k).description} for k in d.params},
                 "task_args": {t.task_id: {"backoff": t.retry_exponential_backoff, "pool": t.pool,
                                           "timeout_s": t.execution_timeout and t.execution_timeout.total_seconds(),
                                           "queue": t.queue, "executor_config": t.executor_config}
                               for t in d.tasks}} for i, d in bag.dags.items()}}))
"""

    def parse(**extra: str) -> dict:
        out = subprocess.run([sys.executable, "-c", code], env={**airflow_env(tmp_path), **extra},
                             capture_output=True, text=True, timeout=HANG_S)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.split("RESULT", 1)[1])
        assert result["errors"] == {}
        return result["dags"]

    dags = parse()
    for domain in ("medical", "security", "industrial"):
        assert dags[f"mmops_ingest_{domain}"]["tasks"] == ["plan", "ingest", "label", "announce_new"]
        assert dags[f"mmops_label_{domain}"]["tasks"] == ["import_annotations", "announce_labels", "prelabel",
                                                          "export"]
        retrain = ["gather", "validate", "build", "train", "evaluate", "package", "champion", "release"]
        assert dags[f"mmops_train_{domain}"]["tasks"] == retrain
        assert [t for t in dags["mmops_retrain_weekly"]["tasks"] if t.startswith(f"{domain}.")] == [
            f"{domain}.{t}" for t in retrain]
        assert {f"monitor_{domain}", f"signal_drift_{domain}"} <= set(dags["mmops_monitor"]["tasks"])
        assert dags[f"mmops_deploy_{domain}"]["tasks"] == ["deploy"]  # every domain: on its champion Asset
    # params.yaml stages medical (release.staged) with a person's approval (release.approval)
    assert dags["mmops_release_medical"]["tasks"] == ["shadow", "approve", "decide", "canary"]
    assert not {"mmops_release_security", "mmops_release_industrial"} & set(dags)
    for dag_id, dag in dags.items():
        assert "mmops" in dag["tags"] and dag["owner"] == "mmops" and dag["doc"], dag_id
        assert dag["retries"] >= 2, dag_id
        # manual runs: every DAG offers params, each documented, each with the default a scheduled run uses
        assert dag["params"] and all(p["description"] for p in dag["params"].values()), (dag_id, dag["params"])
        assert all(p["default"] is not None for k, p in dag["params"].items() if k != "since"), dag_id
        for task_id, args in dag["task_args"].items():  # backoff on retries, and no task runs unbounded
            assert args["backoff"] and 0 < args["timeout_s"] <= 6 * 3600, (dag_id, task_id, args)
            assert (args["pool"] == "mmops_training") == task_id.endswith("train"), (dag_id, task_id, args)
            assert args["queue"] == "default" and not args["executor_config"], (dag_id, task_id, args)

    # scaled out: training goes to the GPU workers' Celery queue, or to a GPU pod on Kubernetes
    template = REPO / "deploy" / "airflow" / "gpu-pod-template.yaml"
    gpu = parse(MMOPS_TRAINING_QUEUE="gpu", MMOPS_TRAINING_POD_TEMPLATE=str(template))
    for dag_id, dag in gpu.items():
        for task_id, args in dag["task_args"].items():
            if task_id.endswith("train"):
                assert args["queue"] == "gpu" and args["executor_config"] == {"pod_template_file": str(template)}
            else:
                assert args["queue"] == "default" and not args["executor_config"], (dag_id, task_id)


def task_states(root: Path, dag_id: str) -> dict[tuple[str, int], str]:
    """(task id, map index) -> state of the latest run of a DAG, from Airflow's own metadata DB."""
    db = sqlite3.connect(root / "var" / "airflow" / "airflow.db")
    run_id = db.execute("select run_id from dag_run where dag_id=? order by id desc limit 1", (dag_id,)).fetchone()[0]
    rows = db.execute("select task_id, map_index, state from task_instance where dag_id=? and run_id=?",
                      (dag_id, run_id)).fetchall()
    db.close()
    return {(t, m): s for t, m, s in rows}


def test_ingest_then_train_dags_and_a_failing_gate(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"security": "security-faces"}, with_code=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["batch_files"] = 64  # 200 files -> 4 mapped ingest tasks
    (root / "params.yaml").write_text(yaml.safe_dump(params))
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
    def count(sql: str) -> int:
        return catalog_sql(root, sql)[0][0]

    assert count("select count(*) from samples where domain='security'") == 200
    assert count("select count(*) from labels") == 200
    states = task_states(root, "mmops_ingest_security")
    assert sorted(m for (t, m) in states if t == "ingest") == [0, 1, 2, 3]
    assert set(states.values()) == {"success"}  # new records: the asset was announced

    again = airflow(root, "dags", "test", "mmops_ingest_security")
    assert again.returncode == 0
    states = task_states(root, "mmops_ingest_security")
    assert states[("announce_new", -1)] == "skipped"  # nothing new: the training DAG is not triggered
    assert states[("label", -1)] == "success"

    # A labels file that loses a whole class: the gate must stop the training DAG before anything is built.
    labels = root / "landing" / "security" / "labels.csv"
    good = labels.read_text()
    labels.write_text("".join(ln for ln in good.splitlines(keepends=True) if "non_face" not in ln))
    catalog_sql(root, "delete from labels")
    assert airflow(root, "dags", "test", "mmops_ingest_security").returncode == 0
    failed = airflow(root, "dags", "test", "mmops_train_security")
    log = failed.stdout + failed.stderr
    assert "state=failed" in log and "expect_column_distinct_values_to_contain_set" in log
    assert "Data Docs file://" in log  # the task log links the HTML report of the failed gate
    assert count("select count(*) from dataset_versions") == 0

    labels.write_text(good)
    assert airflow(root, "dags", "test", "mmops_ingest_security").returncode == 0
    trained = airflow(root, "dags", "test", "mmops_train_security", timeout=HANG_S)
    assert "state=success" in trained.stdout + trained.stderr, trained.stderr[-3000:]
    [row] = catalog_sql(root, "select version, bento_tag from model_versions where domain='security'")
    assert row[0] == 1 and row[1].startswith("mmops-security:")
    # the audit log names the DAG run that built, trained, registered and packaged the model
    actors = dict(catalog_sql(root, "select action, actor from audit_events where action in "
                                    "('dataset_built', 'trained', 'registered', 'packaged')"))
    assert set(actors) == {"dataset_built", "trained", "registered", "packaged"}
    assert {a.split("/")[0] for a in actors.values()} == {"airflow:mmops_train_security"}, actors
    assert catalog_sql(root, "select actor from audit_events where action='ingested'")[0][0].startswith(
        "airflow:mmops_ingest_security/")

    # the labeling DAG: an annotator's Label Studio export comes in; the champion pre-labels; tasks go out
    drop = root / "landing" / "security" / "annotations"
    drop.mkdir()
    (drop / "export.json").write_text(json.dumps([{"id": 1, "data": {"sample_key": "lfw000"}, "annotations": [{
        "completed_by": {"email": "guard@site"}, "updated_at": "2026-11-24T08:00:00Z",
        "result": [{"from_name": "label", "type": "choices", "value": {"choices": ["non_face"]}}]}]}]))
    labeled = airflow(root, "dags", "test", "mmops_label_security")
    assert labeled.returncode == 0, labeled.stderr[-3000:]
    assert set(task_states(root, "mmops_label_security").values()) == {"success"}
    assert catalog_sql(root, "select label, annotator from labels where kind='human'") == [
        ("non_face", "guard@site")]
    # every record but the one a human labeled gets the champion's pre-label
    assert count("select count(*) from labels where kind='model'") == 199
    assert (root / "artifacts" / "security" / "labelstudio" / "config.xml").exists()


def test_an_anomaly_domain_runs_through_the_same_dags(tmp_path: Path) -> None:
    """The cardiac pack (task: anomaly) through the ingest and training DAGs: the detector is fitted on the
    normal records, calibrated, registered on its AUROC and packaged, as a classifier would be."""
    root = make_project(tmp_path / "proj", {"cardiac": "cardiac-ecg"}, with_code=True)
    env = {**os.environ, "MMOPS_HOME": str(root)}
    subprocess.run([venv_bin("mmops"), "data", "pull", "--domain", "cardiac"], env=env, check=True,
                   capture_output=True, timeout=120)
    assert airflow(root, "db", "migrate").returncode == 0
    airflow(root, "dags", "reserialize")
    ingest = airflow(root, "dags", "test", "mmops_ingest_cardiac")
    assert ingest.returncode == 0 and "state=success" in ingest.stdout + ingest.stderr, ingest.stderr[-3000:]
    trained = airflow(root, "dags", "test", "mmops_train_cardiac", timeout=HANG_S)
    assert "state=success" in trained.stdout + trained.stderr, trained.stderr[-3000:]
    assert {s for (t, _), s in task_states(root, "mmops_train_cardiac").items()
            if t != "release"} == {"success"}  # champion: the first model, promoted, announced
    assert task_states(root, "mmops_train_cardiac")[("release", -1)] == "skipped"  # cardiac is not staged
    [(version, tag, metrics)] = catalog_sql(root, "select version, bento_tag, metrics from model_versions "
                                                  "where domain='cardiac'")
    metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
    assert version == 1 and tag.startswith("mmops-cardiac:")
    # the training's audit event names the Airflow run and the DAG version Airflow recorded for it (lineage)
    [(actor, detail)] = catalog_sql(root, "select actor, detail from audit_events where domain='cardiac' and "
                                          "action='trained'")
    detail = json.loads(detail) if isinstance(detail, str) else detail
    db = sqlite3.connect(root / "var" / "airflow" / "airflow.db")
    [(dag_version_id,)] = db.execute("select dag_version_id from task_instance where dag_id='mmops_train_cardiac' "
                                     "and task_id='train'").fetchall()
    db.close()
    assert actor.startswith("airflow:mmops_train_cardiac/"), actor
    assert detail["dag_version"].replace("-", "") == str(dag_version_id).replace("-", ""), (detail, dag_version_id)
    assert metrics["auroc"] > 0.9 and 0 <= metrics["fpr"] <= 0.2, metrics
    card = json.loads((root / "artifacts" / "cardiac" / "model" / "model_card.json").read_text())
    assert card["arch"]["task"] == "anomaly" and set(card["arch"]["banks"]) == {"ecg"}
