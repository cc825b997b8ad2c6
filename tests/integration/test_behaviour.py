"""Behavioural tests of the trained models (the tests/model idea of Made-With-ML), on the bundled packs'
held-out records sent as a client sends them and decoded as the service decodes them:

- invariance: a change the model must not care about (`mmops.shifts.nudge_record`: a sensor 5 % more
  sensitive, 5 % less light) keeps its answers;
- minimum functionality: the clearest held-out cases of every class (nearest their class's training records
  in the input statistics, relative to the other classes') are answered right;

and that the model card holds the same figures (`mmops evaluate` measures them for every model:
mmops.behaviour; test_demo checks the card of every bundled pack's model).

The anomaly detector's direction test (a stronger fault signature raises the score) is in
test_anomaly_domain.py, where the cardiac detector is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

DOMAINS = ["industrial", "security"]  # what the session's trained project holds (conftest.trained_project)


def _held_out(domain: str) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], Any]:
    """(pack, manifest rows of the test split, their client payloads, the pipeline's predictor)."""
    from mmops import pipeline
    from mmops.config import get_settings
    from mmops.context import artifacts
    from mmops.domains import load_domain
    from mmops.serving.client import record_payload
    from mmops.tasks import task_of

    pack, settings = load_domain(domain), get_settings()
    rows = pipeline.load_manifest(domain).split("test")
    payloads = [record_payload(pack, settings.data_dir, r) for r in rows]
    return pack, rows, payloads, task_of(pack.task).load(artifacts(domain, settings) / "model")


def _card(domain: str) -> Any:
    from mmops.card.complete import CARD_DIR, read_complete
    from mmops.config import get_settings
    from mmops.context import artifacts

    return read_complete(artifacts(domain, get_settings()) / CARD_DIR)


def _answers(pack: Any, predictor: Any, payloads: list[dict[str, Any]]) -> list[str]:
    from mmops.serving.schemas import decode_record

    probs = predictor.predict_proba([decode_record(pack, p)[0] for p in payloads])
    return [pack.classes[i] for i in np.asarray(probs).argmax(axis=1)]


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_change_the_model_must_not_care_about_keeps_its_answers(use_project: Path, domain: str) -> None:
    from mmops.modalities import kind_of
    from mmops.shifts import nudge_record, shift_record

    pack, _, payloads, predictor = _held_out(domain)
    nudged = [nudge_record(pack, p) for p in payloads]
    assert all(n is not None and n["inputs"] != p["inputs"] for n, p in zip(nudged, payloads, strict=True))
    before = _answers(pack, predictor, payloads)
    after = _answers(pack, predictor, [n for n in nudged if n is not None])
    kept = np.mean([a == b for a, b in zip(before, after, strict=True)])
    assert kept >= 0.9, f"{domain}: {kept:.2f} of the answers kept after {pack.modality_names} were nudged"
    # the field's shift is no nudge: it changes what the records look like far more (the drift demo's)
    shifted = np.mean([a == b for a, b in zip(before, _answers(pack, predictor, [shift_record(pack, p) for p in payloads]),
                                               strict=True)])
    assert shifted <= kept
    # the model card carries the figures of one modality nudged at a time, measured by `mmops evaluate`,
    # and says what each nudge was
    behaviour = _card(domain).behaviour
    assert behaviour is not None and behaviour.n == len(payloads) and behaviour.direction is None
    assert behaviour.shift_kept == pytest.approx(shifted, abs=1e-4)
    for m in pack.modality_names:
        alone = _answers(pack, predictor, [{**p, "inputs": {**p["inputs"], m: kind_of(pack.modality(m)).nudge(
            p["inputs"][m], pack.modality(m))}} for p in payloads])
        assert behaviour.invariance[m] == pytest.approx(np.mean([a == b for a, b in zip(before, alone, strict=True)]),
                                                        abs=1e-4) and behaviour.invariance[m] >= 0.9
    assert all(behaviour.nudges.values())


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_clearest_cases_of_every_class_are_answered_right(use_project: Path, domain: str) -> None:
    from mmops import pipeline
    from mmops.behaviour import CLEAR_PER_CLASS, clearest

    pack, rows, payloads, predictor = _held_out(domain)
    train = pipeline.load_manifest(domain).split("train")
    picked = clearest(rows, train, pack.classes, per_class=CLEAR_PER_CLASS)
    assert {rows[i]["label"] for i in picked} == set(pack.classes)
    answers = _answers(pack, predictor, [payloads[i] for i in picked])
    wrong = [(rows[i]["key"], rows[i]["label"], a) for i, a in zip(picked, answers, strict=True)
             if a != rows[i]["label"]]
    assert len(wrong) <= len(picked) // 6, f"{domain}: clear cases answered wrong (key, label, answer): {wrong}"
    # the model card says the same, measured by `mmops evaluate` on the same cases
    behaviour = _card(domain).behaviour
    assert (behaviour.clear_cases, behaviour.clear_right) == (len(picked), len(picked) - len(wrong))
