"""Transfer learning end to end on small budgets: self-supervised pretraining on the Daphnet recording, the
saved backbone fine-tuned on the industrial pack with freeze-then-unfreeze, and the results table command."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmops.pretrain import daphnet_windows, pretrain_sensor

pytestmark = pytest.mark.slow


def test_daphnet_windows_are_real_resampled_gait() -> None:
    w = daphnet_windows(10.0, 100, 10)
    assert w.shape[1:] == (3, 100) and len(w) >= 250  # 3 sensor locations x ~100 windows
    assert np.isfinite(w).all()
    # vertical acceleration sits near 1 g (1000 mg) at every location: these are real accelerometers
    assert 700 < np.median(np.abs(w[:, 1])) < 1300


def test_pretrain_then_fine_tune_with_freeze_then_unfreeze(project: Path, tmp_path: Path) -> None:
    from mmops import pipeline

    summary = pretrain_sensor(daphnet_windows(10.0, 100, 10)[::3], "cnn", tmp_path / "ssl.safetensors",
                              epochs=6, batch_size=32, seed=0, source="daphnet")
    assert summary["last_loss"] < summary["first_loss"] < summary["chance_loss"] + 0.5
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(epochs=4, freeze_epochs=2, sensor_encoder="cnn",
                           init_weights={"accel": str(tmp_path / "ssl.safetensors")})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline.pull_domain("industrial")
    for stage in ("ingest", "label", "validate", "build", "train"):
        pipeline.STAGES[stage]("industrial")
    card = json.loads((project / "artifacts" / "industrial" / "model" / "model_card.json").read_text())
    assert card["init"]["accel"].startswith("file:") and card["init"]["gyro"] == "random"
    frozen = [int(line.split(",")[-1]) for line in
              (project / "artifacts" / "industrial" / "history.csv").read_text().splitlines()[1:]]
    assert frozen == [1, 1, 0, 0]  # accel's backbone frozen for 2 epochs, then fine-tuned


def test_results_table_puts_ucr_baselines_beside_our_models(project: Path, tmp_path: Path) -> None:
    from mmops.results import run, to_markdown

    rows = run(["industrial"], quick=True, ucr=("GunPoint",), epochs=2)
    models = [(r.dataset.split(" ")[0], r.model) for r in rows]
    assert ("industrial", "fusion: concat") in models and ("industrial", "only accel") in models
    assert ("industrial", "1-NN DTW (aeon)") in models and ("UCR", "1-NN Euclidean (aeon)") in models
    assert all(0 <= r.accuracy <= 1 and r.n_test > 0 for r in rows)
    gunpoint_dtw = next(r for r in rows if r.dataset.startswith("UCR") and "DTW" in r.model)
    assert gunpoint_dtw.n_test == 150 and gunpoint_dtw.accuracy > 0.85  # the archive reports 0.907
    md = to_markdown(rows, "mmops results --quick")
    assert md.count("\n| ") == len(rows) + 2 and "non-commercial" in md  # header, rule, rows
