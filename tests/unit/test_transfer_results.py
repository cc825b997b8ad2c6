"""Transfer learning end to end on small budgets: self-supervised pretraining on the Daphnet recording, the
saved backbone fine-tuned on the industrial pack with freeze-then-unfreeze, and the results table command."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmops.pretrain import daphnet_windows, pretrain_audio, pretrain_sensor

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
    from mmops.results import run
    from mmops.results_page import this_run, to_markdown

    rows = run(["industrial"], quick=True, ucr=("GunPoint",), epochs=2)
    models = [(r.dataset.split(" ")[0], r.model) for r in rows]
    assert ("industrial", "fusion: concat") in models and ("industrial", "only accel") in models
    assert ("industrial", "1-NN DTW (aeon)") in models and ("UCR", "1-NN Euclidean (aeon)") in models
    assert all(0 <= r.accuracy <= 1 and r.n_test > 0 for r in rows)
    gunpoint_dtw = next(r for r in rows if r.dataset.startswith("UCR") and "DTW" in r.model)
    assert gunpoint_dtw.n_test == 150 and gunpoint_dtw.accuracy > 0.85  # the archive reports 0.907
    md = to_markdown(rows, [this_run("mmops results --quick", rows)])
    assert md.count("\n| ") == len(rows) + 2  # header, rule, rows
    assert "` at " in md and md.count("\n- `mmops results --quick` at ") == 1 and ": industrial, UCR\n" in md


def test_fusion_is_compared_with_the_best_single_modality_fold_by_fold() -> None:
    from mmops.results import Row, _mean_rows

    def fold(fusion: float, accel: float, gyro: float) -> list[Row]:
        return [Row("d", "fusion: attention", fusion, fusion, None, 16, 1.0),
                Row("d", "only accel", accel, accel, None, 16, 1.0, "test records with accel"),
                Row("d", "only gyro", gyro, gyro, None, 16, 1.0, "test records with gyro")]

    rows = _mean_rows([fold(0.75, 0.5, 0.75), fold(0.75, 0.5, 0.5), fold(0.5, 0.5, 1.0)], "d", "3-fold")
    fusion, accel, gyro = rows
    assert fusion.accuracy == pytest.approx(2 / 3) and gyro.accuracy == pytest.approx(0.75)
    # gyro is the best single modality on average (0.75 vs 0.5): fusion is paired with gyro's folds
    assert "vs only gyro: -0.083, folds won/tied/lost 1/1/1, sign test p=1" in fusion.note
    assert "vs" not in accel.note and accel.note.startswith("3-fold CV") and "test records with accel" in accel.note


def test_early_classification_rows_cut_every_sensor_to_its_first_seconds(project: Path) -> None:
    from mmops.results import run_domain

    rows = run_domain("industrial", quick=True, epochs=1, folds=2, first_seconds=1.0, repeats=2)
    assert {r.model for r in rows} >= {"fusion: concat", "only accel", "1-NN DTW (aeon)"}
    assert all(r.dataset.startswith("industrial, first 1 s (10 samples") and r.n_test == 160 for r in rows)
    fusion = next(r for r in rows if r.model == "fusion: concat")
    won, tied, lost = map(int, fusion.note.split("won/tied/lost ")[1].split(",")[0].split("/"))
    assert "2x2-fold CV" in fusion.note and won + tied + lost == 4


def test_results_are_the_same_whatever_thread_count_the_machine_gives_torch(project: Path) -> None:
    """docs/results.md must reproduce on another machine: the models' figures do not depend on how many
    threads torch would use there (they did: JapaneseVowels cnn_gru 0.970 in the page, 0.932 on a rerun).
    The page names the commit and the thread count it was made with."""
    import torch

    from mmops.results import TORCH_THREADS, run
    from mmops.results_page import this_run, to_markdown

    before = torch.get_num_threads()
    figures = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            rows = run([], ucr=("JapaneseVowels",), epochs=40)
            figures.append([(r.model, r.accuracy, r.macro_f1, r.auroc) for r in rows if r.model.startswith("mmops")])
    finally:
        torch.set_num_threads(before)
    assert figures[0] == figures[1] and len(figures[0]) == 2
    md = to_markdown(rows, [this_run("mmops results --ucr JapaneseVowels", rows)])
    assert f"{TORCH_THREADS} torch thread" in md and ("at commit " in md or "at no git commit" in md)


def test_merging_replaces_one_data_sets_rows_and_keeps_the_others_with_their_runs() -> None:
    from mmops.results import Row
    from mmops.results_page import Run, from_markdown, merge, to_markdown

    first = [Row("medical (m-1)", "fusion: attention", 0.9, 0.9, 0.95, 120, 10.0),
             Row("industrial, first 1 s (10 samples, 80 records)", "only accel", 0.7, 0.6, None, 240, 2.0, "3x5-fold CV"),
             Row("UCR GunPoint (50/150, 1 ch)", "1-NN DTW (aeon)", 0.907, 0.907, None, 150, 1.1, "UCR baseline")]
    runs = [Run("mmops results", "abc123 on 2026-12-03 (mmops 0.1.0, torch 2.13.0+cpu, x86_64, CPU, 1 torch thread)",
                ("medical", "industrial", "UCR"))]
    table = from_markdown(to_markdown(first, runs))
    assert table == (runs, first)  # the page reads back exactly

    again = [Row("industrial (i-2, 80 records)", "fusion: gated", 1.0, 1.0, 1.0, 80, 5.0, "5-fold CV")]
    new = Run("mmops results --merge -d industrial", "def456 on 2026-12-04 (...)", ("industrial",))
    new_runs, rows = merge(table, new, again)
    assert [r.model for r in rows] == ["fusion: attention", "fusion: gated", "1-NN DTW (aeon)"]  # UCR stays last
    assert [r.keys for r in new_runs] == [("medical", "UCR"), ("industrial",)]
    surveillance = [Row("surveillance (s-1)", "only camera", 0.5, 0.5, 0.6, 24, 3.0)]
    md = to_markdown(*reversed(merge((new_runs, rows), Run("c", "d", ("surveillance",)), surveillance)))
    assert "The surveillance pack is composed: 4 s clips" in md
    assert "alsa-utils recordings: GPL-2" in md and "CC BY-NC-ND 4.0 (non-commercial use only)" in md  # medical's
    assert "industrial pack is composed" not in md  # a real recording, not composed
    with pytest.raises(Exception, match="which run"):
        from_markdown("| medical | x | 1.000 | 1.000 | - | 1 | 1.0 |  |\n")


def test_audio_pretraining_learns_and_its_weights_load_strictly_into_the_kinds_encoder(tmp_path: Path) -> None:
    from mmops.datasets import scenes
    from mmops.modalities.audio import AudioKind, AudioSpec
    from mmops.models.image import load_backbone_weights

    room, voices, impacts = scenes.sounds()
    spec = AudioSpec(name="mic", clip_seconds=1.0)
    rate = spec.sample_rate_hz
    clips = [c[:rate].astype("float32") for c in voices + impacts]
    clips += [room[i * rate // 2:(i + 2) * rate // 2].astype("float32") for i in range(12)]
    summary = pretrain_audio(clips, spec, tmp_path / "ssl.safetensors", epochs=6, batch_size=24, seed=0,
                             source="test clips")
    assert summary["clips"] == len(clips) == 24 and summary["frames"] == spec.frames
    assert summary["last_loss"] < summary["first_loss"], summary
    backbone = AudioKind().encoder(spec, {}, pretrained=False).backbone
    load_backbone_weights(backbone, tmp_path / "ssl.safetensors")  # strict: every key matches
