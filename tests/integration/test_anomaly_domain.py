"""An anomaly-detection domain through the CLI stages on real data: the bundled cardiac-ecg pack (MIT-BIH,
one annotated anomalous stretch) landed, ingested, labeled, validated, built on its own time split, a
detector fitted on the normal training records only, calibrated, evaluated and registered, each `mmops`
command a process of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_project, run_mmops

pytestmark = pytest.mark.slow


def _stage(root: Path, *args: str) -> dict:
    done = run_mmops(root, *args, "--json")
    assert done.returncode == 0, f"{args}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    return json.loads(done.stdout)


def test_a_detector_fitted_on_normal_ecg_flags_the_annotated_anomaly(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"cardiac": "cardiac-ecg"})
    assert run_mmops(root, "data", "pull", "--domain", "cardiac").returncode == 0
    for stage in ("ingest", "label", "validate", "build"):
        _stage(root, stage, "--domain", "cardiac")
    trained = _stage(root, "train", "--domain", "cardiac")
    card = json.loads((root / "artifacts" / "cardiac" / "model" / "model_card.json").read_text())
    assert card["arch"]["task"] == "anomaly" and card["dataset_split_counts"]["train"] == 51
    assert card["arch"]["banks"]["ecg"]["vectors"] < 51 * 46  # a coreset of the training windows
    assert trained["val_metrics"]["fpr"] <= 0.05  # on the calibration normals themselves
    evaluated = _stage(root, "evaluate", "--domain", "cardiac")
    assert evaluated["promoted"] and evaluated["auroc"] >= 0.9, evaluated
    metrics = json.loads((root / "artifacts" / "cardiac" / "metrics.json").read_text())
    assert metrics["n"] == 42 and metrics["n_anomalous"] == 8 and metrics["recall"] >= 0.75, metrics
    for plot in ("anomaly_scores.png", "roc.png", "pr.png"):
        assert (root / "artifacts" / "cardiac" / plot).stat().st_size > 5000
    registry = _stage(root, "registry", "--domain", "cardiac")
    assert registry["versions"][0]["metrics"]["auroc"] == pytest.approx(evaluated["auroc"])

    # a pack that calls itself anomaly detection without a normal class is refused, in one line
    broken = (root / "domains")
    broken.mkdir(exist_ok=True)
    yaml_text = (Path(__file__).parents[2] / "mmops" / "domains" / "cardiac.yaml").read_text()
    (broken / "cardiac.yaml").write_text(yaml_text.replace("task_options: {normal_class: normal}", ""))
    done = run_mmops(root, "train", "--domain", "cardiac")
    assert done.returncode != 0 and "needs task_options.normal_class" in done.stderr + done.stdout
