"""Published anomaly detectors run beside ours on the same records and the same split (the results table):
aeon's ROCKAD (whole-series: ROCKET features, bagged k-nearest neighbours; for packs of sensor series) and
scikit-learn's IsolationForest and LocalOutlierFactor (novelty mode) on the same inputs our model reads (each
record's standardised tensors, flattened). Every anchor is fitted on the normal training records only, as
ours is, and scored on the test records; higher is more anomalous.

For a pack of one univariate sensor series, aeon's detectors of anomalous *points* in a series run too, each
record scored by its most anomalous point: STOMP (the matrix profile's discords, a window an eighth of the
record; unsupervised, within the record), MERLIN (discords of every length from a twelfth to a sixth of the
record; unsupervised) and KMeansAD (distance of each window to k-means centres of the normal records'
windows; semi-supervised, fitted on the normal training records end to end)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mmops.datasets.tensors import Preprocessor
from mmops.domains import DomainPack


def flat(pack: DomainPack, prep: Preprocessor, values: list[dict[str, Any]]) -> np.ndarray:
    """(N, D): each record's tensors, modality after modality, flattened (zeros for a missing modality)."""
    from mmops.datasets.tensors import empty_tensor

    return np.stack([np.concatenate([(prep.tensor(m, v[m.name]) if m.name in v else empty_tensor(m)).ravel()
                                     for m in pack.modalities]) for v in values]).astype(np.float32)


def series(pack: DomainPack, prep: Preprocessor, values: list[dict[str, Any]]) -> np.ndarray | None:
    """(N, channels, length) for a pack of one sensor modality (what ROCKAD takes), else None."""
    if len(pack.modalities) != 1 or pack.modalities[0].kind != "sensor":
        return None
    m = pack.modalities[0]
    return np.stack([prep.tensor(m, v[m.name]) for v in values]).astype(np.float64)


def point_anchors(fit: np.ndarray, scored: list[np.ndarray], seed: int) -> dict[str, Callable[[], list[np.ndarray]]]:
    """aeon's point detectors on (N, 1, L) univariate records: each a function giving, per list of records,
    each record's largest point score."""
    from aeon.anomaly_detection.series.distance_based import MERLIN, STOMP, KMeansAD

    length = fit.shape[2]
    window = max(4, length // 8)

    def per_record(make: Callable[[], Any]) -> Callable[[], list[np.ndarray]]:
        return lambda: [np.array([np.max(make().fit_predict(r[0])) for r in s], dtype=np.float64) for s in scored]

    def kmeans() -> list[np.ndarray]:
        model = KMeansAD(n_clusters=20, window_size=window, random_state=seed).fit(np.concatenate(fit[:, 0]))
        return [np.array([np.max(model.predict(r[0])) for r in s], dtype=np.float64) for s in scored]

    return {"STOMP (aeon)": per_record(lambda: STOMP(window_size=window)),
            "MERLIN (aeon)": per_record(lambda: MERLIN(min_length=max(4, length // 12), max_length=max(5, length // 6))),
            "KMeansAD (aeon)": kmeans}


def anchor_scores(pack: DomainPack, prep: Preprocessor, normal: list[dict[str, Any]],
                  scored: list[list[dict[str, Any]]], seed: int,
                  points: bool = True) -> dict[str, tuple[list[np.ndarray], float]]:
    """Each anchor fitted once on the normal records, then its scores of each list of records in `scored`,
    and the seconds that took (`points`: the point detectors too, where the pack is one univariate series)."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    x_fit = flat(pack, prep, normal)
    xs = [flat(pack, prep, s) for s in scored]
    detectors: dict[str, Callable[[], list[np.ndarray]]] = {
        "IsolationForest (scikit-learn)": lambda: _scores(IsolationForest(random_state=seed).fit(x_fit), xs),
        "LOF (scikit-learn)": lambda: _scores(LocalOutlierFactor(n_neighbors=min(20, len(x_fit) - 1),
                                                                 novelty=True).fit(x_fit), xs),
    }
    s_fit = series(pack, prep, normal)
    if s_fit is not None:
        def rockad() -> list[np.ndarray]:
            from aeon.anomaly_detection.collection import ROCKAD

            model = ROCKAD(random_state=seed).fit(s_fit)
            return [np.asarray(model.predict(series(pack, prep, s)), dtype=np.float64) for s in scored]

        detectors["ROCKAD (aeon)"] = rockad
        if points and s_fit.shape[1] == 1:
            detectors.update(point_anchors(s_fit, [np.asarray(series(pack, prep, s)) for s in scored], seed))
    import torch

    out = {}
    threads = torch.get_num_threads()
    try:
        for name, run in detectors.items():
            start = time.perf_counter()
            out[name] = (run(), time.perf_counter() - start)
    finally:
        # aeon's numba kernels reset the OpenMP thread count that torch shares: a later training in this
        # process would run on another thread count and give another checkpoint
        torch.set_num_threads(threads)
    return out


def _scores(model: Any, xs: list[np.ndarray]) -> list[np.ndarray]:
    return [-model.score_samples(x) for x in xs]  # scikit-learn: higher is more normal
