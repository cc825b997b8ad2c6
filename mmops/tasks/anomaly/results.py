"""The results table's rows for an anomaly-detection pack: our detector (with its coreset and with the full
bank; for packs with a series, the other scorer too: memory bank of raw windows, or autoencoder) beside the
anchors (anchors.py), all fitted on the same normal training records,
thresholded at the same false-positive rate on the same validation normals, and scored on the same test
records."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmops.tasks.anomaly.calibration import anomaly_metrics, flagged_share_check, threshold_at_fpr
from mmops.tasks.anomaly.scorers import SCORERS, scorer_of


@dataclass
class AnomalyRow:
    dataset: str
    model: str
    auroc: float | None
    auprc: float | None
    f1: float
    recall: float
    fpr: float | None  # realized on the test normals, at the threshold calibrated on the validation normals
    n_test: int
    n_anomalous: int
    seconds: float
    note: str = ""
    fpr_check: str = ""  # fpr_note's verdict; folded into the note


def run_anomaly_domain(domain: str) -> list[AnomalyRow]:
    from mmops import pipeline
    from mmops.context import Context
    from mmops.datasets.tensors import load_split
    from mmops.tasks.anomaly.anchors import anchor_scores
    from mmops.tasks.anomaly.model import MIN_NORMAL, AnomalyModel

    ctx = Context.resolve(domain)
    settings, params, pack = ctx.settings, ctx.params, ctx.pack
    manifest = pipeline.built_manifest(domain)
    normal_class = pack.task_options["normal_class"]
    rows = {s: manifest.split(s) for s in ("train", "val", "test")}
    normal = {s: load_split(pack, settings.data_dir, [r for r in rows[s] if r["label"] == normal_class])
              for s in ("train", "val")}
    test = load_split(pack, settings.data_dir, rows["test"])
    y = np.array([r["label"] != normal_class for r in rows["test"]])
    options = params.train.anomaly
    title = f"{domain} ({manifest.id[:18]}, {len(rows['test'])} test records)"
    out: list[AnomalyRow] = []
    prep = None
    AnomalyModel.fit(pack, normal["train"][:MIN_NORMAL], options, params.seed)  # first-call costs, untimed
    own = scorer_of(pack)
    variants = [(own, c) for c in dict.fromkeys((options.coreset, 1.0))]
    if any(m.kind in ("sensor", "audio") for m in pack.modalities):  # the other scorer for series, beside
        variants += [(other, options.coreset) for other in SCORERS if other != own]
    for scorer, coreset in variants:
        variant = pack.model_copy(update={"task_options": {**pack.task_options, "scorer": scorer}})
        start = time.perf_counter()
        model = AnomalyModel.fit(variant, normal["train"], options.model_copy(update={"coreset": coreset}),
                                 params.seed)
        model.calibrate(normal["val"])
        scores = model.score(test).score
        name = f"mmops {scorer.replace('_', ' ')}, " + (f"coreset {coreset:.0%}" if coreset < 1 else "full")
        out.append(_row(title, name, y, scores, 1.0, time.perf_counter() - start, "ours"))
        out[-1].fpr_check = fpr_note(y, scores > 1.0, options.fpr, len(normal["val"]))
        prep = model.prep
    assert prep is not None
    anchors = anchor_scores(pack, prep, normal["train"], [normal["val"], test], params.seed)
    for name, ((val_scores, scores), spent) in anchors.items():
        threshold = threshold_at_fpr(val_scores, options.fpr)  # the same protocol as ours
        out.append(_row(title, name, y, scores, threshold, spent, "anchor"))
        out[-1].fpr_check = fpr_note(y, scores > threshold, options.fpr, len(normal["val"]))
    best = max((r for r in out if r.note == "anchor"), key=lambda r: r.auroc or 0.0, default=None)
    for r in out:
        if r.note == "ours" and best is not None and r.auroc is not None and best.auroc is not None:
            r.note = f"vs best anchor ({best.model}): {r.auroc - best.auroc:+.3f} AUROC"
        elif r.note in ("ours", "anchor"):
            r.note = "anchor" if r.note == "anchor" else ""
        r.note = "; ".join(n for n in (r.note, r.fpr_check) if n)
    return out


def fpr_note(is_anomaly: np.ndarray, flagged: np.ndarray, fpr: float, n_calibration: int) -> str:
    """The realized false-positive rate against the target, as a count and the two-sided beta-binomial test
    that monitoring runs (calibration.flagged_share_check): with a threshold from n_calibration normals, a
    share of a few dozen test normals is uncertain by several points, so "0/34" can be what the target
    predicts (p well above 0.05) or a real departure (p below)."""
    normal = ~np.asarray(is_anomaly, dtype=bool)
    k, n = int(np.asarray(flagged)[normal].sum()), int(normal.sum())
    if n == 0:
        return ""
    check = flagged_share_check(k, n, fpr, n_calibration, alpha=0.05)
    return f"FPR {k}/{n} vs target {fpr:g}: p {check['p_value']:.2f}"


def _row(title: str, model: str, y: np.ndarray, scores: np.ndarray, threshold: float, seconds: float,
         note: str) -> AnomalyRow:
    m: dict[str, Any] = anomaly_metrics(y, scores, threshold)
    return AnomalyRow(title, model, m["auroc"], m["auprc"], m["f1"], m["recall"], m["fpr"], m["n"],
                      m["n_anomalous"], round(seconds, 1), note)
