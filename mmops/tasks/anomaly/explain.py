"""Why a detector scored a record as it did: each modality's exact Shapley value of the record's score, and
inside each modality the distance of every patch, frame or window to its nearest normal neighbour (PatchCore's
anomaly map), on the threshold's scale.

A record's score is the largest of its modalities' own scores (each over its own threshold), over the
combined threshold; so the value of a coalition of modalities is the largest of theirs on that scale (0 for
none), and the Shapley values share the score among the modalities that reach it: one unusual modality
takes most of it; two at the same height split it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmops.errors import BadInputError
from mmops.explain.attribution import rounded
from mmops.explain.shapley import coalitions, shapley_values
from mmops.tasks.anomaly.features import PATCH_STRIDE


def explain_scores(model: Any, values: list[dict[str, Any]], target: str | None = None) -> list[dict[str, Any]]:
    """One explanation per decoded record (modality -> value) for an AnomalyModel."""
    from mmops.tasks.anomaly.model import modality_of

    if target is not None:
        raise BadInputError("an anomaly detector explains its score: there is no class to choose (drop `target`)")
    assert model.calibration is not None
    scored = model.score(values)
    if not np.isfinite(scored.score).all():
        raise BadInputError("the anomaly score is not a number for these inputs")
    maps: dict[str, list[np.ndarray | None]] = {}
    for m in dict.fromkeys(modality_of(key) for key in model.banks):
        idx = [i for i, r in enumerate(values) if m in r]
        feats = model.views(m, [values[i][m] for i in idx]) if idx else {}
        for key in (k for k in model.banks if modality_of(k) == m):
            per_record: list[np.ndarray | None] = [None] * len(values)
            if idx:
                scale = model.calibration.modality_thresholds[key]
                for i, d in zip(idx, model.banks[key].locate(feats[key]), strict=True):
                    per_record[i] = np.asarray(d, dtype=np.float64) / scale
            maps[key] = per_record
    out = []
    for i, value in enumerate(values):
        present = [m for m in model.pack.modality_names if m in value and m in scored.per_modality]
        own = [float(scored.per_modality[m][i]) for m in present]
        subsets = coalitions(len(present))
        # on the record score's scale: the largest modality's own score over the combined threshold
        worth = np.array([max([s for s, keep in zip(own, row, strict=True) if keep], default=0.0)
                          for row in subsets]) / model.calibration.threshold
        phi = shapley_values(worth, subsets)
        modalities: dict[str, Any] = {}
        for j, m in enumerate(present):
            views = {key.split(":", 1)[1] if ":" in key else "patches" if _kind(model, m) in ("image", "video")
                     else "windows": _view(model, m, maps[key][i]) for key in maps if modality_of(key) == m}
            modalities[m] = {"shapley": round(float(phi[j]), 6), "score": round(own[j], 6),
                             "method": "memory_bank_distance", "views": views}
        out.append({"label": None, "value": round(float(scored.score[i]), 6), "base": 0.0,
                    "explained": "anomaly score (1.0 = the threshold)", "modalities": modalities})
    return out


def _kind(model: Any, modality: str) -> str:
    return str(model.pack.modality(modality).kind)


def _view(model: Any, modality: str, distances: np.ndarray | None) -> dict[str, Any]:
    """A view's distances laid out as the input: a patch grid per image (frames x grid for a clip), a row of
    windows over time for a series, one number for a whole-record vector (text, a clip's motion)."""
    if distances is None:
        return {"layout": "absent", "attribution": []}
    kind = _kind(model, modality)
    if len(distances) == 1:
        return {"layout": "whole record", "attribution": rounded(distances)}
    if kind in ("image", "video"):
        size = model.options.image_size if kind == "image" else model.options.frame_size
        side = size // PATCH_STRIDE
        if side and len(distances) % (side * side) == 0:
            grid = distances.reshape(-1, side, side)
            if kind == "image":
                return {"layout": "patch grid (height x width)", "attribution": rounded(grid[0])}
            return {"layout": "frames x patch grid", "attribution": rounded(grid)}
    return {"layout": "windows over time", "attribution": rounded(distances)}
