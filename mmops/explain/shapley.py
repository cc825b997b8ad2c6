"""Exact Shapley values over a record's modalities.

The fusion model takes any subset of its modalities (a missing one is masked out exactly as a record that
lacks it), so the value of a coalition S is the model's probability for the explained class with only S
present, and with k present modalities the exact Shapley value needs 2^k forward passes (8 for three),
done as one batch. The values sum to v(all) - v(none): the answer minus what the model says with nothing.
"""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np


def coalitions(k: int) -> np.ndarray:
    """All 2^k subsets of k players as a (2^k, k) 0/1 matrix, the empty set first, the full set last."""
    rows = [sorted(c) for size in range(k + 1) for c in combinations(range(k), size)]
    out = np.zeros((len(rows), k), dtype=np.float32)
    for r, members in enumerate(rows):
        out[r, members] = 1.0
    return out


def shapley_values(values: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """phi_i = sum over S not holding i of |S|! (k - |S| - 1)! / k! * (v(S + i) - v(S)), from v of every
    subset (values[r] is v of subsets[r], as `coalitions` lists them)."""
    k = subsets.shape[1]
    index = {tuple(row.astype(int)): r for r, row in enumerate(subsets)}
    phi = np.zeros(k, dtype=np.float64)
    for row, r in index.items():
        size = sum(row)
        for i in range(k):
            if row[i]:
                continue
            with_i = list(row)
            with_i[i] = 1
            weight = factorial(size) * factorial(k - size - 1) / factorial(k)
            phi[i] += weight * (values[index[tuple(with_i)]] - values[r])
    return phi
