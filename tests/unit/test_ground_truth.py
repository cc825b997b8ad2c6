"""Delayed ground truth: labels that come in after serving, joined with the prediction log by record id."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mmops.monitoring import read_ground_truth, served_performance


def _log(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n", encoding="utf-8")
    return path


def test_served_accuracy_counts_only_labeled_records_of_the_model_and_window(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.jsonl", [
        {"ts": 100.0, "record_id": "a", "checkpoint_sha256": "m1", "prediction": "walking"},
        {"ts": 200.0, "record_id": "a", "checkpoint_sha256": "m1", "prediction": "running"},  # the latest answer
        {"ts": 200.0, "record_id": "b", "checkpoint_sha256": "m1", "prediction": "standing"},
        {"ts": 200.0, "record_id": "c", "checkpoint_sha256": "m2", "prediction": "walking"},  # another model
        {"ts": 50.0, "record_id": "d", "checkpoint_sha256": "m1", "prediction": "walking"},  # before the window
        {"ts": 200.0, "record_id": "e", "checkpoint_sha256": "m1", "prediction": "walking"},  # no label yet
    ])
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "1.csv").write_text("sample_id,label\na,walking\nb,standing\nc,walking\nd,walking\n")
    (tmp_path / "gt" / "2.csv").write_text("sample_id,label\na,running\n")  # a later correction wins
    (tmp_path / "gt" / "3.csv").write_text("who;verdict\nb;walking\n")  # unreadable: named, not used
    (tmp_path / "gt" / "4.csv").write_text("id;class\ne;walking\n")  # a spreadsheet's ';' export: read
    truth, problems = read_ground_truth(sorted((tmp_path / "gt").iterdir()))
    assert truth == {"a": "running", "b": "standing", "c": "walking", "d": "walking", "e": "walking"}
    assert len(problems) == 1 and problems[0].startswith("3.csv") and "'sample_id', 'id'" in problems[0]
    del truth["e"]

    perf = served_performance(log, "m1", 60.0, truth)
    assert {k: perf[k] for k in ("n_labeled", "accuracy", "macro_f1")} == {"n_labeled": 2, "accuracy": 1.0,
                                                                        "macro_f1": 1.0}
    assert perf["estimated_accuracy"] is None and perf["n_estimated"] == 0  # no probabilities logged
    truth["b"] = "walking"
    assert served_performance(log, "m1", 60.0, truth)["accuracy"] == 0.5
    assert served_performance(log, "m1", None, truth)["n_labeled"] == 3  # no window: d counts too
    assert served_performance(log, "m1", 60.0, {})["n_labeled"] == 0


def test_accuracy_is_estimated_without_labels_from_the_answered_probabilities(tmp_path: Path) -> None:
    """CBPE: each answer counts the probability of the class it gave (the latest answer per record id, each
    unnamed answer on its own); the estimate on the labeled answers alone stands beside their accuracy."""
    log = _log(tmp_path / "log.jsonl", [
        {"ts": 100.0, "record_id": "a", "checkpoint_sha256": "m1", "prediction": "x", "probabilities": [0.5, 0.5]},
        {"ts": 200.0, "record_id": "a", "checkpoint_sha256": "m1", "prediction": "x", "probabilities": [0.9, 0.1]},
        {"ts": 200.0, "record_id": "b", "checkpoint_sha256": "m1", "prediction": "y", "probabilities": [0.3, 0.7]},
        {"ts": 200.0, "record_id": None, "checkpoint_sha256": "m1", "prediction": "x", "probabilities": [0.8, 0.2]},
        {"ts": 200.0, "record_id": None, "checkpoint_sha256": "m1", "prediction": "x", "probabilities": [0.6, 0.4]},
        {"ts": 200.0, "record_id": "c", "checkpoint_sha256": "m1", "prediction": "x", "probabilities": ["nan", 1]},
        {"ts": 200.0, "record_id": "d", "checkpoint_sha256": "m2", "prediction": "x", "probabilities": [1.0, 0.0]},
    ])
    perf = served_performance(log, "m1", None, {"a": "y", "b": "y"})
    confidences = [0.9, 0.7, 0.8, 0.6]  # a's latest, b, the two unnamed; c's are not numbers, d is m2's
    assert perf["n_estimated"] == 4 and perf["estimated_accuracy"] == pytest.approx(sum(confidences) / 4)
    band = 1.96 * math.sqrt(sum(p * (1 - p) for p in confidences)) / 4
    assert perf["estimated_band"] == pytest.approx(band)
    assert perf["accuracy"] == 0.5 and perf["estimated_accuracy_labeled"] == pytest.approx(0.8)
