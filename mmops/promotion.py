"""The promotion gate's evidence: how much better a challenger scores than the champion on the same holdout,
and how sure that is.

A paired bootstrap: the holdout's records are resampled with replacement, and each resample is scored for
both models (the same records for both: their errors on a hard record cancel), `resamples` times. The gate
(registry.register) promotes only a challenger whose score beats the champion's by at least `promote.margin`
(MLflow's MetricThreshold min_absolute_change) and whose interval of the difference lies above 0: a tie or
a win the holdout cannot tell from luck keeps the champion, with the figures in the decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _binary_auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney: the chance that a positive outscores a negative, ties counting half (as scikit-learn)."""
    from scipy.stats import rankdata

    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


Decide = Callable[[np.ndarray], np.ndarray]  # outputs -> the answered class: the task kind's `decisions`


def _auroc(y: np.ndarray, outputs: np.ndarray, decide: Decide) -> float:
    if outputs.ndim == 1:  # an anomaly score
        return _binary_auroc(y.astype(bool), outputs)
    if outputs.shape[1] == 2:
        return _binary_auroc(y == 1, outputs[:, 1])
    return float(np.mean([_binary_auroc(y == c, outputs[:, c]) for c in range(outputs.shape[1])]))


def _accuracy(y: np.ndarray, outputs: np.ndarray, decide: Decide) -> float:
    return float((decide(outputs) == y).mean())


def _macro_f1(y: np.ndarray, outputs: np.ndarray, decide: Decide) -> float:
    k = outputs.shape[1] if outputs.ndim == 2 else 2  # a detector answers normal (0) or flagged (1)
    pred = decide(outputs)
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    return float(np.mean(np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)))


# the registry's promotion metrics, as mmops/evaluation.py and scikit-learn define them (a test holds them
# equal), 10 to 80 times faster than scikit-learn's on a holdout: the bootstrap scores each thousands of times
METRICS: dict[str, Callable[[np.ndarray, np.ndarray, Decide], float]] = {
    "accuracy": _accuracy, "macro_f1": _macro_f1, "auroc": _auroc}


@dataclass(frozen=True)
class Comparison:
    """The challenger's and the champion's score on the same records, their difference, and its interval."""

    metric: str
    challenger: float
    champion: float
    delta: float
    low: float | None  # None: too few resamples had the score defined (a class missing from most)
    high: float | None
    confidence: float
    resamples: int
    n: int

    def decide(self, margin: float) -> tuple[bool, str]:
        """(promoted, why): promoted when the difference is at least `margin` and its interval lies above 0."""
        interval = ("no interval (the score is undefined on most resamples)" if self.low is None else
                    f"{self.confidence:.0%} interval [{self.low:+.4f}, {self.high:+.4f}] (paired bootstrap, "
                    f"{self.resamples} resamples of {self.n} records)")
        figures = f"{self.metric} {self.challenger:.4f} vs {self.champion:.4f}: {self.delta:+.4f}, {interval}"
        if self.delta < margin or self.delta <= 0:
            return False, f"{figures}; not by the margin {margin}" if self.delta > 0 else f"{figures}; no better"
        if self.low is None or self.low <= 0:
            return False, f"{figures}; a win the holdout cannot tell from chance"
        return True, f"{figures}; by at least the margin {margin}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(metric: str, y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                     decide: Decide, resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> Comparison:
    """The challenger's minus the champion's `metric` on y, with its percentile interval over `resamples`
    paired resamples of the records (the same draw for both). decide: the task's answer from its outputs."""
    y, challenger, champion = np.asarray(y), np.asarray(challenger), np.asarray(champion)

    def score(idx: np.ndarray | slice, outputs: np.ndarray) -> float:
        return METRICS[metric](y[idx], outputs[idx], decide)

    a, b = score(slice(None), challenger), score(slice(None), champion)
    rng = np.random.default_rng(seed)
    deltas = np.array([score(i, challenger) - score(i, champion)
                       for i in rng.integers(0, len(y), size=(resamples, len(y)))]) if len(y) else np.array([])
    defined = deltas[np.isfinite(deltas)]
    low = high = None
    if resamples and len(defined) >= resamples / 2:
        tail = (1 - confidence) / 2 * 100
        low, high = (float(v) for v in np.percentile(defined, [tail, 100 - tail]))
    return Comparison(metric, a, b, a - b, low, high, confidence, resamples, int(len(y)))
