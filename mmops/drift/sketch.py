"""Reference sketches: what a model learnt from, column by column and per embedding, in a JSON file of
bounded size (see mmops.drift)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.drift.cells import CellIndex
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
    _index: CellIndex | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def index(self) -> CellIndex:
        """The cell finder for these anchors (built on first use, kept with the sketch)."""
        if self._index is None:
            self._index = CellIndex(self.anchors)
        return self._index

    @classmethod
    def numeric(cls, values: np.ndarray) -> ColumnSketch:
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if not len(finite):
            return cls("numeric", 0, missing=len(values))
        distinct = np.unique(finite)
        exact = len(distinct) <= MAX_ANCHORS
        anchors = distinct if exact else np.unique(np.quantile(finite, np.linspace(0, 1, MAX_ANCHORS)))
        idx = CellIndex(anchors).cells(finite)
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
