"""Loading a trained model (safetensors + model card) and predicting on decoded records. Used by evaluation,
serving and monitoring alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmops.card import ModelCard, read_card
from mmops.datasets.tensors import Batch, Preprocessor, collate
from mmops.domains import DomainPack
from mmops.runtimes import runtime_of

WEIGHTS = "model.safetensors"


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return "cuda"
    if requested == "auto" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def to_device(batch: Batch, idx: np.ndarray, device: str, channels_last: bool = False,
               features: dict[str, Any] | None = None) -> tuple[dict, dict, dict, dict, Any]:
    """The rows idx of a batch on the device: inputs (minus those replaced by precomputed features), masks,
    lengths, features, labels."""
    import torch

    def put(a: np.ndarray) -> Any:
        return torch.from_numpy(a[idx]).to(device, non_blocking=True)

    inputs = {k: put(v) for k, v in batch.inputs.items() if not features or k not in features}
    if channels_last:
        inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                  for k, v in inputs.items()}
    masks = {k: put(v) for k, v in batch.masks.items()}
    lengths = {k: put(v) for k, v in batch.lengths.items()}
    feats = {k: v[torch.from_numpy(idx).to(v.device)] for k, v in (features or {}).items()}
    labels = put(batch.labels) if batch.labels is not None else None
    return inputs, masks, lengths, feats, labels


def chunks(n: int, bs: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + bs, n)) for i in range(0, n, bs)]


def predict_batch(model: Any, batch: Batch, device: str, features: dict[str, Any] | None = None,
                  bs: int = 256, embeddings: bool = False, temperature: float = 1.0,
                  log: bool = False) -> tuple[np.ndarray, Any]:
    """Softmax probabilities (N, classes) of the logits over `temperature` (with `log`, their logarithms:
    exact where a probability underflows) and, when asked, the raw modality embeddings (N, M, D) on CPU."""
    import torch

    model.eval()
    out, embs = [], []
    with torch.inference_mode():
        for idx in chunks(len(batch), bs):
            inputs, masks, lengths, feats, _ = to_device(batch, idx, device, features=features)
            logits, e, _ = model.forward_with_embeddings(inputs, masks, lengths, feats)
            scaled = logits.float() / temperature
            out.append((torch.log_softmax(scaled, dim=1) if log else torch.softmax(scaled, dim=1)).cpu().numpy())
            if embeddings:
                embs.append(e.float().cpu())
    return np.concatenate(out), (torch.cat(embs) if embeddings else None)


@dataclass
class Predictor:
    """A model and what it needs to answer. `compiled`: the runtime that answers instead of the eager model when
    the packaged model names one (mmops.runtimes: ONNX Runtime); the eager model stays for explanations."""

    pack: DomainPack
    card: ModelCard
    model: Any
    prep: Preprocessor
    device: str
    compiled: Any = None

    @classmethod
    def load(cls, model_dir: Path, device: str = "auto") -> Predictor:
        from safetensors.torch import load_file

        from mmops.models import build_model

        card = read_card(model_dir)
        pack = card.pack
        model = build_model(pack, card.arch)
        # safetensors: no pickle is ever loaded
        model.load_state_dict(load_file(str(model_dir / WEIGHTS)))
        dev = resolve_device(device)
        model.to(dev).eval()
        runtime, compiled = runtime_of(model_dir), None
        if runtime["runtime"] != "torch":
            from mmops.runtimes.onnx import OnnxModel

            compiled = OnnxModel(model_dir / runtime["file"], dev)
        return cls(pack, card, model, Preprocessor.from_json(card.preprocessor), dev, compiled)

    @property
    def classes(self) -> list[str]:
        return list(self.pack.classes)

    @property
    def temperature(self) -> float:
        """What the logits are divided by (the card's calibration; 1.0 for a model built without a card)."""
        return float(self.card.temperature) if self.card is not None else 1.0

    def predict_proba(self, values: list[dict[str, Any]], batch_size: int = 256, calibrated: bool = True,
                      ) -> np.ndarray:
        """values: one dict per record, modality -> decoded value. Returns (N, n_classes) probabilities
        (calibrated=False: the plain softmax of the logits, as before calibration)."""
        return self.predict(values, batch_size, calibrated=calibrated)[0]

    def predict(self, values: list[dict[str, Any]], batch_size: int = 256, embeddings: bool = False,
                calibrated: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, n_classes) probabilities (calibrated as the card says: over its temperature, then through its
        isotonic maps where it has them) and, when asked, each modality's embedding (N, M, D; float32; zeros
        where a record lacks the modality). Records are collated batch_size at a time (a large request never
        holds all its tensors at once)."""
        from mmops.tasks.isotonic import apply_maps

        isotonic = self.card.isotonic if calibrated and self.card is not None else None
        probs, embs = [], []
        model = self.model if self.compiled is None else self.compiled
        for i in range(0, len(values), batch_size):
            p, e = predict_batch(model, collate(self.pack, self.prep, values[i : i + batch_size]), self.device,
                                 bs=batch_size, embeddings=embeddings,
                                 temperature=self.temperature if calibrated else 1.0)
            probs.append(apply_maps(p, isotonic) if isotonic else p)
            if e is not None:
                embs.append(e.numpy())
        if not probs:
            return np.zeros((0, len(self.classes)), dtype=np.float32), None
        return np.concatenate(probs), (np.concatenate(embs) if embeddings else None)
