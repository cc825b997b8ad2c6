"""`mmops release`: a model version's lineage from its raw files to its deployments, read from the catalog
of a project that ran every stage, each link checked against what the stage itself wrote."""

import json
from pathlib import Path

import pytest

from mmops import pipeline
from tests.conftest import catalog_sql, run_mmops

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def test_the_champion_links_back_to_its_raw_files_gate_labels_code_and_who_made_it(use_project: Path) -> None:
    r = pipeline.release("security")
    card = json.loads((use_project / "artifacts" / "security" / "card" / "card.json").read_text())
    data = card["training_data"]
    assert r["version"] == card["model_version"] and r["checkpoint_sha256"] == card["checkpoint_sha256"]
    assert (r["raw_files"]["files"], r["raw_files"]["sha256"]) == (data["raw_files"], data["raw_files_sha256"])
    assert r["raw_files"]["dataset_version"] == data["dataset_version"]
    [(gate_ok,)] = catalog_sql(use_project, "SELECT v.success FROM dataset_versions d JOIN validation_runs v ON "
                                            "v.id = d.validation_run_id WHERE d.id = :d", d=data["dataset_version"])
    assert r["gate"]["success"] is True and bool(gate_ok) and r["gate"]["expectations"] > 0
    assert sum(r["labels"]["by_kind"].values()) == r["raw_files"]["records"] and r["labels"]["changed_since"] == 0
    [(commit, params_hash)] = catalog_sql(use_project, "SELECT git_commit, params_hash FROM training_runs WHERE "
                                                       "id = :i", i=r["code"]["training_run"])
    assert (r["code"]["git_commit"], r["code"]["params_hash"]) == (commit, params_hash)
    assert r["code"]["trained_by"] and r["code"]["dag_version"] is None  # trained outside Airflow here
    assert r["package"]["model_tag"] and r["package"]["model_tag"].startswith("mmops-security:")
    made = [d for d in r["decisions"] if d["made_champion"] and d["action"] in ("promoted", "manual", "rollback")]
    assert made and made[0]["by"] == "mmops evaluate" and made[0]["reason"] == "no champion yet"
    actions = [e["action"] for e in r["events"]]
    assert {"dataset_built", "trained", "registered", "packaged"} <= set(actions), actions
    assert all(e["hash"] for e in r["events"]) and r["ledger"]["ok"]


def test_the_cli_shows_it_and_a_version_that_does_not_exist_is_one_line(use_project: Path) -> None:
    shown = run_mmops(use_project, "release", "--domain", "security")
    assert shown.returncode == 0 and "ledger      intact" in shown.stdout and "gate        validation run" in \
        shown.stdout, shown.stdout + shown.stderr
    missing = run_mmops(use_project, "release", "--domain", "security", "--version", "99")
    assert missing.returncode == 1 and "no model version 99" in missing.stderr + missing.stdout


def test_an_event_written_in_an_airflow_task_names_the_dag_version(use_project: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops import audit
    from mmops.catalog import session_scope

    monkeypatch.setenv(audit.DAG_VERSION_ENV, "0199a3b4-version")
    with session_scope() as s:  # the variable alone (a stale one outside a task) is not taken
        assert "dag_version" not in audit.record(s, "trained", "security", "training_run:0").detail
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "mmops_train_security")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__1")
    with session_scope() as s:
        event = audit.record(s, "trained", "security", "training_run:0")
        assert (event.detail["dag_version"], event.actor) == ("0199a3b4-version", "airflow:mmops_train_security/manual__1")
    assert pipeline.audit_verify()["ok"]
