"""Drift checks that stream current data against reference sketches and never re-read the reference set.

When a model is trained, `ReferenceSketch.build` summarises what it learnt from, column by column: the sorted
distinct values (or, past MAX_ANCHORS of them, that many quantiles, min and max included) with the reference
count at each value and between neighbours; category counts for categorical columns. A check
(`DriftCheck`) streams current data through the same cells in chunks, holding only counts, and decides per
column with the test Evidently's DataDriftPreset would pick, computed from those counts:

- numeric, <= 1000 reference rows: two-sample Kolmogorov-Smirnov, p <= 0.05. The anchors are then every
  reference value, and the current counts at and between them determine the KS statistic exactly (the
  reference ECDF is flat between its values), so the p-value is scipy's on the same statistic;
- numeric, > 1000 reference rows: Wasserstein distance normed by the reference std, >= 0.1. Between quantile
  anchors both CDFs are taken as linear (the only approximation, bounded by the cells' width); beyond the
  reference's min and max the integral is exact (running sums of the excess);
- at most 5 distinct reference values, or categorical: chi-square p < 0.05 (z-test for two categories) up to
  1000 reference rows, Jensen-Shannon distance >= 0.1 beyond.

Embeddings are judged as a whole, like Evidently's `distance` embedding drift method with bootstrap: the
Euclidean distance between the reference and current mean embeddings drifts when it exceeds the 95th
percentile of its no-drift distribution. The sketch keeps the reference mean and covariance; under no
drift the difference of means is normal with covariance S (1/n_ref + 1/n_cur), so that percentile comes from
the covariance's eigenvalues (a fixed-seed draw), not from re-reading the reference. Per-component
Wasserstein tests (Evidently's `ratio` method) flag noise at the few hundred records a deployment sees in a
day, which is why they are not used. Missing and non-finite values are counted, not tested. Cost:
O(rows x log(anchors)) per column, memory O(anchors): benchmarks/bench_drift.py compares it with
DataDriftPreset on the same data.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.errors import BadInputError

FORMAT = "mmops-reference-sketch/1"
MAX_ANCHORS = 1000  # distinct values kept per numeric column; beyond, this many quantiles
SMALL_REFERENCE = 1000  # Evidently: up to this many reference rows, p-value tests; beyond, distances
FEW_VALUES = 5  # a numeric column with at most this many distinct reference values is tested as categories
P_VALUE = 0.05
DISTANCE = 0.1
EMBEDDING_QUANTILE = 0.95  # an embedding drifts past this quantile of the no-drift mean distance
# Embedding rows kept per side for Evidently's embedding report: its t-SNE plot costs ~4 s at 200 + 200 rows
# on 2 cores and grows faster than linearly.
EMBEDDING_SAMPLE = 200


def _cells(anchors: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cell of each value: 2i+1 = equal to anchors[i]; 2i = strictly between anchors[i-1] and anchors[i]
    (0: below the first, 2k: above the last). One binary search per value; equality is a lookup."""
    right = np.searchsorted(anchors, x, "right")
    equal = anchors[np.maximum(right - 1, 0)] == x
    equal &= right > 0
    return 2 * right - equal


@dataclass
class ColumnSketch:
    kind: str  # "numeric" | "categorical"
    n: int  # reference rows with a finite value
    missing: int = 0
    anchors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cells: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    exact: bool = True  # anchors hold every distinct reference value
    std: float = 0.0
    mean: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    sums: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sum of the values in each cell

    @classmethod
    def numeric(cls, values: np.ndarray) -> ColumnSketch:
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if not len(finite):
            return cls("numeric", 0, missing=len(values))
        distinct = np.unique(finite)
        exact = len(distinct) <= MAX_ANCHORS
        anchors = distinct if exact else np.unique(np.quantile(finite, np.linspace(0, 1, MAX_ANCHORS)))
        idx = _cells(anchors, finite)
        cells = np.bincount(idx, minlength=2 * len(anchors) + 1).astype(np.int64)
        sums = np.bincount(idx, weights=finite, minlength=2 * len(anchors) + 1)
        return cls("numeric", len(finite), missing=len(values) - len(finite), anchors=anchors, cells=cells,
                   exact=exact, std=float(np.std(finite)), mean=float(np.mean(finite)), sums=sums)

    @classmethod
    def categorical(cls, values: Iterable[Any]) -> ColumnSketch:
        counts = Counter(str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
        total = sum(counts.values())
        return cls("categorical", total, counts=dict(counts))

    def method(self) -> str:
        if self.kind == "categorical" or (self.exact and len(self.anchors) <= FEW_VALUES):
            n_cat = len(self.counts) if self.kind == "categorical" else len(self.anchors)
            if self.n > SMALL_REFERENCE:
                return "jensenshannon"
            return "z" if n_cat <= 2 else "chisquare"
        return "ks" if self.n <= SMALL_REFERENCE else "wasserstein"

    def to_json(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"kind": self.kind, "n": self.n, "missing": self.missing, "counts": self.counts}
        return {"kind": self.kind, "n": self.n, "missing": self.missing, "exact": self.exact, "std": self.std,
                "mean": self.mean, "anchors": self.anchors.tolist(), "cells": self.cells.tolist(),
                "sums": self.sums.tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ColumnSketch:
        if d["kind"] == "categorical":
            return cls("categorical", int(d["n"]), int(d.get("missing", 0)), counts=dict(d["counts"]))
        return cls("numeric", int(d["n"]), int(d.get("missing", 0)), anchors=np.asarray(d["anchors"], np.float64),
                   cells=np.asarray(d["cells"], np.int64), exact=bool(d["exact"]), std=float(d["std"]),
                   mean=float(d["mean"]), sums=np.asarray(d["sums"], np.float64))


@dataclass
class EmbeddingSketch:
    """Mean and covariance of a reference embedding (rows where the record lacked the modality excluded), and a
    uniform sample of its rows for the human-facing report (checks never use it)."""

    n: int
    mean: np.ndarray
    cov: np.ndarray
    sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @classmethod
    def build(cls, emb: np.ndarray, sample_rows: int = EMBEDDING_SAMPLE, seed: int = 0) -> EmbeddingSketch:
        emb = np.asarray(emb, dtype=np.float64)
        rows = emb[np.all(np.isfinite(emb), axis=1)]
        dim = emb.shape[1]
        sample = rows[np.sort(np.random.default_rng(seed).permutation(len(rows))[:sample_rows])]
        if len(rows) < 2:
            return cls(len(rows), rows.mean(0) if len(rows) else np.zeros(dim), np.zeros((dim, dim)), sample)
        return cls(len(rows), rows.mean(0), np.cov(rows, rowvar=False).reshape(dim, dim), sample)

    def null_quantile(self, n_current: int, q: float = EMBEDDING_QUANTILE, draws: int = 20_000) -> float:
        """The q-quantile of the distance between the means of two no-drift samples of these sizes."""
        eig = np.clip(np.linalg.eigvalsh(self.cov), 0, None) * (1 / self.n + 1 / n_current)
        z = np.random.default_rng(0).standard_normal((draws, len(eig)))
        return float(np.quantile(np.sqrt((z**2) @ eig), q))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean.tolist(), "cov": self.cov.tolist(),
                "sample": np.round(self.sample, 6).tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EmbeddingSketch:
        mean = np.asarray(d["mean"], np.float64)
        sample = np.asarray(d.get("sample") or np.zeros((0, len(mean))), np.float64).reshape(-1, len(mean))
        return cls(int(d["n"]), mean, np.asarray(d["cov"], np.float64), sample)


@dataclass
class ReferenceSketch:
    """Per-column sketches of a reference set, and per-group sketches of its embeddings."""

    columns: dict[str, ColumnSketch]
    embeddings: dict[str, EmbeddingSketch] = field(default_factory=dict)
    n_rows: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)  # a few reference rows, for humans' reports

    @classmethod
    def build(cls, frame: Any, categorical: Iterable[str] = (), embeddings: Mapping[str, np.ndarray] | None = None,
              meta: dict[str, Any] | None = None, sample_rows: int = 0, seed: int = 0) -> ReferenceSketch:
        """frame: a pandas DataFrame of feature columns; embeddings: group -> (rows, dim) array (NaN rows where
        a record lacks the modality); sample_rows: keep a uniform sample of that many rows of `frame` (for
        rendering reports; checks never use it)."""
        cat = set(categorical)
        columns = {c: (ColumnSketch.categorical(frame[c].tolist()) if c in cat
                       else ColumnSketch.numeric(frame[c].to_numpy(dtype=np.float64, na_value=np.nan)))
                   for c in frame.columns}
        embs = {name: EmbeddingSketch.build(e) for name, e in (embeddings or {}).items()}
        sample = []
        if sample_rows and len(frame):
            pick = np.sort(np.random.default_rng(seed).permutation(len(frame))[:sample_rows])
            sample = json.loads(frame.iloc[pick].to_json(orient="records"))
        return cls(columns, embs, len(frame), dict(meta or {}), sample)

    def sample_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.sample)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"format": FORMAT, "n_rows": self.n_rows, "meta": self.meta,
                                    "columns": {c: s.to_json() for c, s in self.columns.items()},
                                    "embeddings": {g: e.to_json() for g, e in self.embeddings.items()},
                                    "sample": self.sample}),
                        encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ReferenceSketch:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadInputError(f"cannot read the reference sketch {path}: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BadInputError(f"{path}: not a reference sketch this mmops reads")
        return cls({c: ColumnSketch.from_json(d) for c, d in raw["columns"].items()},
                   {g: EmbeddingSketch.from_json(e) for g, e in raw.get("embeddings", {}).items()},
                   int(raw.get("n_rows", 0)), raw.get("meta", {}), raw.get("sample", []))


@dataclass
class _Current:
    """What a check holds per column: counts, never rows."""

    n: int = 0
    missing: int = 0
    cells: np.ndarray | None = None
    sums: np.ndarray | None = None  # per cell (numeric column) or per component (embedding)
    below: float = 0.0  # sum of (first anchor - x) over values below it
    above: float = 0.0  # sum of (x - last anchor) over values above it
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
        finite = x[np.isfinite(x)]
        cur.missing += len(x) - len(finite)
        if not len(finite) or not len(sk.anchors):
            return
        cur.n += len(finite)
        assert cur.cells is not None and cur.sums is not None
        idx = _cells(sk.anchors, finite)
        cur.cells += np.bincount(idx, minlength=len(cur.cells))
        cur.sums += np.bincount(idx, weights=finite, minlength=len(cur.sums))
        lo, hi = sk.anchors[0], sk.anchors[-1]
        cur.below += float(np.sum(lo - finite[finite < lo]))
        cur.above += float(np.sum(finite[finite > hi] - hi))

    def verdict(self, drift_share: float = 0.5) -> DriftVerdict:
        columns = {c: self._test(c, sk) for c, sk in self.sketch.columns.items()}
        tested = {c: d for c, d in columns.items() if d.method != "none"}
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
        if group is not None and d.method != "none":
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
    total = (cur.below + cur.above) / n_cur
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
