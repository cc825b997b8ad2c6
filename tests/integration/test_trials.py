"""A challenger in shadow in a real `bentoml serve`: started from the registry over HTTP, fed the records the
champion answers, never answering itself, its failures kept from the clients, reported and audited."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mmops import pipeline
from mmops.errors import MmopsError
from tests.conftest import catalog_sql
from tests.integration.test_serve import _another_version, _records, _register_version, _serving

pytestmark = [pytest.mark.serve, pytest.mark.slow]

ADDED: list[str] = []  # model tags this module saved to the store (removed at its end)
FAILS_FROM = 4  # the shadow raises from its 4th batch on (MMOPS_FAULT=serve.shadow:4:raise)


def _register(root: Path, name: str, nudge: float) -> tuple[str, int]:
    """Another version of the industrial model (its last bias nudged; NaN: every weight not a number),
    packaged and registered as the challenger (its stored metrics worse: the gate keeps the champion):
    (model tag, version)."""
    import hashlib
    import math

    from safetensors.torch import load_file, save_file

    new_dir = _another_version(root, name, nudge=0.0 if math.isnan(nudge) else nudge)
    if math.isnan(nudge):
        weights = load_file(str(new_dir / "model.safetensors"))
        save_file({k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()},
                  str(new_dir / "model.safetensors"))
        card = json.loads((new_dir / "model_card.json").read_text())
        card["checkpoint_sha256"] = hashlib.sha256((new_dir / "model.safetensors").read_bytes()).hexdigest()
        (new_dir / "model_card.json").write_text(json.dumps(card))
    tag, registered = _register_version(root, new_dir, name, {"macro_f1": 0.0})
    ADDED.append(tag)
    assert not registered.promoted
    return tag, registered.version


@pytest.fixture(scope="module")
def shadowed(trained_project: Path) -> Iterator[tuple[str, Path, str, int]]:
    """The industrial service (its shadow raising from its FAILS_FROM-th batch on), and a second version
    registered as the challenger and packaged: (url, project, the challenger's model tag, its version). The
    versions this module adds are removed afterwards, and v1 is champion again."""
    import os

    import bentoml

    os.environ["MMOPS_HOME"] = str(trained_project)
    tag, version = _register(trained_project, "shadow-model", nudge=3.0)
    try:
        with _serving(trained_project, "industrial", "serve-trials.log",
                      MMOPS_FAULT=f"serve.shadow:{FAILS_FROM}:raise") as url:
            yield url, trained_project, tag, version
    finally:
        for sql in ("UPDATE model_aliases SET model_version_id = (SELECT id FROM model_versions WHERE domain = "
                    "'industrial' AND version = 1) WHERE domain = 'industrial'",
                    "DELETE FROM promotion_events WHERE model_version_id IN (SELECT id FROM model_versions WHERE "
                    "domain = 'industrial' AND version > 1) OR previous_champion_id IN (SELECT id FROM "
                    "model_versions WHERE domain = 'industrial' AND version > 1)",
                    "DELETE FROM model_versions WHERE domain = 'industrial' AND version > 1",
                    "DELETE FROM training_runs WHERE params_hash LIKE 'test-%-model'"):
            catalog_sql(trained_project, sql)
        while ADDED:
            bentoml.models.delete(ADDED.pop())


def _as_release_bot(monkeypatch: pytest.MonkeyPatch, root: Path, url: str) -> str:
    """Act on the project as `release-bot`; the model version the service answers with now."""
    monkeypatch.setenv("MMOPS_HOME", str(root))
    monkeypatch.setenv("MMOPS_ACTOR", "release-bot")
    return str(httpx.get(f"{url}/metadata", timeout=30).json()["model_version"])


def test_a_challenger_in_shadow_sees_the_traffic_never_answers_and_its_failures_stay_in_its_log(
        shadowed: tuple[str, Path, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops.serving.shadow import report
    from mmops.serving.store import loaded

    url, root, tag, version = shadowed
    champion = _as_release_bot(monkeypatch, root, url)
    started = pipeline.shadow_start("industrial", url)
    assert (started["version"], started["model_tag"], started["kind"], started["shadow"]) == (version, tag, "shadow", tag)
    rows, records = _records(root, 6)
    answers = []
    for rec in records:  # one request at a time: one batch each, so the shadow's 4th batch is the 4th record
        resp = httpx.post(f"{url}/predict", json={"records": [rec]}, timeout=60)
        assert resp.status_code == 200, resp.text  # the shadow's failures never reach a client
        answers.append(resp.json()[0])
    assert {a["model_version"] for a in answers} == {champion}  # answers come only from the champion
    stopped = pipeline.shadow_stop("industrial", url)["stopped"]  # drains what is queued, then stops
    assert (stopped["mirrored"], stopped["failed"], stopped["dropped"]) == (6, 6 - FAILS_FROM + 1, 0)

    # what the challenger would have answered, computed here from the same packaged model
    task, predictor, meta = loaded(tag)
    from mmops.serving.schemas import decode_record
    from mmops.serving.store import labels_of

    values = [decode_record(predictor.pack, r)[0] for r in records]
    expected = labels_of(task, task.serve(predictor, values, embeddings=False), meta)[:FAILS_FROM - 1]
    truth = {r["id"]: row["label"] for r, row in zip(records, rows, strict=True)}
    got = report(_log_dir(), "industrial", truth)
    agreeing = sum(e == a["label"] for e, a in zip(expected, answers, strict=False))
    assert got["agreement"] == pytest.approx(agreeing / (FAILS_FROM - 1), abs=1e-4)
    assert (got["mirrored"], got["failed"], got["shadow"], got["champions"]) == (6, 3, tag, [champion])
    assert got["champion_accuracy"] == pytest.approx(
        sum(a["label"] == truth[a["id"]] for a in answers) / 6, abs=1e-4)
    assert got["shadow_accuracy"] == pytest.approx(
        sum(e == truth[r["id"]] for e, r in zip(expected, records, strict=False)) / (FAILS_FROM - 1), abs=1e-4)
    assert "injected fault at serve.shadow" in got["errors"][0]
    assert pipeline.shadow_report("industrial")["mirrored"] == 6  # the command's view: the same log
    events = [(e["action"], e["actor"]) for e in pipeline.audit_log("industrial", limit=2)]
    assert events == [("shadow_started", "release-bot"), ("shadow_stopped", "release-bot")]


def _log_dir() -> Path:
    from mmops.config import get_settings

    return get_settings().prediction_log_dir


def test_shadow_mistakes_are_refused_before_anything_changes(shadowed: tuple[str, Path, str, int],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, root, _, _ = shadowed
    monkeypatch.setenv("MMOPS_HOME", str(root))
    resp = httpx.post(f"{url}/admin/shadow", json={"tag": "mmops-industrial:doesnotexist"}, timeout=30)
    assert resp.status_code == 404 and "no packaged model" in resp.json()["error"]
    resp = httpx.post(f"{url}/admin/shadow", json={"tag": "not a tag!"}, timeout=30)
    assert resp.status_code == 400
    with pytest.raises(MmopsError, match="is industrial's champion"):
        pipeline.shadow_start("industrial", url, version=1)
    with pytest.raises(MmopsError, match="no model version 99"):
        pipeline.shadow_start("industrial", url, version=99)


def _send(url: str, records: list[dict], rounds: int, per_request: int = 50) -> list[dict]:
    """`rounds` x len(records) records under distinct ids (sticky routing spreads them over both arms), in
    requests of `per_request`; every request must be answered."""
    sent = [{**r, "id": f"{r['id']}#{k}"} for k in range(rounds) for r in records]
    answers = []
    for i in range(0, len(sent), per_request):
        resp = httpx.post(f"{url}/predict", json={"records": sent[i:i + per_request]}, timeout=120)
        assert resp.status_code == 200, resp.text
        answers += resp.json()
    return answers


def test_a_canary_that_holds_its_bounds_is_promoted_and_swapped_in(
        shadowed: tuple[str, Path, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops.catalog import session_scope
    from mmops.registry import get_alias

    url, root, _, _ = shadowed
    champion = _as_release_bot(monkeypatch, root, url)
    tag, version = _register(root, "canary-model", nudge=0.01)  # nearly the champion: within every bound
    started = pipeline.canary_start("industrial", url, share=0.5)
    assert (started["kind"], started["canary"], started["live"]) == ("canary", tag, True)
    _, records = _records(root, 20)
    answers = _send(url, records, rounds=5)  # 100 records
    assert {a["model_version"] for a in answers} == {champion, tag}
    by_id = {a["id"]: a["model_version"] for a in answers}
    again = _send(url, records, rounds=5)  # the same ids: the same model answers each, every time
    assert {a["id"]: a["model_version"] for a in again} == by_id
    early = pipeline.canary_conclude("industrial", url)
    assert not early["decided"] and early["records"] < early["needed"] == 200
    _send(url, records, rounds=20)  # 400 more records: the canary's share passes 200
    concluded = pipeline.canary_conclude("industrial", url)
    assert concluded["promoted"] and concluded["version"] == version, concluded
    assert concluded["service"]["model_version"] == tag and concluded["final"]["canary_arm"]["records"] >= 200
    assert {a["model_version"] for a in _send(url, records, rounds=1)} == {tag}  # the new champion answers all
    with session_scope() as s:
        assert get_alias(s, "industrial", "champion").version == version
    assert pipeline.canary_status("industrial", url)["kind"] is None
    actions = [e["action"] for e in pipeline.audit_log("industrial", limit=4)]
    assert actions == ["canary_started", "promoted", "deployed", "canary_stopped"], actions
    pipeline.reload_service("industrial", url, champion)  # the module's later tests expect v1 serving


def test_a_canary_that_breaks_its_bounds_is_ended_by_the_service_and_rejected(
        shadowed: tuple[str, Path, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops.catalog import session_scope
    from mmops.registry import describe, get_alias

    url, root, _, _ = shadowed
    monkeypatch.setenv("MMOPS_HOME", str(root))
    with session_scope() as s:
        champion_version = get_alias(s, "industrial", "champion").version
    champion = httpx.get(f"{url}/metadata", timeout=30).json()["model_version"]
    _, version = _register(root, "broken-model", nudge=float("nan"))  # every output not a number
    pipeline.canary_start("industrial", url, share=0.5)
    _, records = _records(root, 20)
    answers = _send(url, records, rounds=5)
    assert {a["model_version"] for a in answers} == {champion}  # the champion answered for the broken canary
    state = pipeline.canary_status("industrial", url)
    assert not state["live"] and "error rate 1.000" in state["ended"], state
    concluded = pipeline.canary_conclude("industrial", url)
    assert (concluded["decided"], concluded["promoted"], concluded["version"]) == (True, False, version)
    with session_scope() as s:
        assert get_alias(s, "industrial", "champion").version == champion_version
        rejected = describe(s, "industrial")["audit_log"][0]
    assert (rejected["action"], rejected["version"]) == ("rejected", version) and "canary ended" in rejected["reason"]
    assert [e["action"] for e in pipeline.audit_log("industrial", limit=2)] == ["canary_stopped", "canary_rolled_back"]
