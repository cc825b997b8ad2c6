"""Which cell of a column's sketch each value falls in, at memory speed.

Cells of k sorted anchors: 2i+1 = equal to anchors[i]; 2i = strictly between anchors[i-1] and anchors[i]
(0: below the first, 2k: above the last). The count of anchors <= x is a binary search per value, and
`np.searchsorted` on unsorted values costs ~60 ns each (a branch the CPU mispredicts at every level), most of a
drift check's time. `CellIndex` spends that once per sketch instead: a uniform grid over the anchors' range
whose every bucket records how many anchors lie at or below its left edge. A value's bucket (one multiply)
narrows its count to the few anchors in that bucket and its neighbours (the neighbours absorb the bucket
computation's rounding), and a branchless bisection over that window, vectorized over the chunk, finishes it:
log2(window) passes of a gather and a compare. The grid is as fine as needed for a window of at most
MAX_WINDOW anchors, within MAX_BUCKETS; where anchors crowd beyond that (a few extreme outliers stretching the
range), the window is wider and the bisection longer, never wrong.
"""

from __future__ import annotations

import numpy as np

MAX_WINDOW = 1  # anchors in a bucket and its neighbours: one bisection step (measured fastest)
MAX_BUCKETS = 1 << 16


class CellIndex:
    """The cell of every value of an array, for one sorted array of distinct anchors."""

    def __init__(self, anchors: np.ndarray) -> None:
        self.anchors = a = np.asarray(anchors, dtype=np.float64)
        k = len(a)
        self._lo = float(a[0]) if k else 0.0
        span = float(a[-1] - a[0]) if k else 0.0
        self._buckets, starts, widest = 1, np.zeros(1, np.int64), k
        while span > 0:
            edges = self._lo + span / self._buckets * np.arange(self._buckets + 1)
            at_edge = np.searchsorted(a, edges, "right")  # anchors <= each bucket's left edge
            # a value computed into bucket b lies in b-1, b or b+1: its count is in [at_edge[b-1], at_edge[b+2]]
            padded = np.concatenate([[0], at_edge[:-1], [k, k]])
            starts, widest = padded[: self._buckets], int(np.max(padded[3:] - padded[:-3]))
            if widest <= MAX_WINDOW or self._buckets >= MAX_BUCKETS:
                break
            self._buckets *= 2
        self._scale = self._buckets / span if span > 0 else 0.0
        window = 2 ** int(widest).bit_length()  # a power of two above the widest count
        self._halves = [window >> i for i in range(1, window.bit_length())]
        # int16 while the anchors allow (MAX_ANCHORS is 1000): the table stays in cache
        self._starts = starts.astype(np.int16 if k + window < 2**15 else np.int64)
        self._padded = np.concatenate([a, np.full(window, np.inf)])
        self._before = np.concatenate([[-np.inf], a])  # _before[count] is the largest anchor <= x

    def count_at_or_below(self, x: np.ndarray) -> np.ndarray:
        """Per value, how many anchors are <= it (np.searchsorted(anchors, x, "right")); x finite."""
        b = (x - self._lo) * self._scale
        np.clip(b, 0, self._buckets - 1, out=b)
        pos = self._starts[b.astype(np.intp)].astype(np.intp)
        for h in self._halves:
            pos += h * (self._padded[pos + (h - 1)] <= x)
        return pos

    def cells(self, x: np.ndarray) -> np.ndarray:
        """Per finite value, its cell (see the module docstring)."""
        right = self.count_at_or_below(x)
        return 2 * right - (self._before[right] == x)
