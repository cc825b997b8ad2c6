"""The anomaly task kind: packs that declare it, a model fitted on real normal ECG records only, calibrated,
saved and loaded back, and the errors a user meets."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmops.config import AnomalyParams
from mmops.datasets.sources import package_file
from mmops.domains import DomainPack
from mmops.errors import ValidationFailedError
from mmops.tasks import task_of
from mmops.tasks.anomaly.model import AnomalyModel
from mmops.tasks.anomaly.training import train_anomaly

RATE, RECORD = 360, 720  # MIT-BIH's rate; 2 s records

PACK = {"name": "cardiac", "description": "MIT-BIH ECG, 2 s records", "classes": ["normal", "anomaly"],
        "task": "anomaly", "task_options": {"normal_class": "normal"},
        "modalities": [{"name": "ecg", "kind": "sensor", "channels": ["mlii"], "length": RECORD,
                        "sample_rate_hz": RATE}]}


@pytest.fixture(scope="module")
def records() -> tuple[list[dict], np.ndarray]:
    """2 s windows of sktime's mitdb.csv every 1/8 s: anomalous when one holds at least half of the annotated
    stretch, normal when it holds none of it (in between: left out)."""
    raw = np.loadtxt(package_file("sktime", "sktime/datasets/data/mitdb/mitdb.csv"), delimiter=",", skiprows=1)
    signal, anomalous = raw[:, :1], raw[:, 1].astype(bool)
    out, y = [], []
    for s in range(0, len(raw) - RECORD, 45):
        held = anomalous[s:s + RECORD].sum()
        if held == 0 or held >= anomalous.sum() / 2:
            out.append({"ecg": signal[s:s + RECORD].astype(np.float32)})
            y.append(held > 0)
    return out, np.array(y)


def test_a_pack_declares_its_normal_class_and_only_kinds_the_task_scores() -> None:
    assert DomainPack.model_validate(PACK).task_options == {"normal_class": "normal"}
    for options, message in (({}, "needs task_options.normal_class"),
                             ({"normal_class": "fine"}, "needs task_options.normal_class"),
                             ({"normal_class": "normal", "scorer": "x"}, "unknown scorer 'x'"),
                             ({"normal_class": "normal", "window": 3}, "unknown task_options")):
        with pytest.raises(ValueError, match=message):
            DomainPack.model_validate({**PACK, "task_options": options})
    text = {**PACK, "modalities": [*PACK["modalities"], {"name": "notes", "kind": "text"}]}
    assert DomainPack.model_validate(text).modality("notes").kind == "text"  # scored with MiniLM embeddings
    with pytest.raises(ValueError, match="task classification takes no task_options"):
        DomainPack.model_validate({**PACK, "task": "classification"})


def test_fitted_on_normal_ecg_it_finds_the_anomaly_at_the_calibrated_rate(records, tmp_path: Path) -> None:
    values, y = records
    pack = DomainPack.model_validate(PACK)
    normal = np.flatnonzero(~y)
    fit, cal = normal[:60], normal[60:100]  # time order: the bank never sees what it is scored on
    test = np.setdiff1d(np.arange(len(y)), np.concatenate([fit, cal]))
    assert y[test].sum() >= 8 and (~y[test]).sum() >= 20
    options = AnomalyParams(fpr=0.05)
    model = AnomalyModel.fit(pack, [values[i] for i in fit], options)
    calibration = model.calibrate([values[i] for i in cal])
    assert calibration.n_normal == 40
    scored = model.score([values[i] for i in test])
    assert roc_auc_score(y[test], scored.score) > 0.9
    assert scored.driver == ["ecg"] * len(test)
    again = model.score([values[i] for i in cal])
    assert again.is_anomaly.mean() <= 0.05  # the calibration normals: at most the target share flagged
    np.testing.assert_array_equal(again.is_anomaly, again.score > 1.0)  # 1.0 is the threshold

    task = task_of("anomaly")
    model.save(tmp_path)
    (tmp_path / "model_card.json").write_text("{}")  # no card: loading says so
    with pytest.raises(Exception, match="model card"):
        task.load(tmp_path)


def test_too_few_normals_or_none_at_all_is_a_clear_error(records) -> None:
    values, y = records
    pack = DomainPack.model_validate(PACK)
    with pytest.raises(ValidationFailedError, match="9 normal training records cannot describe normal operation"):
        AnomalyModel.fit(pack, values[:9], AnomalyParams())
    manifest = SimpleNamespace(split=lambda s: [{"label": "anomaly", "files": {}}] * 20)
    with pytest.raises(ValidationFailedError, match="every training record of cardiac is labeled anomalous"):
        train_anomaly(pack, manifest, Path("/nonexistent"), SimpleNamespace(anomaly=AnomalyParams()), 0, Path("x"))


def test_the_cardiac_pack_splits_by_time_and_no_record_overlaps_another_split(tmp_path: Path) -> None:
    import csv

    from mmops.datasets.packs import ECG_RECORD, pull

    result = pull("cardiac-ecg", tmp_path)
    assert result.class_counts == {"normal": 107, "anomaly": 8}
    rows = list(csv.DictReader((tmp_path / "cardiac" / "labels.csv").open()))
    spans = {s: [(int(r["sample_id"].split("_")[1]), r["label"]) for r in rows if r["split"] == s]
             for s in ("train", "val", "test")}
    assert {label for _, label in spans["train"] + spans["val"]} == {"normal"}  # anomalies only measure
    for earlier, later in (("train", "val"), ("val", "test")):
        assert max(s for s, _ in spans[earlier]) + ECG_RECORD <= min(s for s, _ in spans[later])
    ecg = np.loadtxt(tmp_path / "cardiac" / "ecg" / f"{rows[0]['sample_id']}.csv", delimiter=",", skiprows=1)
    assert ecg.shape == (ECG_RECORD, 2)  # timestamp + lead MLII


def test_the_results_page_holds_anomaly_rows_in_their_own_table_and_reads_them_back() -> None:
    from mmops.results import Row
    from mmops.results_page import Run, from_markdown, merge, to_markdown
    from mmops.tasks.anomaly.results import AnomalyRow

    rows = [Row("medical (m-1)", "fusion: attention", 0.9, 0.9, 0.95, 120, 10.0),
            AnomalyRow("cardiac (c-1, 42 test records)", "mmops memory bank, coreset 20%", 1.0, 1.0, 1.0, 1.0, 0.0,
                       42, 8, 1.0, "vs best anchor (ROCKAD (aeon)): +0.000 AUROC"),
            AnomalyRow("cardiac (c-1, 42 test records)", "LOF (scikit-learn)", 0.658, 0.386, 0.533, 0.5, 0.088, 42,
                       8, 1.5, "anchor"),
            Row("UCR GunPoint (50/150, 1 ch)", "1-NN DTW (aeon)", 0.907, 0.907, None, 150, 1.1, "UCR baseline")]
    runs = [Run("mmops results", "abc on 2026-12-05 (...)", ("medical", "cardiac", "UCR"))]
    md = to_markdown(rows, runs)
    assert md.index("| data set | model |") < md.index("## Anomaly detection") < md.index("| data set | detector |")
    assert "| cardiac (c-1, 42 test records) | LOF (scikit-learn) | 0.658 | 0.386 | 0.533 | 0.500 | 0.088 | 42 | 8 |" in md
    assert from_markdown(md) == (runs, [rows[0], rows[3], rows[1], rows[2]])  # each table's rows, in order
    again = [AnomalyRow("cardiac (c-2, 42 test records)", "ROCKAD (aeon)", 1.0, 1.0, 0.0, 0.0, 0.0, 42, 8, 1.5,
                        "anchor")]
    _, merged = merge(from_markdown(md), Run("mmops results --merge -d cardiac", "def", ("cardiac",)), again)
    assert [r.model for r in merged] == ["fusion: attention", "ROCKAD (aeon)", "1-NN DTW (aeon)"]


def test_anchors_run_on_the_same_normal_records_and_ours_beats_the_flat_ones(records) -> None:
    from sklearn.metrics import roc_auc_score

    from mmops.tasks.anomaly.anchors import anchor_scores

    values, y = records
    pack = DomainPack.model_validate(PACK)
    normal = np.flatnonzero(~y)
    fit, test = normal[:60], np.setdiff1d(np.arange(len(y)), normal[:100])
    model = AnomalyModel.fit(pack, [values[i] for i in fit], AnomalyParams())
    anchors = anchor_scores(pack, model.prep, [values[i] for i in fit], [[values[i] for i in test]], 0,
                            points=False)
    assert set(anchors) == {"IsolationForest (scikit-learn)", "LOF (scikit-learn)", "ROCKAD (aeon)"}
    ours = roc_auc_score(y[test], model.modality_scores([values[i] for i in test])["ecg"])
    for name, ((scores,), seconds) in anchors.items():
        assert scores.shape == (len(test),) and np.isfinite(scores).all() and seconds > 0, name
    flat = max(roc_auc_score(y[test], anchors[n][0][0]) for n in ("IsolationForest (scikit-learn)",
                                                                  "LOF (scikit-learn)"))
    assert ours > flat, (ours, flat)  # phase-aligned sub-windows vs whole records compared sample by sample


def test_an_image_and_a_sensor_scored_together_name_the_modality_that_is_unusual(records) -> None:
    """Real brick-wall crops (scikit-image, BSD-3) beside real normal ECG windows; a COMPOSED defect (a
    square of real gravel pasted on the wall) must flag its record and be named as the reason."""
    from PIL import Image

    brick = np.asarray(Image.open(package_file("scikit-image", "skimage/data/brick.png")))
    gravel = np.asarray(Image.open(package_file("scikit-image", "skimage/data/gravel.png")))
    rng = np.random.default_rng(0)

    def crop(defect: bool) -> np.ndarray:
        r, c = rng.integers(0, brick.shape[0] - 64, 2)
        img = brick[r:r + 64, c:c + 64].copy()
        if defect:
            y, x = rng.integers(0, 48, 2)
            img[y:y + 16, x:x + 16] = gravel[:16, :16]
        return img[:, :, None]

    values, y = records
    ecg = [values[i]["ecg"] for i in np.flatnonzero(~y)]
    pack = DomainPack.model_validate({**PACK, "modalities": [
        *PACK["modalities"], {"name": "wall", "kind": "image", "size": [64, 64], "channels": 1}]})
    normal = [{"ecg": ecg[i], "wall": crop(False)} for i in range(40)]
    model = AnomalyModel.fit(pack, normal[:25], AnomalyParams())
    model.calibrate(normal[25:])
    test = [{"ecg": ecg[40 + i], "wall": crop(defect=i % 2 == 1)} for i in range(20)]
    scored = model.score(test)
    defects = np.arange(20) % 2 == 1
    assert roc_auc_score(defects, scored.score) > 0.9
    assert [d for d, f in zip(scored.driver, scored.is_anomaly, strict=True) if f] == ["wall"] * int(
        scored.is_anomaly.sum()) and scored.is_anomaly[defects].mean() >= 0.7
    only_ecg = model.score([{"ecg": ecg[60]}])  # a record without the image is scored on what it has
    assert only_ecg.driver == ["ecg"] and np.isnan(only_ecg.per_modality["wall"][0])


def test_the_autoencoder_scorer_learns_normal_ecg_and_comes_back_the_same(records, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`scorer: autoencoder`: a learned embedding in a memory bank and a reconstruction error, each its own
    view with its own threshold; the same normal windows give the same network; saved and loaded back, it
    scores the same."""
    values, y = records
    pack = DomainPack.model_validate({**PACK, "task_options": {"normal_class": "normal", "scorer": "autoencoder"}})
    normal = np.flatnonzero(~y)
    fit, cal = normal[:60], normal[60:100]
    test = np.setdiff1d(np.arange(len(y)), np.concatenate([fit, cal]))
    model = AnomalyModel.fit(pack, [values[i] for i in fit], AnomalyParams(fpr=0.05))
    model.calibrate([values[i] for i in cal])
    assert set(model.banks) == {"ecg:embedding", "ecg:reconstruction"} and set(model.nets) == {"ecg"}
    assert model.banks["ecg:embedding"].bank.shape[1] == 16  # the bottleneck, not the 360-sample window
    per = model.modality_scores([values[i] for i in test])
    for view, scores in per.items():  # each view alone tells the anomaly from normal rhythm
        assert roc_auc_score(y[test], scores) > 0.9, view
    scored = model.score([values[i] for i in test])
    assert roc_auc_score(y[test], scored.score) > 0.9 and set(scored.driver) == {"ecg"}
    assert scored.is_anomaly[y[test]].mean() >= 0.75 and scored.is_anomaly[~y[test]].mean() <= 0.15

    # trained again as `mmops train` trains it (its card written), loaded back as the service loads it: the
    # same normal windows and seed gave the same network, and it scores as the first one did
    rows = {"train": [{"i": int(i), "label": "normal"} for i in fit],
            "val": [{"i": int(i), "label": "normal"} for i in cal]}
    manifest = SimpleNamespace(split=rows.__getitem__, id="cardiac-test", split_counts={"train": 60, "val": 40})
    monkeypatch.setattr("mmops.tasks.anomaly.training.load_split",
                        lambda pack, root, chosen: [values[r["i"]] for r in chosen])
    train_anomaly(pack, manifest, tmp_path, SimpleNamespace(anomaly=AnomalyParams(fpr=0.05)), 0, tmp_path / "model")
    loaded = task_of("anomaly").load(tmp_path / "model")
    assert set(loaded.nets) == {"ecg"}
    np.testing.assert_allclose(loaded.score([values[i] for i in test]).score, scored.score, rtol=1e-5)


def test_the_point_detectors_score_each_record_by_its_most_anomalous_point(records) -> None:
    """aeon's STOMP, MERLIN and KMeansAD on each record of a univariate series (a few records: the matrix
    profile is the slow part); KMeansAD fitted on the normal training records only."""
    from mmops.tasks.anomaly.anchors import point_anchors, series

    values, y = records
    pack = DomainPack.model_validate(PACK)
    normal = np.flatnonzero(~y)
    model = AnomalyModel.fit(pack, [values[i] for i in normal[:20]], AnomalyParams())
    picked = [*np.flatnonzero(y)[:3], *normal[-3:]]
    fit = series(pack, model.prep, [values[i] for i in normal[:20]])
    scored = series(pack, model.prep, [values[i] for i in picked])
    assert fit is not None and scored is not None and fit.shape == (20, 1, RECORD)
    anchors = point_anchors(fit, [scored], 0)
    assert set(anchors) == {"STOMP (aeon)", "MERLIN (aeon)", "KMeansAD (aeon)"}
    import torch

    threads = torch.get_num_threads()
    try:
        scores = {name: run()[0] for name, run in anchors.items()}
    finally:
        torch.set_num_threads(threads)  # aeon's numba kernels reset it, as anchor_scores knows
    for name, s in scores.items():
        assert s.shape == (6,) and np.isfinite(s).all(), name
    stomp = scores["STOMP (aeon)"]
    assert stomp[:3].mean() > stomp[3:].mean()  # the anomalous beats are the records' discords


def test_real_reports_unlike_the_normal_ones_score_higher() -> None:
    """Text: MiniLM embeddings of real chest X-ray reports (Indiana University collection via
    torchxrayvision, CC BY-NC-ND 4.0: non-commercial) in a bank of normal studies' reports; reports of
    abnormal studies score higher, and a report of another kind altogether (a log line) is flagged."""
    from mmops.datasets.packs import read_cxr_reports

    reports = read_cxr_reports()
    normal = [t for _, t, label in reports if label == "normal"]
    abnormal = [t for _, t, label in reports if label == "abnormal"]
    pack = DomainPack.model_validate({
        "name": "reports", "description": "chest X-ray reports", "classes": ["normal", "abnormal"],
        "task": "anomaly", "task_options": {"normal_class": "normal"}, "modalities": [{"name": "report", "kind": "text"}]})
    model = AnomalyModel.fit(pack, [{"report": t} for t in normal[:120]], AnomalyParams(fpr=0.05))
    model.calibrate([{"report": t} for t in normal[120:180]])
    assert model.banks["report"].bank.shape == (120, 384)  # one sentence embedding per normal report
    test = [{"report": t} for t in normal[180:240] + abnormal[:60]]
    y = np.array([False] * 60 + [True] * 60)
    scored = model.score(test)
    assert roc_auc_score(y, scored.score) > 0.8, roc_auc_score(y, scored.score)
    assert scored.is_anomaly[~y].mean() <= 0.15 and set(scored.driver) == {"report"}
    odd = model.score([{"report": "ERROR 2026-12-05 disk /dev/sda1 full, write failed (errno 28)"}])
    assert odd.is_anomaly[0] and odd.score[0] > scored.score[y].mean()
