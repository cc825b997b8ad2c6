"""The release path's catalog side (mmops/releasing.py, registry staging): in a staged domain a challenger that
passes the gate waits for the release DAG; a person's answer is recorded with who and why, and a rejection
releases nothing; params.yaml's release section is checked."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError


@pytest.mark.catalog
def test_a_staged_challenger_that_passes_the_gate_waits_for_the_release(project: Path) -> None:
    from mmops.catalog import session_scope
    from mmops.registry import describe, get_alias, register
    from tests.unit.test_registry_catalog import _run

    with session_scope() as s:
        first = register(s, _run(s, "a"), {"macro_f1": 0.7}, staged=True)
        assert first.promoted and not first.release  # no champion yet: nothing to shadow or canary against
        staged = register(s, _run(s, "b"), {"macro_f1": 0.9}, staged=True)
        assert not staged.promoted and staged.release and "the release DAG decides" in staged.reason
        assert get_alias(s, "security", "champion").version == 1 and get_alias(s, "security", "challenger").version == 2
        lost = register(s, _run(s, "c"), {"macro_f1": 0.5}, staged=True)
        assert not lost.promoted and not lost.release
        log = describe(s, "security")["audit_log"]
    assert [e["action"] for e in log] == ["rejected", "passed_gate", "promoted"]


@pytest.mark.catalog
def test_a_persons_answer_is_recorded_and_a_rejection_releases_nothing(project: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops import pipeline
    from mmops.catalog import session_scope
    from mmops.registry import describe, get_alias, register
    from mmops.releasing import announce_challenger, canary, challenger_asset, champion_asset, decide, summary
    from tests.unit.test_registry_catalog import _run

    with session_scope() as s:
        register(s, _run(s, "a"), {"macro_f1": 0.7}, staged=True)
        v2 = register(s, _run(s, "b"), {"macro_f1": 0.9}, staged=True).version
    evaluated = {"model_version": v2, "promoted": False, "release": True, "reason": "passed", "metrics": "m.json"}
    events = {challenger_asset("security"): SimpleNamespace(extra=None)}
    assert announce_challenger("security", evaluated, {}, events)["version"] == v2
    assert events[challenger_asset("security")].extra == {"version": v2}  # the event names the version
    with pytest.raises(AirflowSkipException, match="nothing to release"):
        announce_challenger("security", {**evaluated, "release": False})
    shadowed = {"version": v2, "shadow": {"mirrored": 200, "agreement": 0.97}}
    answer = {"chosen_options": ["Reject"], "params_input": {"reason": "agreement too low"},
              "responded_by_user": {"id": "7", "name": "dr.lee"}}
    with pytest.raises(AirflowSkipException, match="rejected by airflow:dr.lee: agreement too low"):
        decide("security", shadowed, answer)
    with session_scope() as s:
        assert get_alias(s, "security", "champion").version == 1
        last = describe(s, "security")["audit_log"][0]
    assert (last["action"], last["version"], last["actor"]) == ("rejected", v2, "airflow:dr.lee")
    event = pipeline.audit_log("security", limit=1)[0]
    assert (event["action"], event["detail"]["reason"], event["detail"]["shadow"]["mirrored"]) == (
        "release_rejected", "agreement too low", 200)
    approved = decide("security", shadowed, {**answer, "chosen_options": ["Approve"], "params_input": {}})
    assert approved == {"version": v2, "approved_by": "airflow:dr.lee", "reason": "(no reason given)"}
    assert decide("security", shadowed, None)["approved_by"] == "policy:release.approval"
    assert pipeline.audit_log("security", limit=1)[0]["action"] == "approved"
    text = summary("security", v2, "macro_f1 0.9 vs 0.7", None, None, 200)
    assert "passed the promotion gate" in text and "no records mirrored (no service" in text
    # no service to canary on: released on the approval alone, the registry saying so and who approved
    monkeypatch.delenv("MMOPS_SERVICE_URL_SECURITY", raising=False)
    events = {champion_asset("security"): SimpleNamespace(extra=None)}
    assert canary("security", approved, {}, events)["promoted"] is True
    assert events[champion_asset("security")].extra == {"version": v2, "approved_by": "airflow:dr.lee"}
    with session_scope() as s:
        assert get_alias(s, "security", "champion").version == v2
        last = describe(s, "security")["audit_log"][0]
    assert (last["action"], last["actor"]) == ("released", "airflow:dr.lee")


def test_approval_is_a_step_of_a_staged_release() -> None:
    from mmops.config import ReleaseParams

    assert ReleaseParams(staged=("medical", "security"), approval=("medical",)).approval == ("medical",)
    with pytest.raises(ValidationError, match="must be in release.staged"):
        ReleaseParams(staged=("medical",), approval=("security",))
