"""`mmops status`: one screen per domain, every figure read from the catalog of a project that ran."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import catalog_sql, mmops_env, venv_bin

pytestmark = pytest.mark.catalog  # the PostgreSQL pass runs these too (conftest)


def _status(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("mmops"), "status", *args], cwd=root, capture_output=True, text=True,
                          timeout=120, env=mmops_env(root, COLUMNS="200"))


def test_status_reports_what_the_catalog_holds(use_project: Path) -> None:
    proc = _status(use_project, "--json")
    assert proc.returncode == 0, proc.stderr
    by_domain = {d["domain"]: d for d in json.loads(proc.stdout)}
    assert set(by_domain) == {"security", "industrial"}
    for domain, d in by_domain.items():
        [(ok,)] = catalog_sql(use_project, "select count(*) from files where domain=:d and status='ok'", d=domain)
        [(records,)] = catalog_sql(use_project, "select count(*) from samples where domain=:d", d=domain)
        assert d["data"]["ingested"] == ok > 0 and d["data"]["records"] == records
        assert d["data"]["landed"] >= ok and d["data"]["quarantined"] == 0
        assert 0 < d["data"]["labeled"] <= records
        manifest = json.loads((use_project / "artifacts" / domain / "dataset" / "manifest.json").read_text())
        assert d["dataset"]["version"] == manifest["id"] and d["dataset"]["gate"] == "passed"
        assert d["gate"]["success"] is True
        champion = d["champion"]
        [(version,)] = catalog_sql(use_project, "select max(version) from model_versions where domain=:d", d=domain)
        assert champion["version"] == version and 0 < champion["metrics"]["macro_f1"] <= 1
        assert champion["dataset_version"] == manifest["id"]
        [(action, actor)] = catalog_sql(use_project, "select action, actor from audit_events where domain=:d "
                                                     "order by id desc limit 1", d=domain)
        assert (d["last_event"]["action"], d["last_event"]["actor"]) == (action, actor)
        [(started, finished)] = catalog_sql(use_project, "select started_at, finished_at from training_runs "
                                                         "where domain=:d order by id desc limit 1", d=domain)
        training = d["training"]
        assert training["status"] == "finished" and training["finished_at"] > training["started_at"]
        assert training["started_at"][:19] == str(started).replace(" ", "T")[:19]
        assert training["finished_at"][:19] == str(finished).replace(" ", "T")[:19]
    plain = _status(use_project, "--domain", "industrial")
    assert plain.returncode == 0 and "industrial" in plain.stdout and "security" not in plain.stdout
    for row in ("files", "records", "gate", "dataset", "champion", "drift", "service"):
        assert row in plain.stdout
    # the training run says when it started and when it ended (it used to show its start as the end)
    training = by_domain["industrial"]["training"]
    assert (f"started {training['started_at'][:16].replace('T', ' ')}, "
            f"ended {training['finished_at'][:16].replace('T', ' ')}") in plain.stdout


def test_status_of_a_project_that_never_ran(project: Path) -> None:
    proc = _status(project, "--json")
    assert proc.returncode == 0, proc.stderr
    for d in json.loads(proc.stdout):
        assert d["data"]["ingested"] == 0 and d["data"]["landed"] is None  # no landing folder yet
        assert d["dataset"] is None and d["champion"] is None and d["service"] is None
    plain = _status(project)
    assert plain.returncode == 0 and "not running" in plain.stdout and "Traceback" not in plain.stderr
