"""Records -> tensors. The same Preprocessor turns landed files (training) and request payloads (serving)
into model inputs; its statistics are fitted on the training split and travel in the model card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.blobs import read_blob
from mmops.domains import DomainPack
from mmops.modalities import ModalitySpec, kind_of, read_value


@dataclass
class Preprocessor:
    """What each modality's kind fitted on the training split (a sensor's channel mean and std), and the
    model's input choices (`text_encoder`: the tokenizer its text encoder reads, ``minilm`` or ``hashed``)."""

    fitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    text_encoder: str = "hashed"

    def to_json(self) -> dict[str, Any]:
        return {"fitted": self.fitted, "text_encoder": self.text_encoder}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Preprocessor:
        fitted = dict(raw.get("fitted", {}))
        for name, mean in raw.get("sensor_mean", {}).items():  # cards written before kinds were plug-ins
            fitted[name] = {"mean": mean, "std": raw["sensor_std"][name]}
        return cls(fitted, raw.get("text_encoder", "hashed"))

    def fit(self, pack: DomainPack, values: dict[str, list[Any]]) -> Preprocessor:
        for spec in pack.modalities:
            if values.get(spec.name):
                fitted = kind_of(spec).fit(spec, values[spec.name])
                if fitted is not None:
                    self.fitted[spec.name] = fitted
        return self

    def tensor(self, spec: ModalitySpec, value: Any) -> np.ndarray:
        return kind_of(spec).tensor(value, spec, self.fitted.get(spec.name, {}), {"text_encoder": self.text_encoder})

    def units(self, spec: ModalitySpec, value: Any) -> list[str] | None:
        """What each position of `tensor`'s array is, for a kind of discrete units (text's tokens); else None."""
        return kind_of(spec).units(value, spec, {"text_encoder": self.text_encoder})


def empty_tensor(spec: ModalitySpec) -> np.ndarray:
    return kind_of(spec).empty(spec)


@dataclass
class Batch:
    """Stacked inputs: per modality an array (N, ...) and a presence mask (N,); per sequence modality (a
    sensor's) the true lengths (N,) (shorter series are zero-padded; the encoder masks the padding)."""

    inputs: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    lengths: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.masks.values())))


def collate(pack: DomainPack, prep: Preprocessor, values: list[dict[str, Any]],
            labels: list[int] | None = None) -> Batch:
    """values: one dict per record, modality -> decoded value (missing modalities simply absent)."""
    inputs, masks, lengths = {}, {}, {}
    for spec in pack.modalities:
        kind = kind_of(spec)
        arrs, mask, lens = [], [], []
        for rec in values:
            present = rec.get(spec.name) is not None
            arrs.append(prep.tensor(spec, rec[spec.name]) if present else empty_tensor(spec))
            mask.append(present)
            lens.append(kind.length(rec[spec.name], spec) if present else None)
        inputs[spec.name] = np.stack(arrs)
        masks[spec.name] = np.asarray(mask, dtype=np.float32)
        if any(n is not None for n in lens):  # a sequence kind: padding is masked by the true lengths
            full = int(inputs[spec.name].shape[-1])
            lengths[spec.name] = np.maximum(np.asarray([full if n is None else n for n in lens], dtype=np.int64), 1)
    return Batch(inputs, masks, np.asarray(labels, dtype=np.int64) if labels is not None else None, lengths)


def load_split(pack: DomainPack, data_root: Path, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Decode each manifest row's files from the content-addressed store."""
    out = []
    for row in rows:
        rec = {}
        for modality, ref in row["files"].items():
            rec[modality] = read_value(read_blob(data_root, ref["blob"]), pack.modality(modality))
        out.append(rec)
    return out
