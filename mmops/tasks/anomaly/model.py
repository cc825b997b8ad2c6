"""An anomaly model: per modality a memory bank of normal feature vectors, and the calibration that turns
its distances into one score per record (1.0 = the threshold) and a decision.

Fitting sees normal records only: the training split's records of the pack's normal class (any other label
in it is left out, never fitted). The validation split's normal records calibrate the threshold; its known
anomalies, where there are some, only measure it. On disk (a model folder, as a classifier's): the banks in
model.safetensors (no pickle) with the calibration in its metadata, and the model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmops.card import ModelCard, read_card
from mmops.config import AnomalyParams
from mmops.datasets.tensors import Preprocessor
from mmops.domains import DomainPack
from mmops.errors import ValidationFailedError
from mmops.modalities import kind_of
from mmops.tasks.anomaly.autoencoder import WindowAutoencoder
from mmops.tasks.anomaly.calibration import Calibration
from mmops.tasks.anomaly.features import ImagePatches, TextEmbedding, motion_profile, sensor_windows
from mmops.tasks.anomaly.memory_bank import MemoryBank
from mmops.tasks.anomaly.scorers import scorer_of

WEIGHTS = "model.safetensors"
MIN_NORMAL = 10  # normal training records a memory bank is fitted on at all
AUDIO_WINDOW = 0.1  # of a clip's log-mel frames: an impact is brief, and a long window dilutes it


def modality_of(view: str) -> str:
    """The modality a bank (a view) belongs to: `camera:motion` -> `camera`."""
    return view.split(":", 1)[0]


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
    nets: dict[str, WindowAutoencoder] = field(default_factory=dict)  # scorer autoencoder: per series modality
    _extractors: dict[int, ImagePatches] = field(default_factory=dict)
    _text: TextEmbedding = field(default_factory=TextEmbedding)

    @classmethod
    def fit(cls, pack: DomainPack, normal: list[dict[str, Any]], options: AnomalyParams,
            seed: int = 0) -> AnomalyModel:
        """Memory banks from normal records (modality -> decoded value); every modality needs MIN_NORMAL.
        One bank per view of a modality (views()); a view of one vector per record keeps all of them."""
        if len(normal) < MIN_NORMAL:
            raise ValidationFailedError(f"{len(normal)} normal training records cannot describe normal operation "
                                        f"(at least {MIN_NORMAL}); land more normal records")
        values = {m: [r[m] for r in normal if m in r] for m in pack.modality_names}
        # text is read by the pretrained MiniLM (features.py): its tokenizer, whatever the classifiers use
        prep = Preprocessor(text_encoder="minilm" if any(m.kind == "text" for m in pack.modalities)
                            else "hashed").fit(pack, values)
        model = cls(pack, prep, options, {})
        for m, vals in values.items():
            if len(vals) < MIN_NORMAL:
                raise ValidationFailedError(f"{len(vals)} normal training records have {m} (at least {MIN_NORMAL})")
            for key, feats in model.views(m, vals, fitting=True, seed=seed).items():
                if key.endswith(":reconstruction"):  # the origin: a window's distance to it is its error
                    model.banks[key] = MemoryBank(np.zeros((1, 1), np.float32), 1)
                    continue
                share = options.coreset if any(len(f) > 1 for f in feats) else 1.0
                model.banks[key] = MemoryBank.fit(feats, share, options.k, seed)
        return model

    def calibrate(self, normal: list[dict[str, Any]]) -> Calibration:
        """The threshold at options.fpr on held-out normal records."""
        self.calibration = Calibration.fit(self.modality_scores(normal), self.options.fpr)
        return self.calibration

    @property
    def scorer(self) -> str:
        return scorer_of(self.pack)

    def views(self, modality: str, values: list[Any], fitting: bool = False,
              seed: int = 0) -> dict[str, list[np.ndarray]]:
        """Each view's feature vectors per record: the modality's name for its own, `<name>:motion` for a
        video's second view, `<name>:embedding` and `<name>:reconstruction` for a series under the
        autoencoder scorer (features.py and autoencoder.py say what each gives). Fitting trains the
        autoencoder on the windows first."""
        spec = self.pack.modality(modality)
        kind = kind_of(spec)
        tensors = [self.prep.tensor(spec, v) for v in values]
        if spec.kind == "image":
            return {modality: self._patches(tensors, self.options.image_size)}
        if spec.kind == "text":  # one vector per record
            return {modality: list(self._text(np.stack(tensors))[:, None, :]) if tensors else []}
        if spec.kind == "video":
            lengths = [max(1, kind.length(v, spec) or 1) for v in values]
            frames = self._patches([f for t, n in zip(tensors, lengths, strict=True) for f in t[:n]],
                                   self.options.frame_size)
            at = np.cumsum([0, *lengths])
            return {modality: [np.concatenate(frames[a:b]) for a, b in zip(at[:-1], at[1:], strict=True)],
                    f"{modality}:motion": [motion_profile(t, n) for t, n in zip(tensors, lengths, strict=True)]}
        series = [t[0] for t in tensors] if spec.kind == "audio" else tensors  # audio: (1, mels, frames)
        length = int(spec.frames if spec.kind == "audio" else spec.length)  # type: ignore[attr-defined]
        audio = spec.kind == "audio"
        window = max(2, round((AUDIO_WINDOW if audio else self.options.window) * length))
        stride = self.options.bank_stride if fitting else self.options.score_stride
        windows = [sensor_windows(t, kind.length(v, spec) or length, window, stride, centre=not audio)
                   for t, v in zip(series, values, strict=True)]
        if self.scorer != "autoencoder":
            return {modality: windows}
        if fitting:
            self.nets[modality] = WindowAutoencoder.fit(np.concatenate(windows), seed)
        codes, errors = self.nets[modality].views(windows)
        return {f"{modality}:embedding": codes, f"{modality}:reconstruction": errors}

    def _patches(self, images: list[np.ndarray], size: int) -> list[np.ndarray]:
        if size not in self._extractors:
            self._extractors[size] = ImagePatches(size)
        return list(self._extractors[size](np.stack(images))) if images else []

    def modality_scores(self, values: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Per view (a bank), each record's memory-bank distance (NaN where the record lacks the modality)."""
        out = {}
        for m in dict.fromkeys(modality_of(key) for key in self.banks):
            idx = [i for i, r in enumerate(values) if m in r]
            feats = self.views(m, [values[i][m] for i in idx]) if idx else {}
            for key in (k for k in self.banks if modality_of(k) == m):
                scores = np.full(len(values), np.nan)
                if idx:
                    scores[idx] = self.banks[key].score(feats[key])
                out[key] = scores
        return out

    def score(self, values: list[dict[str, Any]]) -> Scored:
        if self.calibration is None:
            raise ValidationFailedError("this anomaly model has no calibrated threshold yet")
        per = self.modality_scores(values)
        combined, flagged, driver = self.calibration.decide(per)
        scaled = combined / self.calibration.threshold
        per_scaled: dict[str, np.ndarray] = {}
        for key, s in per.items():  # a modality scores as its most unusual view
            m, view = modality_of(key), s / self.calibration.modality_thresholds[key]
            per_scaled[m] = np.fmax(per_scaled[m], view) if m in per_scaled else view
        return Scored(scaled, flagged, [modality_of(d) if d else None for d in driver], per_scaled)

    def save(self, out_dir: Path) -> str:
        """Banks and calibration into out_dir; returns the sha256 of the banks' file."""
        import hashlib

        from safetensors.numpy import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        assert self.calibration is not None
        # the threshold is part of the model: a recalibrated model is another checkpoint (another hash)
        nets = {k: v for m, net in sorted(self.nets.items()) for k, v in net.state(m).items()}
        save_file({**{f"bank.{m}": b.bank for m, b in sorted(self.banks.items())}, **nets}, str(out_dir / WEIGHTS),
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
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (not a mapping)
        banks = {name.split(".", 1)[1]: MemoryBank(t, int(k.get(name.split(".", 1)[1], 1)))
                 for name, t in tensors.items() if name.startswith("bank.")}
        by_net: dict[str, dict[str, np.ndarray]] = {}
        for name, t in tensors.items():
            if name.startswith("net."):
                _, modality, param = name.split(".", 2)
                by_net.setdefault(modality, {})[param] = t
        if "calibration" not in meta:
            raise ValidationFailedError(f"{model_dir / WEIGHTS} holds no calibration: not an anomaly model")
        calibration = Calibration.from_json(json.loads(meta["calibration"]))
        options = AnomalyParams.model_validate(card.arch["anomaly"])
        return cls(card.pack, Preprocessor.from_json(card.preprocessor), options, banks, calibration, card,
                   nets={m: WindowAutoencoder.from_state(entries) for m, entries in by_net.items()})
