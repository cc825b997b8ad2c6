"""Loading a trained model (safetensors + model card) and predicting on decoded records. Used by evaluation,
serving and monitoring alike."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmops.datasets.tensors import Preprocessor, collate
from mmops.domains import DomainPack
from mmops.errors import BadInputError

CARD_FORMAT = "mmops-model-card/2"  # 2: encoders, fusion and preprocessing named in "arch"
WEIGHTS = "model.safetensors"
CARD = "model_card.json"


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return "cuda"
    if requested == "auto" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def read_card(model_dir: Path) -> dict[str, Any]:
    card = json.loads((model_dir / CARD).read_text(encoding="utf-8"))
    if card.get("format") != CARD_FORMAT:
        raise BadInputError(f"{model_dir / CARD}: not a model card this mmops reads (format "
                            f"{card.get('format')!r}, expected {CARD_FORMAT!r}); retrain with `mmops train`")
    return card


@dataclass
class Predictor:
    pack: DomainPack
    card: dict[str, Any]
    model: Any
    prep: Preprocessor
    device: str

    @classmethod
    def load(cls, model_dir: Path, device: str = "auto") -> Predictor:
        from safetensors.torch import load_file

        card = read_card(model_dir)
        pack = DomainPack.model_validate(card["domain_pack"])
        from mmops.models import build_model

        model = build_model(pack, card["arch"])
        # safetensors: no pickle is ever loaded
        model.load_state_dict(load_file(str(model_dir / WEIGHTS)))
        dev = resolve_device(device)
        model.to(dev).eval()
        return cls(pack, card, model, Preprocessor.from_json(card["preprocessor"]), dev)

    @property
    def classes(self) -> list[str]:
        return list(self.pack.classes)

    def predict_proba(self, values: list[dict[str, Any]], batch_size: int = 256) -> np.ndarray:
        """values: one dict per record, modality -> decoded value. Returns (N, n_classes) probabilities."""
        import torch

        out = []
        for i in range(0, len(values), batch_size):
            batch = collate(self.pack, self.prep, values[i : i + batch_size])
            inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.inputs.items()}
            masks = {k: torch.from_numpy(v).to(self.device) for k, v in batch.masks.items()}
            lengths = {k: torch.from_numpy(v).to(self.device) for k, v in batch.lengths.items()}
            with torch.inference_mode():
                logits = self.model(inputs, masks, lengths)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)
