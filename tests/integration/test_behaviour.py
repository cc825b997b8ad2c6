"""Behavioural tests of the trained models (the tests/model idea of Made-With-ML), on the bundled packs'
held-out records sent as a client sends them and decoded as the service decodes them:

- invariance: a change the model must not care about (`mmops.shifts.nudge_record`: a sensor 5 % more
  sensitive, 5 % less light) keeps its answers;
- minimum functionality: the clearest held-out cases of every class (nearest their class's training records
  in the input statistics, relative to the other classes') are answered right.

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


def _answers(pack: Any, predictor: Any, payloads: list[dict[str, Any]]) -> list[str]:
    from mmops.serving.schemas import decode_record

    probs = predictor.predict_proba([decode_record(pack, p)[0] for p in payloads])
    return [pack.classes[i] for i in np.asarray(probs).argmax(axis=1)]


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_change_the_model_must_not_care_about_keeps_its_answers(use_project: Path, domain: str) -> None:
    from mmops.shifts import nudge_record, shift_record

    pack, _, payloads, predictor = _held_out(domain)
    nudged = [nudge_record(pack, p) for p in payloads]
    assert all(n is not None and n["inputs"] != p["inputs"] for n, p in zip(nudged, payloads, strict=True))
    before = _answers(pack, predictor, payloads)
    after = _answers(pack, predictor, [n for n in nudged if n is not None])
    kept = np.mean([a == b for a, b in zip(before, after, strict=True)])
    assert kept >= 0.9, f"{domain}: {kept:.2f} of the answers kept after {pack.modality_names} were nudged"
    # the field's shift is no nudge: it changes what the records look like far more (the drift demo's)
    shifted = _answers(pack, predictor, [shift_record(pack, p) for p in payloads])
    assert np.mean([a == b for a, b in zip(before, shifted, strict=True)]) <= kept


def _clearest(rows: list[dict[str, Any]], train: list[dict[str, Any]], classes: tuple[str, ...],
              per_class: int) -> list[int]:
    """Per class, the test rows nearest their class's training centroid relative to the nearest other one,
    in standardised input statistics."""
    keys = sorted({f"{m}.{k}" for r in train for m, f in r["files"].items() for k in f["stats"]})

    def vec(r: dict[str, Any]) -> np.ndarray:
        flat = {f"{m}.{k}": v for m, f in r["files"].items() for k, v in f["stats"].items()}
        return np.array([float(flat.get(k, np.nan)) for k in keys])

    x_train = np.array([vec(r) for r in train])
    mu, sd = np.nanmean(x_train, axis=0), np.nanstd(x_train, axis=0) + 1e-9
    z_train = np.nan_to_num((x_train - mu) / sd)
    centroids = {c: z_train[[r["label"] == c for r in train]].mean(axis=0) for c in classes}
    picked = []
    for c in classes:
        scored = []
        for i, r in enumerate(rows):
            if r["label"] != c:
                continue
            z = np.nan_to_num((vec(r) - mu) / sd)
            own = np.linalg.norm(z - centroids[c])
            other = min(np.linalg.norm(z - centroids[o]) for o in classes if o != c)
            scored.append((own - other, i))
        picked += [i for _, i in sorted(scored)[:per_class]]
    return picked


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_clearest_cases_of_every_class_are_answered_right(use_project: Path, domain: str) -> None:
    from mmops import pipeline

    pack, rows, payloads, predictor = _held_out(domain)
    train = pipeline.load_manifest(domain).split("train")
    picked = _clearest(rows, train, pack.classes, per_class=3)
    assert {rows[i]["label"] for i in picked} == set(pack.classes)
    answers = _answers(pack, predictor, [payloads[i] for i in picked])
    wrong = [(rows[i]["key"], rows[i]["label"], a) for i, a in zip(picked, answers, strict=True)
             if a != rows[i]["label"]]
    assert len(wrong) <= len(picked) // 6, f"{domain}: clear cases answered wrong (key, label, answer): {wrong}"
