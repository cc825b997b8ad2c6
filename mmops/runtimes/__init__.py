"""Serving runtimes of a packaged classifier: eager torch (the default), ONNX Runtime (the model exported to
ONNX with a dynamic batch), or int8 (that export with ONNX Runtime's dynamic int8 quantization of its weights).

Chosen per domain in params.yaml (`serve.runtime`) or at packaging (`mmops package --runtime`); packaging
exports the model, checks it against eager torch on the test split (mmops/runtimes/parity.py: a runtime that
moves the test metric by more than half a point is refused, with the figures) and ships the ONNX file and
runtime.json beside the weights. The model service then answers with it (mmops/inference.Predictor); the
eager model stays loaded for explanations. Anomaly detectors serve eager torch only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from mmops.errors import BadInputError

Runtime = Literal["torch", "onnx", "int8"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "int8")
FILES = {"onnx": "model.onnx", "int8": "model.int8.onnx"}
RUNTIME_FILE = "runtime.json"  # beside the weights in a packaged model: which runtime, its parity figures


def runtime_of(model_dir: Path) -> dict:
    """What a packaged model runs on: its runtime.json (runtime, file and the parity gate's figures, as
    card.complete.RuntimeFigures holds them); {"runtime": "torch"} without one."""
    path = model_dir / RUNTIME_FILE
    if not path.exists():
        return {"runtime": "torch"}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path} is unreadable: {exc}") from exc
    if found.get("runtime") not in RUNTIMES or (found["runtime"] != "torch" and not (model_dir / found.get("file",
                                                                                                          "")).is_file()):
        raise BadInputError(f"{path} names runtime {found.get('runtime')!r} with file {found.get('file')!r}, which "
                            f"is not in {model_dir}")
    return dict(found)
