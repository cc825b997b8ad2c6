"""Why did the model say that: explanations of a classifier's answer for one record at a time.

Each explanation holds, for the explained class (the predicted one unless asked for another):
- per modality, its exact Shapley value over the record's modalities (shapley.py): how much of the answer's
  probability, above what the model says with no input at all (`base`), that modality brings; they sum to
  probability - base;
- inside each modality, an attribution map (attribution.py): integrated gradients over time x channel for
  sensors and audio, over pixels for images and frames (plus Grad-CAM for images), token occlusion for text.

The service answers it at `POST /explain`, `mmops explain` for files, and the evaluation report shows the
test records the model was most and least sure of. What is shown of a text is its tokens, as the model read
them: stored text is PHI-redacted at ingest where the pack asks, and /explain redacts what it shows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmops.errors import BadInputError
from mmops.explain.attribution import (
    RecordForward,
    grad_cam,
    integrated_gradients,
    no_cudnn,
    occlusion,
    pooled,
    rounded,
)
from mmops.explain.shapley import coalitions, shapley_values

__all__ = ["NOT_FINITE", "explain_record", "explain_records"]

NOT_FINITE = "the model's output is not a number for these inputs (values far outside what it was trained on)"


def explain_records(predictor: Any, values: list[dict[str, Any]], target: str | None = None,
                    steps: int = 16) -> list[dict[str, Any]]:
    """One explanation per decoded record (see explain_record)."""
    return [explain_record(predictor, v, target, steps) for v in values]


def explain_record(predictor: Any, value: dict[str, Any], target: str | None = None, steps: int = 16,
                   maps: bool = True) -> dict[str, Any]:
    """The explanation of one decoded record (modality -> value) for class `target` (default: the predicted
    one). With maps=False, only the modalities' Shapley values (2^k forward passes, no gradients)."""
    from mmops.datasets.tensors import collate
    from mmops.inference import to_device

    pack, model, device = predictor.pack, predictor.model, predictor.device
    classes = list(pack.classes)
    if target is not None and target not in classes:
        raise BadInputError(f"class {target!r} is not one of the model's classes {classes}")
    present = [m for m in pack.modality_names if value.get(m) is not None]
    if not present:
        raise BadInputError(f"the record has none of {pack.name}'s modalities {pack.modality_names}")
    model.eval()
    inputs, masks, lengths, _, _ = to_device(collate(pack, predictor.prep, [value]), np.arange(1), device)
    probs = predictor.predict([value])[0][0]
    if not np.isfinite(probs).all():
        raise BadInputError(NOT_FINITE)
    t = classes.index(target) if target is not None else int(np.argmax(probs))
    fw = RecordForward(model, inputs, masks, lengths, t, predictor.temperature)
    subsets = coalitions(len(present))
    v = fw.coalitions(present, subsets)
    phi = shapley_values(v, subsets)
    # isotonic maps after T (tasks/isotonic.py) are steps, with no gradient to attribute: what is explained
    # is the probability over T alone, which the maps then send to the answer's
    isotonic = predictor.card is not None and predictor.card.isotonic
    out: dict[str, Any] = {
        "label": classes[t], "value": round(float(v[-1] if isotonic else probs[t]), 6), "base": round(float(v[0]), 6),
        "explained": f"probability of {classes[t]}" + (" over the temperature, before the isotonic maps"
                                                        if isotonic else ""),
        "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs, strict=True)},
        "modalities": {m: {"shapley": round(float(phi[j]), 6)} for j, m in enumerate(present)},
    }
    if not maps:
        return out
    with no_cudnn(device):
        for m in present:
            spec = pack.modality(m)
            units = predictor.prep.units(spec, value[m])
            if units is not None:
                out["modalities"][m].update(occlusion(fw, m, units))
                continue
            ig = integrated_gradients(fw, m, spec.kind, steps)
            raw = ig.pop("raw")
            if not np.isfinite(raw).all():
                raise BadInputError(f"{m}: {NOT_FINITE}")
            ig["attribution"] = rounded(pooled(raw, spec.kind))
            if spec.kind == "sensor":
                ig["channels"] = list(getattr(spec, "channels", []))
            if spec.kind == "image":
                cam = grad_cam(fw, m)
                if cam is not None:
                    ig["grad_cam"] = rounded(pooled(cam[None], "image"))
            out["modalities"][m].update(ig)
    return out
