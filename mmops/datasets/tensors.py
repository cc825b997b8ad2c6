"""Records -> tensors. The same Preprocessor turns landed files (training) and request payloads (serving)
into model inputs; its statistics are fitted on the training split and travel in the model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.domains import DomainPack, ImageSpec, SensorSpec, TextSpec
from mmops.modalities import decode, image_tensor, sensor_tensor, text_tensor


@dataclass
class Preprocessor:
    """Per-sensor-modality channel mean/std (fitted on train) and the specs needed to build tensors."""

    sensor_mean: dict[str, list[float]] = field(default_factory=dict)
    sensor_std: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"sensor_mean": self.sensor_mean, "sensor_std": self.sensor_std}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Preprocessor:
        return cls(raw.get("sensor_mean", {}), raw.get("sensor_std", {}))

    def fit(self, pack: DomainPack, values: dict[str, list[Any]]) -> Preprocessor:
        for spec in pack.modalities:
            if isinstance(spec, SensorSpec) and values.get(spec.name):
                stacked = np.concatenate(values[spec.name], axis=0)
                self.sensor_mean[spec.name] = stacked.mean(axis=0).astype(float).tolist()
                self.sensor_std[spec.name] = np.maximum(stacked.std(axis=0), 1e-6).astype(float).tolist()
        return self

    def tensor(self, spec: ImageSpec | SensorSpec | TextSpec, value: Any) -> np.ndarray:
        if isinstance(spec, ImageSpec):
            return image_tensor(value, spec)
        if isinstance(spec, SensorSpec):
            n = len(spec.channels)
            mean = np.asarray(self.sensor_mean.get(spec.name, [0.0] * n), dtype=np.float32)
            std = np.asarray(self.sensor_std.get(spec.name, [1.0] * n), dtype=np.float32)
            return sensor_tensor(value, spec, mean, std)
        return text_tensor(value, spec)


def empty_tensor(spec: ImageSpec | SensorSpec | TextSpec) -> np.ndarray:
    if isinstance(spec, ImageSpec):
        return np.zeros((spec.channels, *spec.size), dtype=np.float32)
    if isinstance(spec, SensorSpec):
        return np.zeros((len(spec.channels), spec.length), dtype=np.float32)
    return np.zeros(spec.max_tokens, dtype=np.int64)


@dataclass
class Batch:
    """Stacked inputs: per modality an array (N, ...) and a presence mask (N,)."""

    inputs: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.masks.values())))


def collate(pack: DomainPack, prep: Preprocessor, values: list[dict[str, Any]],
            labels: list[int] | None = None) -> Batch:
    """values: one dict per record, modality -> decoded value (missing modalities simply absent)."""
    inputs, masks = {}, {}
    for spec in pack.modalities:
        arrs, mask = [], []
        for rec in values:
            present = rec.get(spec.name) is not None
            arrs.append(prep.tensor(spec, rec[spec.name]) if present else empty_tensor(spec))
            mask.append(present)
        inputs[spec.name] = np.stack(arrs)
        masks[spec.name] = np.asarray(mask, dtype=np.float32)
    return Batch(inputs, masks, np.asarray(labels, dtype=np.int64) if labels is not None else None)


def load_split(pack: DomainPack, data_root: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decode each manifest row's files from the content-addressed store."""
    out = []
    for row in rows:
        rec = {}
        for modality, ref in row["files"].items():
            rec[modality] = decode((data_root / ref["blob"]).read_bytes(), pack.modality(modality)).value
        out.append(rec)
    return out
