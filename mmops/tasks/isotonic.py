"""Isotonic calibration where it is better than temperature scaling alone (Zadrozny & Elkan, 2002; sklearn's
CalibratedClassifierCV does the same one-vs-rest): after softmax(logits / T), each class's probability goes
through a non-decreasing step map fitted on the validation split, and the record's probabilities are
renormalised to sum to one.

Isotonic has as many parameters as the split has distinct scores, so on a small split it learns the split's
noise: it is chosen only where it predicts held-out labels better. `choose` fits both on k - 1 folds of the
validation split and scores the k-th (Brier score, a proper score that stays finite where isotonic says 0),
and keeps isotonic only where its mean over the folds is lower than temperature scaling's by at least
MARGIN (relative). Unlike T, the maps can change which class is most probable.
"""

from __future__ import annotations

import numpy as np

FOLDS = 5
MARGIN = 0.05  # isotonic's cross-validated Brier score at least 5 % below temperature scaling's
MIN_RECORDS = 20  # fewer validation records: no folds worth the name, temperature scaling alone

Maps = tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]  # per class: (x thresholds, y thresholds)


def fit_maps(probs: np.ndarray, labels: np.ndarray) -> Maps:
    """One non-decreasing map per class, from its probability to how often records at that probability are
    of the class, each label smoothed by the rule of succession as temperature scaling's are
    (tasks/temperature.py): n right answers out of n map to (n + 1) / (n + 2)-ish, not to a certainty that new
    records do not bear out."""
    from sklearn.isotonic import IsotonicRegression

    from mmops.tasks.temperature import succession_targets

    targets = succession_targets(labels, probs.shape[1])
    maps = []
    for k in range(probs.shape[1]):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[:, k], targets[:, k])
        maps.append((tuple(float(x) for x in iso.X_thresholds_), tuple(float(y) for y in iso.y_thresholds_)))
    return tuple(maps)


def apply_maps(probs: np.ndarray, maps: Maps) -> np.ndarray:
    """The probabilities through each class's map, renormalised; a record every map sends to 0 keeps its
    temperature-scaled probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    q = np.column_stack([np.interp(p[:, k], x, y) for k, (x, y) in enumerate(maps)]) if len(p) else p
    total = q.sum(axis=1, keepdims=True)
    out = np.where(total > 0, q / np.where(total > 0, total, 1.0), p)
    return out.astype(np.float32)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def choose(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[Maps | None, dict[str, float | None]]:
    """(the maps fitted on the whole split where isotonic is better, else None; both methods' cross-validated
    Brier scores, None where the split is too small to fold)."""
    from scipy.special import softmax

    from mmops.tasks.temperature import fit_temperature

    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    scores: dict[str, float | None] = {"brier_cv_temperature": None, "brier_cv_isotonic": None}
    if len(y) < MIN_RECORDS:
        return None, scores
    folds = np.array_split(np.random.default_rng(seed).permutation(len(y)), FOLDS)
    temp, iso = [], []
    for held in folds:
        fit = np.setdiff1d(np.arange(len(y)), held)
        t = fit_temperature(z[fit], y[fit])
        p_fit, p_held = softmax(z[fit] / t, axis=1), softmax(z[held] / t, axis=1)
        temp.append(brier(p_held, y[held]))
        iso.append(brier(apply_maps(p_held, fit_maps(p_fit, y[fit])), y[held]))
    scores = {"brier_cv_temperature": round(float(np.mean(temp)), 6), "brier_cv_isotonic": round(float(np.mean(iso)), 6)}
    if scores["brier_cv_isotonic"] > (1 - MARGIN) * scores["brier_cv_temperature"]:  # type: ignore[operator]
        return None, scores
    t = fit_temperature(z, y)
    return fit_maps(softmax(z / t, axis=1), y), scores
