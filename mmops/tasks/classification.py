"""Classification: one label per record out of the domain's classes, trained with a class-weighted cross-entropy
(mmops.training), judged on accuracy, macro-F1, AUROC and calibration (ECE), with a confusion matrix and ROC
curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mmops.tasks import Prelabel, TaskKind

UNCERTAINTY = ("entropy", "margin")


def uncertainty(probs: np.ndarray, method: str = "entropy") -> np.ndarray:
    """(N, K) probabilities -> (N,) scores in [0, 1]; higher = less sure."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    if method == "entropy":
        return -(p * np.log(p)).sum(axis=1) / math.log(p.shape[1])
    if method == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    raise ValueError(f"unknown uncertainty method {method!r}; use one of {UNCERTAINTY}")


class Classification(TaskKind):
    name = "classification"
    registry_metrics = ("accuracy", "macro_f1", "auroc", "ece", "n")
    headline_metrics = ("accuracy", "macro_f1", "auroc", "ece")
    modality_metrics = ("n", "accuracy", "macro_f1", "auroc")
    calibration_keys = ("temperature", "ece", "ece_uncalibrated")
    promote_metric = "macro_f1"

    def train(self, pack: Any, manifest: Any, data_root: Path, params: Any, seed: int, out_dir: Path,
              progress: Any = None, resume: bool | str = False) -> Any:
        from mmops.training import train_model

        return train_model(pack, manifest, data_root, params, seed, out_dir, progress, resume=resume)

    def load(self, model_dir: Path, device: str = "auto") -> Any:
        from mmops.inference import Predictor

        return Predictor.load(model_dir, device)

    def targets(self, pack: Any, rows: list[Any]) -> np.ndarray:
        return np.array([pack.classes.index(r["label"]) for r in rows])

    def outputs(self, predictor: Any, values: list[dict[str, Any]]) -> np.ndarray:
        return np.asarray(predictor.predict_proba(values))

    def metrics(self, y: np.ndarray, outputs: np.ndarray, classes: list[str]) -> dict[str, Any]:
        from mmops.evaluation import classification_metrics

        return classification_metrics(y, outputs, classes)

    def observe(self, predictor: Any, values: list[dict[str, Any]], classes: list[str]
                ) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
        probs, embs = predictor.predict(values, embeddings=True)
        embeddings: dict[str, np.ndarray] = {}
        if embs is not None:  # None: no records
            for j, m in enumerate(predictor.pack.modality_names):
                e = embs[:, j].astype(np.float64)
                e[[i for i, v in enumerate(values) if m not in v]] = np.nan
                embeddings[m] = e
        return {"prediction": [classes[i] for i in probs.argmax(axis=1)]}, embeddings

    def serve(self, predictor: Any, values: list[dict[str, Any]], embeddings: bool) -> list[dict[str, Any]]:
        probs, embs = predictor.predict(values, embeddings=embeddings)
        answers: list[dict[str, Any]] = [{"probabilities": p} for p in probs.tolist()]
        if embs is not None:  # for the prediction log (embedding drift): each present modality's embedding, as
            names = predictor.pack.modality_names  # float32 arrays: the log's writer serializes them (orjson)
            for a, v, e in zip(answers, values, np.round(embs, 4), strict=True):
                a["embeddings"] = {m: e[j] for j, m in enumerate(names) if m in v}
        return answers

    def answer(self, raw: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        from mmops.errors import BadInputError

        p = raw["probabilities"]
        if not all(math.isfinite(x) for x in p):  # inputs so far from the training data that float32 overflows
            raise BadInputError("the model's output is not a number for these inputs (values far outside what "
                                "it was trained on)")
        best = max(range(len(p)), key=p.__getitem__)
        return {"label": classes[best], "probabilities": dict(zip(classes, p, strict=True)), "outputs": {}}

    def calibration(self, predictor: Any, values: list[dict[str, Any]], y: np.ndarray, outputs: np.ndarray,
                    ) -> dict[str, Any]:
        """The card's temperature, whether isotonic maps follow it (1) or not (0) with both methods'
        cross-validated Brier scores on the validation split that chose, and the test ECE without calibration
        (`ece` is with it)."""
        from mmops.evaluation import expected_calibration_error
        from mmops.tasks.temperature import uncalibrated

        t, isotonic = predictor.temperature, predictor.card.isotonic
        # T alone is undone from the outputs; isotonic maps are not invertible: the model is asked again
        before = predictor.predict_proba(values, calibrated=False) if isotonic else uncalibrated(outputs, t)
        chose = {k: predictor.card.val_metrics.get(k) for k in ("brier_cv_temperature", "brier_cv_isotonic")}
        return {"temperature": t, "isotonic": 1.0 if isotonic else 0.0, **chose,
                "ece_uncalibrated": expected_calibration_error(y, before)}

    def explain(self, predictor: Any, values: list[dict[str, Any]], target: str | None = None) -> list[dict[str, Any]]:
        from mmops.explain import explain_records

        return explain_records(predictor, values, target)

    def prelabel(self, predictor: Any, values: list[dict[str, Any]], method: str) -> list[Prelabel]:
        """The most probable class; the least sure answers (entropy of the probabilities, or the margin
        between the top two) are reviewed first, where a label teaches the model most."""
        probs = np.asarray(predictor.predict_proba(values))
        if not len(probs):
            return []
        classes = list(predictor.pack.classes)
        out = []
        for p, rank in zip(probs, uncertainty(probs, method), strict=True):
            best = int(p.argmax())
            shown = {c: round(float(x), 4) for c, x in zip(classes, p, strict=True)}
            out.append(Prelabel(classes[best], round(float(p[best]), 4), {"probabilities": shown}, float(rank),
                                method, shown))
        return out

    def report(self, metrics: dict[str, Any], y: np.ndarray, outputs: np.ndarray, classes: list[str], title: str,
               out_dir: Path) -> dict[str, str]:
        from mmops.evaluation import plot_confusion, plot_reliability, plot_roc
        from mmops.tasks.temperature import uncalibrated

        plots = {"confusion_matrix": out_dir / "confusion_matrix.png", "roc": out_dir / "roc.png",
                 "reliability": out_dir / "reliability.png"}
        t = float(metrics.get("temperature", 1.0))
        before = f"before (ECE {metrics.get('ece_uncalibrated', metrics['ece']):.3f})"
        if metrics.get("isotonic"):  # the maps are not invertible: the curve after them, the ECE before in its name
            curves = {f"temperature {t:.2f} + isotonic (ECE {metrics['ece']:.3f}; {before})": outputs}
        else:
            curves = {before: uncalibrated(outputs, t), f"temperature {t:.2f} (ECE {metrics['ece']:.3f})": outputs}
        plot_reliability(y, curves, f"{title}: test reliability", plots["reliability"])
        plot_confusion(metrics["confusion_matrix"], classes, f"{title}: test accuracy {metrics['accuracy']:.3f}",
                       plots["confusion_matrix"])
        auroc = f" (AUROC {metrics['auroc']:.3f})" if metrics["auroc"] is not None else ""
        plot_roc(y, outputs, classes, f"{title}: test ROC{auroc}", plots["roc"])
        return {k: str(v) for k, v in plots.items()}
