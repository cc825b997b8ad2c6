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
  reference's min and max the integral is exact (from the count and sum of the values there);
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

from mmops.drift.check import ColumnDrift, DriftCheck, DriftVerdict, column_group, drift_by_group
from mmops.drift.sketch import EMBEDDING_SAMPLE, FORMAT, ColumnSketch, EmbeddingSketch, ReferenceSketch

__all__ = ["EMBEDDING_SAMPLE", "FORMAT", "ColumnDrift", "ColumnSketch", "DriftCheck", "DriftVerdict",
           "EmbeddingSketch", "ReferenceSketch", "column_group", "drift_by_group"]
