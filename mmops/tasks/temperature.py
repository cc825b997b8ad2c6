"""Calibrated probabilities for classifiers: temperature scaling (Guo et al., 2017), fitted on the validation
split once training has picked its best epoch. One number T divides the logits, so the answer (the argmax)
never changes, only how sure it says it is; T > 1 softens an over-confident model, T < 1 sharpens an
under-confident one. The model card keeps T; every prediction (service, evaluation, monitoring, explanations)
applies it."""

from __future__ import annotations

import numpy as np

BOUNDS = (0.05, 20.0)  # T searched in between (on a log scale)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of softmax(logits / T) on held-out labels; 1.0 without
    any."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    best = minimize_scalar(nll, bounds=tuple(np.log(BOUNDS)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x)) if nll(best.x) < nll(0.0) else 1.0


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling, from the calibrated ones: softmax(T * log p) (log p is
    logits / T up to a constant per record)."""
    from scipy.special import softmax

    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)
    return np.asarray(softmax(temperature * np.log(p), axis=1))
