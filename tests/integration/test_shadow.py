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
from tests.integration.test_serve import _another_version, _records, _save, _serving

pytestmark = [pytest.mark.serve, pytest.mark.slow]

FAILS_FROM = 4  # the shadow raises from its 4th batch on (MMOPS_FAULT=serve.shadow:4:raise)


@pytest.fixture(scope="module")
def shadowed(trained_project: Path) -> Iterator[tuple[str, Path, str, int]]:
    """The industrial service, and a second version registered as the challenger and packaged: (url, project,
    the challenger's model tag, its version). The rows it added are removed afterwards."""
    import os

    from mmops.catalog import TrainingRun, session_scope
    from mmops.registry import get_alias, register

    os.environ["MMOPS_HOME"] = str(trained_project)
    new_dir = _another_version(trained_project, "shadow-model", nudge=3.0)
    sha = json.loads((new_dir / "model_card.json").read_text())["checkpoint_sha256"]
    tag = _save(trained_project, new_dir, "shadow test")
    with session_scope() as s:
        champion = get_alias(s, "industrial", "champion")
        first = s.get(TrainingRun, champion.training_run_id)
        run = TrainingRun(domain="industrial", dataset_version_id=first.dataset_version_id, params={},
                          params_hash="shadow-test", device="cpu", status="finished", checkpoint_sha256=sha)
        s.add(run)
        s.flush()
        registered = register(s, run, {"macro_f1": 0.0})  # worse: kept as the challenger
        assert not registered.promoted
        get_alias(s, "industrial", "challenger").bento_model_tag = tag
    try:
        with _serving(trained_project, "industrial", "serve-shadow.log",
                      MMOPS_FAULT=f"serve.shadow:{FAILS_FROM}:raise") as url:
            yield url, trained_project, tag, registered.version
    finally:
        import bentoml

        v = registered.version
        for sql in ("UPDATE model_aliases SET model_version_id = (SELECT id FROM model_versions WHERE domain = "
                    "'industrial' AND version = 1) WHERE domain = 'industrial'",
                    "DELETE FROM promotion_events WHERE model_version_id IN (SELECT id FROM model_versions WHERE "
                    "domain = 'industrial' AND version = :v)",
                    "DELETE FROM model_versions WHERE domain = 'industrial' AND version = :v",
                    "DELETE FROM training_runs WHERE params_hash = 'shadow-test'"):
            catalog_sql(trained_project, sql, **({"v": v} if ":v" in sql else {}))
        bentoml.models.delete(tag)


def test_a_challenger_in_shadow_sees_the_traffic_never_answers_and_its_failures_stay_in_its_log(
        shadowed: tuple[str, Path, str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from mmops.serving.shadow import report
    from mmops.serving.store import loaded

    url, root, tag, version = shadowed
    monkeypatch.setenv("MMOPS_HOME", str(root))
    monkeypatch.setenv("MMOPS_ACTOR", "release-bot")
    champion = httpx.get(f"{url}/metadata", timeout=30).json()["model_version"]
    started = pipeline.shadow_start("industrial", url)
    assert (started["version"], started["model_tag"], started["shadow"]["shadow"]) == (version, tag, tag)
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
    from mmops.serving.shadow import labels_of

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
