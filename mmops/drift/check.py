"""Drift checks: current data streamed through a reference sketch's cells, decided per column and per
modality (see mmops.drift)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmops.drift.sketch import (
    DISTANCE,
    P_VALUE,
    ColumnSketch,
    ReferenceSketch,
)
from mmops.errors import BadInputError

# Columns that count in no share: nothing to compare, or one and the same value in the reference and now (a
# property of the source such as a camera's frame rate says nothing until it changes; counted, it would dilute
# the share of a modality whose picture drifted)
UNTESTED = ("none", "constant")


@dataclass
class _Current:
    """What a check holds per column: counts, never rows."""

    n: int = 0
    missing: int = 0
    cells: np.ndarray | None = None
    sums: np.ndarray | None = None  # per cell (numeric column) or per component (embedding)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ColumnDrift:
    method: str
    score: float
    threshold: float
    drifted: bool
    n_current: int
    missing_current: int

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "score": self.score, "threshold": self.threshold, "drifted": self.drifted,
                "n_current": self.n_current, "missing_current": self.missing_current}


def column_group(column: str) -> str | None:
    """The group a column belongs to: the part before its first dot (`accel.x_mean` -> `accel`: a modality's
    summary statistics); None for a column of its own (e.g. `prediction`)."""
    return column.split(".", 1)[0] if "." in column else None


@dataclass(frozen=True)
class DriftVerdict:
    n_current: int
    columns: dict[str, ColumnDrift]
    embeddings: dict[str, ColumnDrift]  # score: distance between means; threshold: its no-drift 95th percentile
    drift_share: float  # share of the tested columns that drifted
    drift_share_threshold: float
    # per column group (a modality): the share of its columns drifted, p-values Bonferroni-corrected within it
    group_shares: dict[str, float] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return sorted(c for c, d in self.columns.items() if d.drifted)

    @property
    def drifted_embeddings(self) -> list[str]:
        return sorted(g for g, d in self.embeddings.items() if d.drifted)

    @property
    def drifted_groups(self) -> list[str]:
        return sorted(g for g, share in self.group_shares.items() if share >= self.drift_share_threshold)

    @property
    def drifted(self) -> bool:
        """A group of columns (a modality's statistics) reaches the drift-share threshold, or an embedding
        drifted. Per group, so that one modality going wrong is not outvoted by the others."""
        return bool(self.drifted_groups) or bool(self.drifted_embeddings)

    def to_json(self) -> dict[str, Any]:
        return {"n_current": self.n_current, "drifted": self.drifted, "drift_share": self.drift_share,
                "drift_share_threshold": self.drift_share_threshold, "group_shares": self.group_shares,
                "drifted_groups": self.drifted_groups, "drifted_columns": self.drifted_columns,
                "drifted_embeddings": self.drifted_embeddings,
                "columns": {c: d.to_json() for c, d in self.columns.items()},
                "embeddings": {g: d.to_json() for g, d in self.embeddings.items()}}


class DriftCheck:
    """Stream current data in (`update`, any number of chunks), then `verdict()`."""

    def __init__(self, sketch: ReferenceSketch) -> None:
        self.sketch = sketch
        self.n_rows = 0
        self._cur = {c: (_Current(cells=np.zeros(len(s.cells), np.int64), sums=np.zeros(len(s.cells)))
                         if s.kind == "numeric" else _Current())
                     for c, s in sketch.columns.items()}
        self._emb = {g: _Current(sums=np.zeros(len(e.mean))) for g, e in sketch.embeddings.items()}

    def update(self, frame: Any, embeddings: Mapping[str, np.ndarray] | None = None) -> None:
        """frame: a DataFrame (or column -> array mapping) with any of the sketch's columns; a column it lacks
        is not counted for these rows. embeddings: group -> (rows, dim), NaN rows where absent."""
        self.n_rows += len(frame)
        for name, sk in self.sketch.columns.items():
            if name in frame:
                self._add(name, sk, frame[name])
        for group, emb in (embeddings or {}).items():
            if group not in self._emb:
                continue
            emb = np.asarray(emb, dtype=np.float64)
            dim = len(self.sketch.embeddings[group].mean)
            if emb.ndim != 2 or emb.shape[1] != dim:
                raise BadInputError(f"embedding {group}: shape {emb.shape}, the reference has {dim} components")
            ok = np.all(np.isfinite(emb), axis=1)
            acc = self._emb[group]
            acc.n += int(ok.sum())
            acc.sums = acc.sums + emb[ok].sum(axis=0)
            acc.missing += int((~ok).sum())

    def _add(self, name: str, sk: ColumnSketch, values: Any) -> None:
        cur = self._cur[name]
        if sk.kind == "categorical":
            vals = values.tolist() if hasattr(values, "tolist") else list(values)
            kept = [str(v) for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
            cur.counts.update(kept)
            cur.n += len(kept)
            cur.missing += len(vals) - len(kept)
            return
        x = np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan) if hasattr(values, "to_numpy")
                       else values, dtype=np.float64)
        ok = np.isfinite(x)
        finite = x if ok.all() else x[ok]
        cur.missing += len(x) - len(finite)
        if not len(finite) or not len(sk.anchors):
            return
        cur.n += len(finite)
        assert cur.cells is not None and cur.sums is not None
        idx = sk.index.cells(finite)
        cur.cells += np.bincount(idx, minlength=len(cur.cells))
        cur.sums += np.bincount(idx, weights=finite, minlength=len(cur.sums))

    def verdict(self, drift_share: float = 0.5) -> DriftVerdict:
        columns = {c: self._test(c, sk) for c, sk in self.sketch.columns.items()}
        tested = {c: d for c, d in columns.items() if d.method not in UNTESTED}
        share = sum(d.drifted for d in tested.values()) / len(tested) if tested else 0.0
        group_shares = drift_by_group(tested)
        embeddings = {}
        for group, ref in self.sketch.embeddings.items():
            acc = self._emb[group]
            n, missing = acc.n, acc.missing
            if n == 0 or ref.n < 2 or acc.sums is None:
                embeddings[group] = ColumnDrift("none", float("nan"), float("nan"), False, n, missing)
                continue
            dist = float(np.linalg.norm(acc.sums / n - ref.mean))
            limit = ref.null_quantile(n)
            embeddings[group] = ColumnDrift("distance (euclidean, 95th pct of no drift)", dist, limit,
                                            dist > limit, n, missing)
        return DriftVerdict(self.n_rows, columns, embeddings, share, drift_share, group_shares)

    def _test(self, name: str, sk: ColumnSketch) -> ColumnDrift:
        cur = self._cur[name]
        method = sk.method()
        if cur.n == 0 or sk.n == 0:  # nothing to compare: said, not guessed
            return ColumnDrift("none", float("nan"), float("nan"), False, cur.n, cur.missing)
        if method in ("chisquare", "z", "jensenshannon"):
            ref, now = self._categories(sk, cur)
            if len(ref) == 1:  # one value on both sides (a camera's frame rate, an image size): nothing moved
                return ColumnDrift("constant", 1.0, P_VALUE, False, cur.n, cur.missing)
            score = _category_test(method, ref, now)
        elif method == "ks":
            score = _ks_pvalue(sk, cur)
        else:
            score = _wasserstein_normed(sk, cur)
        threshold = DISTANCE if method in ("wasserstein", "jensenshannon") else P_VALUE
        if method in ("wasserstein", "jensenshannon"):
            drifted = score >= threshold
        else:
            drifted = score <= threshold if method == "ks" else score < threshold
        return ColumnDrift(method, float(score), threshold, bool(drifted), cur.n, cur.missing)

    @staticmethod
    def _categories(sk: ColumnSketch, cur: _Current) -> tuple[np.ndarray, np.ndarray]:
        """Counts per category, reference and current, over the union of categories (for a few-valued numeric
        column: each reference value, and between neighbours the values the reference never took)."""
        if sk.kind == "categorical":
            keys = sorted(set(sk.counts) | set(cur.counts))
            return (np.array([sk.counts.get(k, 0) for k in keys], np.float64),
                    np.array([cur.counts.get(k, 0) for k in keys], np.float64))
        assert cur.cells is not None
        used = (sk.cells > 0) | (cur.cells > 0)
        return sk.cells[used].astype(np.float64), cur.cells[used].astype(np.float64)


def drift_by_group(columns: Mapping[str, ColumnDrift]) -> dict[str, float]:
    """Per column group (a modality), the share of its tested columns that drifted. p-value tests are
    Bonferroni-corrected for the group's size: a modality's statistics are few and correlated (an image's
    contrast, sharpness and blur move together), so one chance fluctuation would otherwise tip half of them
    at p < 0.05. Distances need no correction."""
    by_group: dict[str, list[ColumnDrift]] = {}
    for c, d in columns.items():
        group = column_group(c)
        if group is not None and d.method not in UNTESTED:
            by_group.setdefault(group, []).append(d)

    def drifted(d: ColumnDrift, n: int) -> bool:
        if d.method in ("wasserstein", "jensenshannon"):
            return d.drifted
        return d.score <= d.threshold / n if d.method == "ks" else d.score < d.threshold / n

    return {g: sum(drifted(d, len(v)) for d in v) / len(v) for g, v in sorted(by_group.items())}


def _category_test(method: str, ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy import stats
    from scipy.spatial import distance

    n_ref, n_cur = ref.sum(), cur.sum()
    if method == "jensenshannon":
        return float(distance.jensenshannon(ref / n_ref, cur / n_cur))
    if method == "z":
        if len(ref) == 1:  # one category on both sides
            return 1.0
        p1, p2 = ref[0] / n_ref, cur[0] / n_cur  # share of the first category (Evidently tests the rest: same p)
        pooled = (ref[0] + cur[0]) / (n_ref + n_cur)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
        return 1.0 if se == 0 else float(2 * (1 - stats.norm.cdf(abs((p1 - p2) / se))))
    expected = ref * (n_cur / n_ref)
    if np.any((expected == 0) & (cur > 0)):
        return 0.0  # a category the reference never had: certain drift (scipy would divide by zero)
    keep = expected > 0
    obs, exp = cur[keep], expected[keep]
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum())[1])


def _cell_points(anchors: np.ndarray) -> np.ndarray:
    """A representative value per cell: the anchor itself, the midpoint between neighbours, and one unit past
    the ends (only the order matters to KS)."""
    k = len(anchors)
    pts = np.empty(2 * k + 1)
    pts[1::2] = anchors
    pts[0], pts[-1] = anchors[0] - 1.0, anchors[-1] + 1.0
    if k > 1:
        pts[2:-1:2] = (anchors[:-1] + anchors[1:]) / 2
    return pts


def _ks_pvalue(sk: ColumnSketch, cur: _Current) -> float:
    """Two-sample KS p-value. With every reference value an anchor, the reference ECDF is flat between
    anchors, so the supremum of |F - G| is reached at an anchor or just before one: both are fixed by the cell
    counts, and samples rebuilt from the counts (one representative per cell) give scipy the same statistic."""
    from scipy import stats

    assert cur.cells is not None
    pts = _cell_points(sk.anchors)
    return float(stats.ks_2samp(np.repeat(pts, sk.cells), np.repeat(pts, cur.cells))[1])


def _wasserstein_normed(sk: ColumnSketch, cur: _Current) -> float:
    """W1 = integral of |F - G|, normed by the reference std (Evidently's `wasserstein`). Beyond the reference's
    range the reference CDF is 0 or 1 and the integral is the current data's mean excess, kept exactly. Between
    neighbouring anchors a, b the integral of a CDF is exact from the cell's count and sum (F(a)(b - a) +
    sum(b - x) / n), so where F - G keeps its sign across the gap the area is exact; where it changes sign,
    both CDFs are taken as linear there."""
    assert cur.cells is not None and cur.sums is not None
    a = sk.anchors
    n_ref, n_cur = float(sk.cells.sum()), float(cur.cells.sum())
    # beyond the range: the first and last cells' counts and sums give the excess (sum of lo - x, of x - hi)
    below, above = cur.cells[0] * a[0] - cur.sums[0], cur.sums[-1] - cur.cells[-1] * a[-1]
    total = float(below + above) / n_cur
    if len(a) > 1:
        width = np.diff(a)
        f_lo = np.cumsum(sk.cells)[1:-2:2] / n_ref  # CDF just after anchor i, for the gaps i = 0..k-2
        g_lo = np.cumsum(cur.cells)[1:-2:2] / n_cur
        f_in, g_in = sk.cells[2:-1:2] / n_ref, cur.cells[2:-1:2] / n_cur  # mass inside each gap
        f_int = f_lo * width + f_in * a[1:] - sk.sums[2:-1:2] / n_ref  # integral of F over the gap
        g_int = g_lo * width + g_in * a[1:] - cur.sums[2:-1:2] / n_cur
        d0, d1 = f_lo - g_lo, (f_lo + f_in) - (g_lo + g_in)
        crossing = (d0 * d1) < 0
        linear = (d0**2 + d1**2) / (2 * np.maximum(np.abs(d0) + np.abs(d1), 1e-300)) * width
        total += float(np.sum(np.where(crossing, linear, np.abs(f_int - g_int))))
    return total / max(sk.std, 0.001)
