"""Accuracy estimated before the labels arrive: confidence-based performance estimation (the CBPE idea of
NannyML). Where the served probabilities are calibrated (temperature-scaled on the validation split,
mmops/tasks/temperature.py), the chance that a record was answered right is the probability of the class it
was given; a window's expected accuracy is the mean of those, and since records are right or wrong
independently, its 95 % band is 1.96 sqrt(sum p (1 - p)) / n. It holds while the calibration holds: a shift
that makes the model confidently wrong is what the delayed ground truth, and drift, are for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def estimate_accuracy(confidences: Sequence[float]) -> dict[str, Any]:
    """{estimated_accuracy, estimated_band (the 95 % half-width), n_estimated} of a window's answers."""
    n = len(confidences)
    if n == 0:
        return {"estimated_accuracy": None, "estimated_band": None, "n_estimated": 0}
    mean = sum(confidences) / n
    spread = 1.96 * math.sqrt(sum(p * (1 - p) for p in confidences)) / n
    return {"estimated_accuracy": mean, "estimated_band": spread, "n_estimated": n}
