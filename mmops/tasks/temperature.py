"""Calibrated probabilities for classifiers: temperature scaling (Guo et al., 2017), fitted on the validation
split once training has picked its best epoch. One number T divides the logits, so the answer (the argmax)
never changes, only how sure it says it is; T > 1 softens an over-confident model, T < 1 sharpens an
under-confident one. The model card keeps T; every prediction (service, evaluation, monitoring, explanations)
applies it."""

from __future__ import annotations

import numpy as np

BOUNDS = (0.05, 20.0)  # T searched in between (on a log scale)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of softmax(logits / T) on held-out labels, each label
    smoothed by the rule of succession (1 / (n + 2) of it spread over the classes); 1.0 without any.

    The smoothing matters where the split is answered without an error, as small validation splits often
    are: the plain likelihood then grows without end as T shrinks, and T would sharpen every answer to a
    certainty that new records do not bear out (n right answers out of n still leave an error rate of about
    1 / (n + 2)). On a large split with errors it changes T by little."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    targets = succession_targets(y, z.shape[1])

    def nll(log_t: float) -> float:
        return float(-(targets * log_softmax(z / np.exp(log_t), axis=1)).sum(axis=1).mean())

    best = minimize_scalar(nll, bounds=tuple(np.log(BOUNDS)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x)) if nll(best.x) < nll(0.0) else 1.0


def succession_targets(labels: np.ndarray, classes: int) -> np.ndarray:
    """(records, classes) targets of held-out labels smoothed by the rule of succession: 1 / (n + 2) of each
    label spread evenly over the classes, so that n right answers out of n ask for about (n + 1) / (n + 2)."""
    y = np.asarray(labels, dtype=np.int64)
    alpha = 1.0 / (len(y) + 2)
    targets = np.full((len(y), classes), alpha / classes)
    targets[np.arange(len(y)), y] += 1.0 - alpha
    return targets


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities before temperature scaling, from the calibrated ones: softmax(T * log p) (log p is
    logits / T up to a constant per record)."""
    from scipy.special import softmax

    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)
    return np.asarray(softmax(temperature * np.log(p), axis=1))
