"""The parity gate at packaging: a runtime other than eager torch serves only if, on the test split, it scores
within half a point of eager torch (accuracy), with the largest difference of any answer's probability
recorded in the model card and in runtime.json; otherwise it is refused, with the figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mmops.card.complete import RuntimeFigures
from mmops.datasets.tensors import collate
from mmops.errors import ConfigError, ValidationFailedError
from mmops.inference import WEIGHTS, Predictor
from mmops.runtimes import FILES, RUNTIME_FILE
from mmops.runtimes.onnx import OnnxModel, export, quantize

TOLERANCE = 0.005  # half a point of test accuracy
SINGLES = 64  # test records also run one at a time


def compile_model(runtime: str, predictor: Predictor, model_dir: Path, values: list[dict[str, Any]], y: np.ndarray,
                  out_dir: Path) -> RuntimeFigures:
    """Export the eager `predictor` for `runtime` into out_dir (the ONNX file and runtime.json), and check it
    on the test split (`values`, labels `y`): as a batch, and its first SINGLES records one at a time.
    ValidationFailedError, with the figures, when it fails the gate."""
    if runtime not in FILES:
        raise ConfigError(f"runtime {runtime!r}: choose from torch, {', '.join(FILES)}")
    if not values:
        raise ValidationFailedError("no test records to check the runtime on: it is not packaged unchecked")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export(predictor.model, collate(predictor.pack, predictor.prep, values[:2]), out_dir / FILES["onnx"])
    if runtime == "int8":
        path = quantize(path, out_dir / FILES["int8"])
        (out_dir / FILES["onnx"]).unlink()
    compiled = replace(predictor, compiled=OnnxModel(path, predictor.device))
    eager_p, compiled_p = predictor.predict_proba(values), compiled.predict_proba(values)
    # and one record at a time, as a lone request reaches the service (a batch of one lacks what others have)
    singles = values[:SINGLES]
    try:
        alone = np.concatenate([compiled.predict_proba([v]) for v in singles])
    except Exception as exc:  # ONNX Runtime raises its own types
        raise ValidationFailedError(f"the {runtime} runtime fails on a record alone: {type(exc).__name__}: {exc}; "
                                    "not packaged") from exc
    figures = RuntimeFigures(
        runtime=runtime, file=path.name, metric="accuracy", n=len(y), tolerance=TOLERANCE,
        eager=round(float((eager_p.argmax(1) == y).mean()), 6),
        compiled=round(float((compiled_p.argmax(1) == y).mean()), 6),
        max_probability_diff=float(max(np.abs(eager_p - compiled_p).max(),
                                       np.abs(eager_p[: len(singles)] - alone).max())),
        size_bytes=path.stat().st_size, eager_size_bytes=(model_dir / WEIGHTS).stat().st_size)
    (out_dir / RUNTIME_FILE).write_text(json.dumps(figures.model_dump(), indent=2), encoding="utf-8")
    if not figures.passed:
        raise ValidationFailedError(
            f"the {runtime} runtime scores test accuracy {figures.compiled:.4f} against eager torch's "
            f"{figures.eager:.4f} on {figures.n} records (allowed: within {TOLERANCE}; largest probability "
            f"difference {figures.max_probability_diff:.4g}): not packaged; package with --runtime torch")
    return figures
