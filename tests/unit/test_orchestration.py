"""What the DAG tasks decide: when the drift Asset is emitted (and what its event says), when a retrained
model is announced as champion and deployed."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from mmops.orchestration import drift_asset, signal_drift
from mmops.stages.results import Evaluated, Monitored


class _Event:
    def __init__(self, extra: dict | None = None) -> None:
        self.extra = extra


def _monitored(**verdict: object) -> dict:
    """A monitor task's XCom: its stage's result as JSON."""
    fields = {"drift_share": 0.0, "drifted": False, "drifted_groups": [], "drifted_columns": [],
              "drifted_embeddings": [], "prediction_drifted": False, "n_reference": 100, "n_current": 48,
              "skipped_lines": 0, "performance": {"n_labeled": 0, "accuracy": None}, "dashboard": {},
              "reference_dataset_version": "industrial-abc", "html": "x", "json": "drift_report.json",
              "embedding_html": {}}
    return Monitored.model_validate({**fields, **verdict}).to_json()


def _evaluated(promoted: bool, reason: str = "first model") -> dict:
    """An evaluate task's XCom."""
    return Evaluated(headline={"accuracy": 0.9, "macro_f1": 0.9, "auroc": None, "ece": 0.05}, model_version=2,
                     promoted=promoted, reason=reason, metrics="metrics.json",
                     plots={"confusion_png": "confusion.png"}).to_json()


def test_drift_emits_the_asset_with_the_verdict_and_no_drift_emits_nothing() -> None:
    events = {drift_asset("industrial"): _Event()}
    with pytest.raises(AirflowSkipException, match="no drift"):
        signal_drift("industrial", _monitored(drifted=False, drift_share=0.1), events)
    assert events[drift_asset("industrial")].extra is None
    verdict = _monitored(drifted=True, drifted_groups=["accel"], drifted_embeddings=[], drift_share=0.4,
                         drifted_columns=["accel.x_mean"], n_current=48, json="drift_report.json", html="x")
    out = signal_drift("industrial", verdict, events)
    assert events[drift_asset("industrial")].extra == out
    assert out["drifted_groups"] == ["accel"] and "html" not in out


def test_a_performance_drop_on_late_labels_emits_the_asset_without_drift() -> None:
    events = {drift_asset("medical"): _Event()}
    steady = _monitored(drifted=False, drift_share=0.0, performance={"n_labeled": 40, "accuracy": 0.9,
                                                                      "degraded": False})
    with pytest.raises(AirflowSkipException, match="no performance drop"):
        signal_drift("medical", steady, events)
    dropped = {**steady, "performance": {"n_labeled": 40, "accuracy": 0.6, "test_accuracy": 0.9, "degraded": True}}
    out = signal_drift("medical", dropped, events)
    assert events[drift_asset("medical")].extra["performance"]["accuracy"] == 0.6 and out["drifted"] is False


def test_a_promotion_is_a_champion_event_and_the_deploy_dag_swaps_it_in_where_a_service_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops import pipeline
    from mmops.releasing import announce_champion, champion_asset, deploy

    events = {champion_asset("security"): _Event()}
    with pytest.raises(AirflowSkipException, match="champion keeps serving"):
        announce_champion("security", _evaluated(False, "macro_f1 0.90 <= champion 0.95"), {}, events)
    assert events[champion_asset("security")].extra is None  # skipped: no event
    assert announce_champion("security", _evaluated(True), {}, events) == {"version": 2, "deploy": True}
    assert events[champion_asset("security")].extra == {"version": 2, "deploy": True}

    calls = []
    monkeypatch.setattr(pipeline, "reload_service", lambda d, url: calls.append((d, url)) or {"model_version": "v2"})
    monkeypatch.setattr(pipeline, "canary_stop", lambda d, url: {"stopped": None})
    monkeypatch.delenv("MMOPS_SERVICE_URL_SECURITY", raising=False)
    started_by = {champion_asset("security"): [_Event({"version": 2, "deploy": True})]}
    with pytest.raises(AirflowSkipException, match="MMOPS_SERVICE_URL_SECURITY"):
        deploy("security", {}, started_by)
    monkeypatch.setenv("MMOPS_SERVICE_URL_SECURITY", "http://127.0.0.1:3001")
    assert deploy("security", {}, started_by) == {"served": "v2", "trial_stopped": None}
    assert deploy("security", {}, None) == {"served": "v2", "trial_stopped": None}  # a run started by hand
    assert calls == [("security", "http://127.0.0.1:3001")] * 2


def test_manual_run_params_switch_off_deploy_announce_and_select_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops import orchestration
    from mmops.orchestration import announce, run_stage_named
    from mmops.releasing import announce_champion, champion_asset, deploy

    monkeypatch.setenv("MMOPS_SERVICE_URL_SECURITY", "http://127.0.0.1:3001")
    events = {champion_asset("security"): _Event()}
    assert announce_champion("security", _evaluated(True), {"deploy": False}, events)["deploy"] is False
    with pytest.raises(AirflowSkipException, match="deploy is off for the run that made v2 champion"):
        deploy("security", {}, {champion_asset("security"): [events[champion_asset("security")]]})
    with pytest.raises(AirflowSkipException, match="announce is off"):
        announce(new_records=5, label_changes=0, enabled=False)
    assert announce(new_records=5, label_changes=0) == {"new_records": 5, "label_changes": 0}
    calls = []
    monkeypatch.setattr(orchestration, "run_stage", lambda name, d, **kw: calls.append((name, kw)) or _Result())
    monkeypatch.setattr(orchestration, "_try_number", lambda: 1)
    train = run_stage_named("train")
    train("security", params={"resume": True})
    train("security", params={"resume": False})
    monkeypatch.setattr(orchestration, "_try_number", lambda: 3)
    train("security", params={"resume": False})
    assert calls == [("train", {"resume": True}), ("train", {}), ("train", {"resume": "auto"})]


class _Result:
    def to_json(self) -> dict:
        return {}


def test_a_task_reads_what_the_last_one_handed_on_back_into_its_type() -> None:
    """XCom carries a stage's result as JSON; the next task reads it back into the type, so a result of the
    wrong shape fails there, saying which field, not as a KeyError tasks later."""
    from pydantic import ValidationError

    from mmops.orchestration import run_stage_named

    handed = _evaluated(True)
    assert handed["accuracy"] == 0.9 and handed["confusion_png"] == "confusion.png"  # flat, as --json shows it
    assert Evaluated.from_json(handed) == Evaluated.from_json(_evaluated(True))
    assert Evaluated.from_json(handed).headline["accuracy"] == 0.9
    with pytest.raises(ValidationError, match="dataset_version"):
        run_stage_named("train")("security", {"n_samples": 80, "split_counts": {}, "manifest": "m.json"})
    with pytest.raises(ValidationError, match="n_current"):
        signal_drift("industrial", {"drifted": True, "drift_share": 0.4}, {})


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
