"""Behavioural checks of a trained model (the tests/model idea of Made-With-ML), measured by `mmops evaluate`
on the test split and kept in the model card, so that every packaged model says how it behaved:

- invariance, per modality: the share of answers kept when only that modality gets a change the model must
  not care about (`ModalityKind.nudge`: a sensor 5 % more sensitive, 5 % less light, a little quieter, a
  synonym in a report); beside it, the share kept under the field's shift (`ModalityKind.shift`), for scale;
- minimum functionality (classifiers): the clearest test cases of every class (nearest their class's
  training records in the input statistics, relative to the other classes') answered right;
- direction (anomaly detectors): the calmest normal test record blended step by step into the most
  anomalous flagged one scores higher at every step.

Records go the way a client's do: each file's bytes -> the JSON value /predict takes -> (nudged) -> decoded
as the service decodes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mmops.blobs import read_blob
from mmops.domains import DomainPack
from mmops.modalities import kind_of, read_value

BLEND = (0.0, 0.25, 0.5, 0.75, 1.0)
CLEAR_PER_CLASS = 3


class Behaviour(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=0)  # test records checked
    invariance: dict[str, float]  # modality -> share of answers kept with only it nudged
    nudges: dict[str, str]  # modality -> what its nudge was
    shift_kept: float | None  # share of answers kept under the field's shift of every modality
    clear_cases: int = 0  # classifiers: the clearest test cases checked, and how many were answered right
    clear_right: int = 0
    direction: tuple[float, ...] | None = None  # detectors: scores along the blend (BLEND weights)

    @property
    def direction_holds(self) -> bool | None:
        d = self.direction
        return None if d is None else all(a < b for a, b in zip(d, d[1:], strict=False))


def wire_records(pack: DomainPack, data_root: Path, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Manifest rows -> each modality's JSON value as a client sends it."""
    out = []
    for row in rows:
        inputs = {}
        for m, ref in row["files"].items():
            spec = pack.modality(m)
            data = read_blob(data_root, ref["blob"])
            inputs[m] = kind_of(spec).to_wire(data, read_value(data, spec), spec)
        out.append(inputs)
    return out


def _decoded(pack: DomainPack, wires: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{m: kind_of(pack.modality(m)).from_wire(v, pack.modality(m)) for m, v in w.items()} for w in wires]


def _changed(pack: DomainPack, wire: dict[str, Any], only: str | None, how: str) -> dict[str, Any] | None:
    """The record with `only` (every modality where None) nudged or shifted; None where a kind has no nudge."""
    out = dict(wire)
    for m, v in wire.items():
        if only is not None and m != only:
            continue
        kind, spec = kind_of(pack.modality(m)), pack.modality(m)
        out[m] = kind.nudge(v, spec) if how == "nudge" else kind.shift(v, spec)
        if out[m] is None:
            return None
    return out


def measure(task: Any, predictor: Any, pack: DomainPack, data_root: Path, rows: Sequence[Mapping[str, Any]],
            train: Sequence[Mapping[str, Any]]) -> Behaviour:
    """The behavioural figures of `predictor` on the test `rows` (`train`: the training split's rows, whose
    input statistics say which test cases are clear)."""
    wires = wire_records(pack, data_root, rows)
    outputs = task.outputs(predictor, _decoded(pack, wires))
    answers = task.decisions(outputs)

    def kept(changed: list[dict[str, Any] | None]) -> float | None:
        idx = [i for i, c in enumerate(changed) if c is not None]
        if not idx:
            return None
        after = task.decisions(task.outputs(predictor, _decoded(pack, [c for c in changed if c is not None])))
        return round(float(np.mean(after == answers[idx])), 4)

    invariance, nudges = {}, {}
    for m in pack.modality_names:
        kind = kind_of(pack.modality(m))
        share = kept([_changed(pack, w, m, "nudge") if m in w else None for w in wires]) if kind.nudge_says else None
        if share is not None:
            invariance[m], nudges[m] = share, kind.nudge_says
    shift_kept = kept([_changed(pack, w, None, "shift") for w in wires])
    found: dict[str, Any] = {}
    if task.name == "anomaly":
        found["direction"] = _direction(task, predictor, pack, wires, outputs, task.targets(pack, rows))
    else:
        picked = clearest(rows, train, pack.classes, CLEAR_PER_CLASS)
        truth = np.array([pack.classes.index(rows[i]["label"]) for i in picked], dtype=int)
        found.update(clear_cases=len(picked), clear_right=int((answers[picked] == truth).sum()))
    return Behaviour(n=len(rows), invariance=invariance, nudges=nudges, shift_kept=shift_kept, **found)


def _direction(task: Any, predictor: Any, pack: DomainPack, wires: list[dict[str, Any]], scores: np.ndarray,
               anomalous: np.ndarray) -> tuple[float, ...] | None:
    """The scores of the calmest normal test record blended into the highest-scoring anomalous one (over the
    modalities both hold and their kinds can mix: `ModalityKind.blend`); None without both."""
    normal, flagged = np.flatnonzero(anomalous == 0), np.flatnonzero(anomalous == 1)
    if not len(normal) or not len(flagged):
        return None
    calm, fault = _decoded(pack, [wires[normal[scores[normal].argmin()]], wires[flagged[scores[flagged].argmax()]]])
    blends: list[dict[str, Any]] = [{} for _ in BLEND]
    for m in set(calm) & set(fault):
        kind = kind_of(pack.modality(m))
        for blend, w in zip(blends, BLEND, strict=True):
            mixed = kind.blend(calm[m], fault[m], w)
            if mixed is not None:
                blend[m] = mixed
    if not blends[0]:
        return None
    return tuple(round(float(s), 6) for s in task.outputs(predictor, blends))


def clearest(rows: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]], classes: tuple[str, ...],
             per_class: int) -> list[int]:
    """Per class, the indices of the test rows nearest their class's training centroid relative to the
    nearest other one, in standardised input statistics (classes without training records are skipped)."""
    keys = sorted({f"{m}.{k}" for r in train for m, f in r["files"].items() for k in f["stats"]})

    def vec(r: Mapping[str, Any]) -> np.ndarray:
        flat = {f"{m}.{k}": v for m, f in r["files"].items() for k, v in f["stats"].items()}
        return np.array([float(flat.get(k, np.nan)) for k in keys])

    if not train or not keys:
        return []
    x_train = np.array([vec(r) for r in train])
    mu, sd = np.nanmean(x_train, axis=0), np.nanstd(x_train, axis=0) + 1e-9
    z_train = np.nan_to_num((x_train - mu) / sd)
    centroids = {c: z_train[[r["label"] == c for r in train]].mean(axis=0) for c in classes
                 if any(r["label"] == c for r in train)}
    picked = []
    for c in centroids:
        scored = []
        for i, r in enumerate(rows):
            if r["label"] != c:
                continue
            z = np.nan_to_num((vec(r) - mu) / sd)
            own = np.linalg.norm(z - centroids[c])
            other = min((np.linalg.norm(z - centroids[o]) for o in centroids if o != c), default=0.0)
            scored.append((own - other, i))
        picked += [i for _, i in sorted(scored)[:per_class]]
    return picked
