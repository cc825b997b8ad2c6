"""From anomaly scores to decisions: a threshold calibrated on held-out normal records at a chosen
false-positive rate, per-modality scores put on one scale and combined, and the metrics an anomaly
detector is judged on.

Scores are "higher is more anomalous" and carry no unit: a memory bank's distances in one modality's
feature space are not comparable with another's. Each modality's score is therefore divided by its own
threshold at the target rate on the calibration normals (1.0 = as unusual as the normal records' top
`fpr` share), and a record's score is the largest of its modalities' (the answer names that modality).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmops.errors import ValidationFailedError

MIN_CALIBRATION = 10  # normal records a threshold can be calibrated on at all


def allowed_above(n: int, fpr: float) -> int:
    """How many of n calibration normals may score above the threshold: the largest a with (a + 1) / (n + 1)
    <= fpr. A new normal record from the same distribution ranks above the a + 1 highest of n + 1 records with
    probability (a + 1) / (n + 1) (exchangeability, as in conformal prediction), so that is the rate the
    threshold flags new normals at: at most fpr, as close as n allows. (Letting floor(fpr * n) above would
    flag new normals at (floor(fpr * n) + 1) / (n + 1): 0.073 for 0.05 on 40 normals; benchmarks/
    bench_calibration.py measured exactly that.) Below 1 / fpr - 1 normals not even a = 0 reaches fpr; the
    rate is then 1 / (n + 1)."""
    return max(0, int(np.floor(fpr * (n + 1) + 1e-9)) - 1)


def expected_fpr(n: int, fpr: float) -> float:
    """The rate a threshold calibrated on n normals at `fpr` flags new normal records at, on average."""
    return (allowed_above(n, fpr) + 1) / (n + 1)


def threshold_at_fpr(normal_scores: np.ndarray, fpr: float) -> float:
    """The threshold (flag: score > threshold) that flags new normal records at most `fpr` of the time on
    average: the order statistic n - a - 1 of the calibration normals' sorted scores (a = allowed_above)."""
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64))
    n = len(scores)
    if not 0.0 < fpr < 1.0:
        raise ValidationFailedError(f"false-positive rate {fpr} is not between 0 and 1")
    if n < MIN_CALIBRATION:
        raise ValidationFailedError(f"{n} held-out normal records cannot calibrate a threshold (at least "
                                    f"{MIN_CALIBRATION}); land more normal records or give validation a larger "
                                    "share")
    if not np.isfinite(scores).all():
        raise ValidationFailedError("calibration scores hold NaN or inf")
    return float(scores[n - allowed_above(n, fpr) - 1])


@dataclass(frozen=True)
class Calibration:
    """Per modality, the threshold at the target rate on the calibration normals; and the combined
    threshold (on the combined, per-modality-scaled score)."""

    fpr: float
    modality_thresholds: dict[str, float]
    threshold: float
    n_normal: int

    @classmethod
    def fit(cls, normal_scores: dict[str, np.ndarray], fpr: float) -> Calibration:
        """normal_scores: per modality, the held-out normal records' scores (NaN where a record lacks the
        modality)."""
        per: dict[str, float] = {}
        for m, s in normal_scores.items():
            present = np.asarray(s, dtype=np.float64)
            present = present[~np.isnan(present)]
            per[m] = max(threshold_at_fpr(present, fpr), float(np.finfo(np.float32).tiny))
        combined, _ = combine(normal_scores, per)
        return cls(fpr, per, threshold_at_fpr(combined, fpr), len(combined))

    def decide(self, scores: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """(combined scores, is_anomaly, the modality that drove each score) of records scored per modality."""
        combined, driver = combine(scores, self.modality_thresholds)
        return combined, combined > self.threshold, driver

    def to_json(self) -> dict[str, Any]:
        return {"fpr": self.fpr, "modality_thresholds": self.modality_thresholds, "threshold": self.threshold,
                "n_normal": self.n_normal}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Calibration:
        return cls(float(raw["fpr"]), {k: float(v) for k, v in raw["modality_thresholds"].items()},
                   float(raw["threshold"]), int(raw["n_normal"]))


def combine(scores: dict[str, np.ndarray], scale: dict[str, float]) -> tuple[np.ndarray, list[str | None]]:
    """Each modality's scores divided by its scale, then the largest per record, and which modality it was.
    A record lacking every modality (all NaN) scores NaN, driven by None."""
    names = list(scores)
    if not names:
        raise ValidationFailedError("no modality scores to combine")
    table = np.stack([np.asarray(scores[m], dtype=np.float64) / scale[m] for m in names], axis=1)
    present = ~np.isnan(table)
    filled = np.where(present, table, -np.inf)
    best = filled.argmax(axis=1)
    combined = np.where(present.any(axis=1), filled[np.arange(len(table)), best], np.nan)
    return combined, [names[b] if present[i].any() else None for i, b in enumerate(best)]


def anomaly_metrics(is_anomaly: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUROC and AUPRC of the scores (None without both normal and anomalous records), and at the threshold:
    precision, recall, F1 and the realized false-positive rate (the flagged share of the normal records)."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(is_anomaly, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    flagged = s > threshold
    both = bool(y.any() and (~y).any())
    p, r, f, _ = precision_recall_fscore_support(y, flagged, average="binary", zero_division=0)
    return {
        "n": int(len(y)), "n_anomalous": int(y.sum()),
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "auprc": float(average_precision_score(y, s)) if both else None,
        "precision": float(p), "recall": float(r), "f1": float(f),
        "fpr": float(flagged[~y].mean()) if (~y).any() else None,
        "flagged_share": float(flagged.mean()) if len(y) else 0.0,
        "threshold": float(threshold),
    }


def flagged_share_check(flagged: int, n: int, fpr: float, n_calibration: int, alpha: float) -> dict[str, Any]:
    """Whether the share of records a detector flags departs from what normal traffic alone would give.

    The threshold is an order statistic of n_calibration normal scores (threshold_at_fpr), so the share of
    new normal records above it is itself uncertain: Beta(a + 1, n_calibration - a) with a = allowed_above(
    n_calibration, fpr) (exchangeability, as in conformal prediction), and the flagged count of n new normal
    records is beta-binomial. A two-sided test of `flagged` against it (p = twice the smaller tail): above,
    incidents, or normal operation has moved (a person decides: the flagged records may be real); below,
    the detector has gone blind (a dead sensor, a covered camera, clipped inputs). `alert` when p < alpha.

    `estimated_precision`, without labels: the share of the flagged records that are not false alarms, the
    false alarms estimated from the calibrated rate e as e (n - flagged) / (1 - e) (the normal records are
    the unflagged ones and the false alarms among the flagged; exact when every anomaly is flagged, an upper
    bound on the false alarms otherwise, so the estimate leans low)."""
    from scipy.stats import betabinom

    allowed = allowed_above(n_calibration, fpr)
    expected = expected_fpr(n_calibration, fpr)
    if n == 0:
        return {"n": 0, "flagged": 0, "share": None, "expected": round(expected, 4), "p_value": None,
                "alert": False, "direction": None, "estimated_precision": None}
    null = betabinom(n, allowed + 1, n_calibration - allowed)
    p = float(min(1.0, 2 * min(null.sf(flagged - 1), null.cdf(flagged))))
    share = flagged / n
    alert = p < alpha
    false_alarms = expected * (n - flagged) / (1 - expected)
    precision = None if flagged == 0 else round(min(1.0, max(0.0, 1 - false_alarms / flagged)), 4)
    return {"n": n, "flagged": flagged, "share": round(share, 4), "expected": round(expected, 4), "p_value": p,
            "alert": alert, "direction": ("above" if share > expected else "below") if alert else None,
            "estimated_precision": precision}
