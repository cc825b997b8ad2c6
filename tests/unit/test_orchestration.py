"""What the DAG tasks decide: when the drift Asset is emitted (and what its event says), when a retrained
model is deployed."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from mmops.orchestration import deploy_champion, drift_asset, signal_drift


class _Event:
    extra: dict | None = None


def test_drift_emits_the_asset_with_the_verdict_and_no_drift_emits_nothing() -> None:
    events = {drift_asset("industrial"): _Event()}
    with pytest.raises(AirflowSkipException, match="no drift"):
        signal_drift("industrial", {"drifted": False, "drift_share": 0.1}, events)
    assert events[drift_asset("industrial")].extra is None
    verdict = {"drifted": True, "drifted_groups": ["accel"], "drifted_embeddings": [], "drift_share": 0.4,
               "drifted_columns": ["accel.x_mean"], "n_current": 48, "json": "drift_report.json", "html": "x"}
    out = signal_drift("industrial", verdict, events)
    assert events[drift_asset("industrial")].extra == out
    assert out["drifted_groups"] == ["accel"] and "html" not in out


def test_a_performance_drop_on_late_labels_emits_the_asset_without_drift() -> None:
    events = {drift_asset("medical"): _Event()}
    steady = {"drifted": False, "drift_share": 0.0, "performance": {"n_labeled": 40, "accuracy": 0.9,
                                                                     "degraded": False}}
    with pytest.raises(AirflowSkipException, match="no performance drop"):
        signal_drift("medical", steady, events)
    dropped = {**steady, "performance": {"n_labeled": 40, "accuracy": 0.6, "test_accuracy": 0.9, "degraded": True}}
    out = signal_drift("medical", dropped, events)
    assert events[drift_asset("medical")].extra["performance"]["accuracy"] == 0.6 and out["drifted"] is False


def test_deploy_only_a_promoted_model_and_only_where_a_service_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "reload_service", lambda d, url: calls.append((d, url)) or {"model_version": "v2"})
    monkeypatch.delenv("MMOPS_SERVICE_URL_SECURITY", raising=False)
    with pytest.raises(AirflowSkipException, match="champion keeps serving"):
        deploy_champion("security", {"promoted": False, "reason": "macro_f1 0.90 <= champion 0.95"})
    with pytest.raises(AirflowSkipException, match="MMOPS_SERVICE_URL_SECURITY"):
        deploy_champion("security", {"promoted": True})
    monkeypatch.setenv("MMOPS_SERVICE_URL_SECURITY", "http://127.0.0.1:3001")
    assert deploy_champion("security", {"promoted": True}) == {"model_version": "v2"}
    assert calls == [("security", "http://127.0.0.1:3001")]


def test_manual_run_params_switch_off_deploy_announce_and_select_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops import orchestration
    from mmops.orchestration import announce, run_stage_named

    monkeypatch.setenv("MMOPS_SERVICE_URL_SECURITY", "http://127.0.0.1:3001")
    with pytest.raises(AirflowSkipException, match="deploy is off"):
        deploy_champion("security", {"promoted": True}, params={"deploy": False})
    with pytest.raises(AirflowSkipException, match="announce is off"):
        announce(new_records=5, label_changes=0, enabled=False)
    assert announce(new_records=5, label_changes=0) == {"new_records": 5, "label_changes": 0}
    calls = []
    monkeypatch.setattr(orchestration, "run_stage", lambda name, d, **kw: calls.append((name, kw)) or {})
    monkeypatch.setattr(orchestration, "_try_number", lambda: 1)
    train = run_stage_named("train")
    train("security", params={"resume": True})
    train("security", params={"resume": False})
    monkeypatch.setattr(orchestration, "_try_number", lambda: 3)
    train("security", params={"resume": False})
    assert calls == [("train", {"resume": True}), ("train", {}), ("train", {"resume": "auto"})]


def test_a_monitor_run_takes_its_window_from_the_trigger_config() -> None:
    from mmops.errors import ConfigError
    from mmops.orchestration import monitor_since

    assert monitor_since({}) is None and monitor_since({"since": ""}) is None
    assert monitor_since({"since": 1_700_000_000}) == 1_700_000_000.0
    assert monitor_since({"since": "2026-11-24T08:00:00Z"}) == 1_795_507_200.0
    with pytest.raises(ConfigError, match="ISO-8601"):
        monitor_since({"since": "yesterday"})


def test_no_secrets_or_connection_strings_in_dag_code() -> None:
    """Credentials reach DAG tasks from the environment (or the project's .env): none are written in dags/."""
    import re
    from pathlib import Path

    secret = re.compile(r"(?i)(password|passwd|secret|api[_-]?key|token)\s*[=:]\s*['\"][^'\"]+['\"]"
                        r"|://[^/\s:'\"]+:[^@\s'\"]+@"  # user:password@host in a URL
                        r"|bearer\s+[a-z0-9._-]{8,}")
    dags = sorted((Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
    assert dags
    found = [f"{p.name}:{n}: {line.strip()}" for p in dags
             for n, line in enumerate(p.read_text().splitlines(), 1) if secret.search(line)]
    assert found == []
    assert secret.search('token = "s3cret"') and secret.search("postgresql://mmops:pw@db/mmops")  # it can fail
