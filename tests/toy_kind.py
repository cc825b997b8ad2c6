"""A modality kind that mmops does not have, written as a user's plug-in would be: `vector`, a fixed-length
feature vector (a spectrum, an embedding from another system) landed as a JSON list of numbers.

Nothing in mmops/ knows it: tests/integration/test_plugin_kind.py names this module in MMOPS_PLUGINS and
takes a domain of it through ingest, validation, build, training and a real `bentoml serve`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mmops.errors import BadInputError
from mmops.modalities import Decoded, Encoder, Expectation, ModalityKind, ModalitySpec, register


class VectorSpec(ModalitySpec):
    kind: Literal["vector"] = "vector"
    dim: int = Field(ge=1, le=4096)
    extensions: tuple[str, ...] = (".json",)


def _checked(values: Any, spec: VectorSpec) -> np.ndarray:
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                for v in values):
        raise BadInputError("expected a JSON list of numbers")
    if len(values) != spec.dim:
        raise BadInputError(f"vector has {len(values)} values, expected {spec.dim}")
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all() or np.abs(arr).max() > 1e6:
        raise BadInputError("vector values must be finite and within ±1e6")
    return arr.astype(np.float32)


class _Backbone:
    """Built lazily so that importing the plug-in does not import torch."""

    @staticmethod
    def make(dim: int) -> Any:
        from torch import nn

        net = nn.Sequential(nn.Linear(dim, 16), nn.ReLU())
        net.out_dim = 16  # type: ignore[assignment]
        return net


class VectorKind(ModalityKind):
    name = "vector"
    spec = VectorSpec

    def decode(self, data: bytes, spec: VectorSpec, phi_key: bytes | None = None) -> Decoded:
        try:
            values = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInputError(f"not a JSON file: {exc}") from None
        arr = _checked(values, spec)
        return Decoded(arr, self.stats(arr, spec))

    def stats(self, value: np.ndarray, spec: VectorSpec) -> dict[str, float]:
        return {"mean": float(value.mean()), "std": float(value.std()), "norm": float(np.linalg.norm(value))}

    def expectations(self, spec: VectorSpec) -> list[Expectation]:
        return [("ExpectColumnValuesToNotBeNull", {"column": "mean"}, "critical"),
                ("ExpectColumnValuesToBeBetween", {"column": "norm", "min_value": 1e-6}, "critical")]

    def fit(self, spec: VectorSpec, values: list[Any]) -> dict[str, Any] | None:
        stacked = np.stack(values)
        return {"mean": stacked.mean(axis=0).tolist(), "std": np.maximum(stacked.std(axis=0), 1e-6).tolist()}

    def tensor(self, value: np.ndarray, spec: VectorSpec, fitted: Mapping[str, Any],
               options: Mapping[str, str]) -> np.ndarray:
        mean = np.asarray(fitted.get("mean", 0.0), dtype=np.float32)
        std = np.asarray(fitted.get("std", 1.0), dtype=np.float32)
        return ((value - mean) / std).astype(np.float32)

    def empty(self, spec: VectorSpec) -> np.ndarray:
        return np.zeros(spec.dim, dtype=np.float32)

    def encoder(self, spec: VectorSpec, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        return Encoder(_Backbone.make(spec.dim))

    def wire_schema(self, spec: VectorSpec) -> dict[str, Any]:
        return {"type": "array", "minItems": spec.dim, "maxItems": spec.dim,
                "items": {"type": "number", "minimum": -1e6, "maximum": 1e6}}

    def from_wire(self, raw: Any, spec: VectorSpec) -> np.ndarray:
        return _checked(raw, spec)

    def to_wire(self, data: bytes, value: np.ndarray, spec: VectorSpec) -> Any:
        return value.astype(float).tolist()

    def to_file(self, value: Any, spec: VectorSpec) -> tuple[bytes, str]:
        return json.dumps(value).encode("utf-8"), ".json"


register(VectorKind())
