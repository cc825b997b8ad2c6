"""The anomaly task's parts that need no model: the memory bank (nearest-neighbour scoring, the k-center
coreset) and the calibration (threshold at a false-positive rate, modalities on one scale, metrics), on real
MIT-BIH ECG windows where real data decides."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmops.datasets.sources import package_file
from mmops.errors import ValidationFailedError
from mmops.tasks.anomaly.calibration import (
    Calibration,
    allowed_above,
    anomaly_metrics,
    combine,
    expected_fpr,
    flagged_share_check,
    threshold_at_fpr,
)
from mmops.tasks.anomaly.memory_bank import MemoryBank, coreset_indices

WIN = 360  # 1 s at 360 Hz: the annotated anomaly (0.98 s) fits in one window
SPLIT = 4000  # normal beats before it fit the bank; the rest (normal and the anomaly) is scored


@pytest.fixture(scope="module")
def ecg() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MIT-BIH (sktime's mitdb.csv: one record, one annotated anomalous stretch): every 1 s window of the
    first part (all normal) at every offset, so the bank holds every phase of the beat; windows of the rest
    every 15 samples, and whether each lies in the anomaly (windows half in, half out are neither)."""
    raw = np.loadtxt(package_file("sktime", "sktime/datasets/data/mitdb/mitdb.csv"), delimiter=",", skiprows=1)
    signal, anomalous = raw[:, 0], raw[:, 1].astype(bool)
    assert not anomalous[:SPLIT].any()

    def windows(starts: np.ndarray) -> np.ndarray:
        x = np.stack([signal[s:s + WIN] for s in starts])
        return (x - x.mean(1, keepdims=True)).astype(np.float32)

    starts = np.arange(SPLIT, len(signal) - WIN, 15)
    share = np.array([anomalous[s:s + WIN].mean() for s in starts])
    starts = starts[(share > 0.5) | (share == 0)]
    return windows(np.arange(0, SPLIT - WIN)), windows(starts), np.array([anomalous[s:s + WIN].mean() > 0.5
                                                                          for s in starts])


def test_nearest_neighbour_distances_are_exact() -> None:
    rng = np.random.default_rng(0)
    bank, query = rng.normal(size=(300, 16)), rng.normal(size=(50, 16))
    d = np.linalg.norm(query[:, None] - bank[None], axis=2)
    for k in (1, 3):
        got = MemoryBank(bank.astype(np.float32), k).distances(query)
        np.testing.assert_allclose(got, np.sort(d, axis=1)[:, :k].mean(1), rtol=1e-5)


def test_a_record_scores_its_most_unusual_vector_and_locate_says_which() -> None:
    bank = MemoryBank.fit(np.zeros((20, 4), np.float32) + np.arange(20)[:, None] * 0.01)
    record = np.zeros((5, 4), np.float32)
    record[3] = 7.0  # one patch far from everything normal
    assert bank.score([record])[0] == pytest.approx(bank.locate([record])[0][3])
    assert int(np.argmax(bank.locate([record])[0])) == 3


def test_the_coreset_covers_the_features_better_than_a_random_subset_of_its_size() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.3, size=(n, 32)) for c, n in ((0, 2000), (5, 200), (-5, 20))])
    chosen = coreset_indices(x, 0.02, seed=0)
    assert len(chosen) == 45 and len(set(chosen.tolist())) == 45

    def radius(idx: np.ndarray) -> float:  # the farthest any vector is from the subset
        return float(MemoryBank(x[idx].astype(np.float32)).distances(x).max())

    rand = np.random.default_rng(2).choice(len(x), 45, replace=False)
    assert radius(chosen) < 0.8 * radius(rand)
    assert np.array_equal(coreset_indices(x, 1.0), np.arange(len(x)))


def test_on_real_ecg_a_bank_of_normal_beats_finds_the_anomaly_and_a_coreset_keeps_it(ecg) -> None:
    train, test, y = ecg
    assert y.sum() >= 20 and (~y).sum() >= 150
    full = MemoryBank.fit(train)
    small = MemoryBank.fit(train, coreset=0.2)  # 5x smaller
    assert len(small.bank) == int(np.ceil(0.2 * len(train)))
    auc_full = roc_auc_score(y, full.score(test))
    auc_small = roc_auc_score(y, small.score(test))
    assert auc_full > 0.9, auc_full
    assert abs(auc_full - auc_small) < 0.02, (auc_full, auc_small)


def test_bad_features_are_refused() -> None:
    with pytest.raises(ValidationFailedError, match="no normal feature vectors"):
        MemoryBank.fit([])
    with pytest.raises(ValidationFailedError, match="NaN or inf"):
        MemoryBank.fit(np.full((3, 2), np.nan))
    bank = MemoryBank.fit(np.zeros((3, 2)))
    with pytest.raises(ValidationFailedError, match="another width"):
        bank.score(np.zeros((1, 5)))


def test_the_threshold_flags_new_normals_at_most_at_the_target_rate_and_as_close_as_n_allows() -> None:
    rng = np.random.default_rng(3)
    for n, fpr in ((10, 0.05), (19, 0.05), (40, 0.05), (200, 0.05), (1000, 0.01), (57, 0.1)):
        s = rng.normal(size=n)
        above = int((s > threshold_at_fpr(s, fpr)).sum())
        assert above == allowed_above(n, fpr) and above <= fpr * n
        assert expected_fpr(n, fpr) == (above + 1) / (n + 1)
        assert expected_fpr(n, fpr) <= fpr or above == 0  # at most the target (10 normals cannot reach 0.05)
        assert (above + 2) / (n + 1) > fpr  # and no stricter than needed
    # the rate on new normals, averaged over many small calibration sets: at most the target and near it (letting
    # floor(fpr * n) of 40 normals above the threshold flagged new normals at 3 / 41 = 0.073)
    rates = [(rng.normal(size=2000) > threshold_at_fpr(rng.normal(size=40), 0.05)).mean() for _ in range(400)]
    assert 0.040 < np.mean(rates) <= 0.0525, np.mean(rates)
    t = threshold_at_fpr(rng.normal(size=5000), 0.05)
    assert abs((rng.normal(size=20000) > t).mean() - 0.05) < 0.01


def test_a_threshold_needs_enough_normals_and_a_rate_between_0_and_1() -> None:
    with pytest.raises(ValidationFailedError, match="9 held-out normal records cannot calibrate"):
        threshold_at_fpr(np.arange(9.0), 0.05)
    with pytest.raises(ValidationFailedError, match="not between 0 and 1"):
        threshold_at_fpr(np.arange(100.0), 0.0)


def test_modalities_on_one_scale_the_driver_named_and_a_missing_modality_skipped() -> None:
    scores = {"ecg": np.array([1.0, 10.0, np.nan, np.nan]), "image": np.array([200.0, 100.0, 50.0, np.nan])}
    combined, driver = combine(scores, {"ecg": 2.0, "image": 100.0})
    np.testing.assert_allclose(combined[:3], [2.0, 5.0, 0.5])
    assert np.isnan(combined[3]) and driver == ["image", "ecg", "image", None]


def test_calibration_round_trips_and_decides_per_record() -> None:
    rng = np.random.default_rng(4)
    normal = {"a": rng.normal(10, 1, 400), "b": rng.normal(1000, 100, 400)}
    cal = Calibration.fit(normal, 0.05)
    assert Calibration.from_json(cal.to_json()) == cal
    combined, flagged, driver = cal.decide({"a": np.array([10.0, 30.0]), "b": np.array([1000.0, 1000.0])})
    assert flagged.tolist() == [False, True] and driver[1] == "a"
    _, again, _ = cal.decide(normal)
    assert again.mean() <= 0.05


def test_metrics_at_the_threshold() -> None:
    y = np.array([0, 0, 0, 0, 1, 1], bool)
    m = anomaly_metrics(y, np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.95]), threshold=0.5)
    assert m["auroc"] == pytest.approx(0.875) and m["recall"] == 1.0 and m["precision"] == pytest.approx(2 / 3)
    assert m["fpr"] == 0.25 and m["n_anomalous"] == 2 and m["flagged_share"] == pytest.approx(0.5)
    only_normal = anomaly_metrics(np.zeros(4, bool), np.arange(4.0), threshold=2.5)
    assert only_normal["auroc"] is None and only_normal["fpr"] == 0.25


def test_the_flagged_share_alerts_when_it_departs_from_the_calibrated_rate_either_way() -> None:
    # normal traffic: a detector calibrated at 5 % on 200 normals flags about 5 % of new normal records, give
    # or take its threshold's own sampling error: no alert, whichever calibration set it had
    rng = np.random.default_rng(0)
    quiet = []
    for _ in range(100):
        normal = rng.standard_normal(1200)
        t = threshold_at_fpr(normal[:200], 0.05)
        quiet.append(flagged_share_check(int((normal[200:] > t).sum()), 1000, 0.05, 200, 0.01))
    assert sum(q["alert"] for q in quiet) <= 3, [q["share"] for q in quiet if q["alert"]]
    assert quiet[0]["expected"] == round(10 / 201, 4)  # 9 of 200 above: (9 + 1) / 201 <= 0.05
    # incidents: 6 % of the records are far out, on top of the normal ones' false alarms
    normal = rng.standard_normal(1200)
    t = threshold_at_fpr(normal[:200], 0.05)
    false_alarms = int((normal[200:1140] > t).sum())
    incidents = flagged_share_check(false_alarms + 60, 1000, 0.05, 200, 0.01)
    assert incidents["alert"] and incidents["direction"] == "above"
    # how many of the flagged are incidents, estimated without labels: near the truth (60 of them)
    truth = 60 / (false_alarms + 60)
    assert abs(incidents["estimated_precision"] - truth) < 0.1, (incidents, truth)
    assert quiet[0]["estimated_precision"] < 0.3  # normal traffic: the flags are the false alarms
    # a blind detector (a dead sensor scores flat): nothing flagged in 300 records is as much an alert
    blind = flagged_share_check(0, 300, 0.05, 200, 0.01)
    assert blind["alert"] and blind["direction"] == "below"
    # too few records to tell: no alert either way; nor a wide departure when the calibration had few normals
    assert not flagged_share_check(0, 20, 0.05, 200, 0.01)["alert"]
    assert not flagged_share_check(3, 20, 0.05, 200, 0.01)["alert"]
    assert flagged_share_check(30, 300, 0.05, 10_000, 0.01)["alert"]
    assert not flagged_share_check(30, 300, 0.05, 25, 0.01)["alert"]  # 25 normals: 1 in 26 or 1 in 5, who knows
    assert flagged_share_check(0, 0, 0.05, 200, 0.01)["alert"] is False
