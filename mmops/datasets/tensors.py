"""Records -> tensors. The same Preprocessor turns landed files (training) and request payloads (serving)
into model inputs; its statistics are fitted on the training split and travel in the model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.blobs import read_blob
from mmops.domains import DomainPack, ImageSpec, SensorSpec, TextSpec
from mmops.modalities import decode, image_tensor, scaled, sensor_tensor, text_tensor


@dataclass
class Preprocessor:
    """Per-sensor-modality channel mean/std (fitted on train), and the text tokenizer the model's text
    encoder reads (``minilm``: its WordPiece vocabulary; ``hashed``: crc32 token buckets)."""

    sensor_mean: dict[str, list[float]] = field(default_factory=dict)
    sensor_std: dict[str, list[float]] = field(default_factory=dict)
    text_encoder: str = "hashed"

    def to_json(self) -> dict[str, Any]:
        return {"sensor_mean": self.sensor_mean, "sensor_std": self.sensor_std, "text_encoder": self.text_encoder}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Preprocessor:
        return cls(raw.get("sensor_mean", {}), raw.get("sensor_std", {}), raw.get("text_encoder", "hashed"))

    def fit(self, pack: DomainPack, values: dict[str, list[Any]]) -> Preprocessor:
        for spec in pack.modalities:
            if isinstance(spec, SensorSpec) and values.get(spec.name):
                stacked = scaled(np.concatenate(values[spec.name], axis=0), spec)
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
        if self.text_encoder == "minilm":
            from mmops.models.text import minilm_ids

            return minilm_ids(value, spec.max_tokens)
        return text_tensor(value, spec)


def empty_tensor(spec: ImageSpec | SensorSpec | TextSpec) -> np.ndarray:
    if isinstance(spec, ImageSpec):
        return np.zeros((spec.channels, *spec.size), dtype=np.float32)
    if isinstance(spec, SensorSpec):
        return np.zeros((len(spec.channels), spec.length), dtype=np.float32)
    return np.zeros(spec.max_tokens, dtype=np.int64)


@dataclass
class Batch:
    """Stacked inputs: per modality an array (N, ...) and a presence mask (N,); per sensor modality the true
    series lengths (N,) (shorter series are zero-padded; the encoder masks the padding)."""

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
        arrs, mask, lens = [], [], []
        for rec in values:
            present = rec.get(spec.name) is not None
            arrs.append(prep.tensor(spec, rec[spec.name]) if present else empty_tensor(spec))
            mask.append(present)
            if isinstance(spec, SensorSpec):
                lens.append(min(len(rec[spec.name]), spec.length) if present else spec.length)
        inputs[spec.name] = np.stack(arrs)
        masks[spec.name] = np.asarray(mask, dtype=np.float32)
        if isinstance(spec, SensorSpec):
            lengths[spec.name] = np.maximum(np.asarray(lens, dtype=np.int64), 1)
    return Batch(inputs, masks, np.asarray(labels, dtype=np.int64) if labels is not None else None, lengths)


def load_split(pack: DomainPack, data_root: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decode each manifest row's files from the content-addressed store."""
    out = []
    for row in rows:
        rec = {}
        for modality, ref in row["files"].items():
            rec[modality] = decode(read_blob(data_root, ref["blob"]), pack.modality(modality)).value
        out.append(rec)
    return out
