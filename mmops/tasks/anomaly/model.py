"""An anomaly model: per modality a memory bank of normal feature vectors, and the calibration that turns
its distances into one score per record (1.0 = the threshold) and a decision.

Fitting sees normal records only: the training split's records of the pack's normal class (any other label
in it is left out, never fitted). The validation split's normal records calibrate the threshold; its known
anomalies, where there are some, only measure it. On disk (a model folder, as a classifier's): the banks in
model.safetensors (no pickle) with the calibration in its metadata, and the model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmops.card import ModelCard, read_card
from mmops.config import AnomalyParams
from mmops.datasets.tensors import Preprocessor
from mmops.domains import DomainPack
from mmops.errors import ValidationFailedError
from mmops.modalities import kind_of
from mmops.tasks.anomaly.calibration import Calibration
from mmops.tasks.anomaly.features import ImagePatches, sensor_windows
from mmops.tasks.anomaly.memory_bank import MemoryBank

WEIGHTS = "model.safetensors"
MIN_NORMAL = 10  # normal training records a memory bank is fitted on at all


@dataclass
class Scored:
    """Per record: the score (1.0 = the threshold), whether it is flagged, the modality that drove it, and
    each modality's own scaled score (NaN where the record lacks it)."""

    score: np.ndarray
    is_anomaly: np.ndarray
    driver: list[str | None]
    per_modality: dict[str, np.ndarray]


@dataclass
class AnomalyModel:
    pack: DomainPack
    prep: Preprocessor
    options: AnomalyParams
    banks: dict[str, MemoryBank]
    calibration: Calibration | None = None
    card: ModelCard | None = None
    _patches: ImagePatches | None = None

    @classmethod
    def fit(cls, pack: DomainPack, normal: list[dict[str, Any]], options: AnomalyParams,
            seed: int = 0) -> AnomalyModel:
        """Memory banks from normal records (modality -> decoded value); every modality needs MIN_NORMAL."""
        if len(normal) < MIN_NORMAL:
            raise ValidationFailedError(f"{len(normal)} normal training records cannot describe normal operation "
                                        f"(at least {MIN_NORMAL}); land more normal records")
        values = {m: [r[m] for r in normal if m in r] for m in pack.modality_names}
        prep = Preprocessor().fit(pack, values)
        model = cls(pack, prep, options, {})
        for m, vals in values.items():
            if len(vals) < MIN_NORMAL:
                raise ValidationFailedError(f"{len(vals)} normal training records have {m} (at least {MIN_NORMAL})")
            feats = model.features(m, vals, fitting=True)
            model.banks[m] = MemoryBank.fit(feats, options.coreset, options.k, seed)
        return model

    def calibrate(self, normal: list[dict[str, Any]]) -> Calibration:
        """The threshold at options.fpr on held-out normal records."""
        self.calibration = Calibration.fit(self.modality_scores(normal), self.options.fpr)
        return self.calibration

    def features(self, modality: str, values: list[Any], fitting: bool = False) -> list[np.ndarray]:
        spec = self.pack.modality(modality)
        kind = kind_of(spec)
        tensors = [self.prep.tensor(spec, v) for v in values]
        if spec.kind == "image":
            if self._patches is None:
                self._patches = ImagePatches(self.options.image_size)
            return list(self._patches(np.stack(tensors))) if tensors else []
        length = int(spec.length)  # type: ignore[attr-defined]
        window = max(2, round(self.options.window * length))
        stride = self.options.bank_stride if fitting else self.options.score_stride
        return [sensor_windows(t, kind.length(v, spec) or length, window, stride) for t, v in zip(tensors, values,
                                                                                                 strict=True)]

    def modality_scores(self, values: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Per modality, each record's memory-bank distance (NaN where the record lacks the modality)."""
        out = {}
        for m, bank in self.banks.items():
            idx = [i for i, r in enumerate(values) if m in r]
            scores = np.full(len(values), np.nan)
            if idx:
                scores[idx] = bank.score(self.features(m, [values[i][m] for i in idx]))
            out[m] = scores
        return out

    def score(self, values: list[dict[str, Any]]) -> Scored:
        if self.calibration is None:
            raise ValidationFailedError("this anomaly model has no calibrated threshold yet")
        per = self.modality_scores(values)
        combined, flagged, driver = self.calibration.decide(per)
        scaled = combined / self.calibration.threshold
        per_scaled = {m: s / self.calibration.modality_thresholds[m] for m, s in per.items()}
        return Scored(scaled, flagged, driver, per_scaled)

    def save(self, out_dir: Path) -> str:
        """Banks and calibration into out_dir; returns the sha256 of the banks' file."""
        import hashlib

        from safetensors.numpy import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        assert self.calibration is not None
        # the threshold is part of the model: a recalibrated model is another checkpoint (another hash)
        save_file({f"bank.{m}": b.bank for m, b in sorted(self.banks.items())}, str(out_dir / WEIGHTS),
                  metadata={"k": json.dumps({m: b.k for m, b in self.banks.items()}),
                            "calibration": json.dumps(self.calibration.to_json())})
        return hashlib.sha256((out_dir / WEIGHTS).read_bytes()).hexdigest()

    @classmethod
    def load(cls, model_dir: Path) -> AnomalyModel:
        from safetensors import safe_open

        card = read_card(model_dir)
        with safe_open(str(model_dir / WEIGHTS), framework="numpy") as fh:
            meta = fh.metadata() or {}
            k = json.loads(meta.get("k", "{}"))
            banks = {name.split(".", 1)[1]: MemoryBank(fh.get_tensor(name), int(k.get(name.split(".", 1)[1], 1)))
                     for name in fh.keys()}  # noqa: SIM118 (safe_open is not a mapping)
        if "calibration" not in meta:
            raise ValidationFailedError(f"{model_dir / WEIGHTS} holds no calibration: not an anomaly model")
        calibration = Calibration.from_json(json.loads(meta["calibration"]))
        options = AnomalyParams.model_validate(card.arch["anomaly"])
        return cls(card.pack, Preprocessor.from_json(card.preprocessor), options, banks, calibration, card)
