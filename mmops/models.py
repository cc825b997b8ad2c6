"""Plain-torch multimodal models: one encoder per modality, a fusion layer, a classification head.

A record missing a modality gets a zero embedding for it (its mask is 0); fusion sees the masks, so the
same model serves complete and partial records.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmops.domains import DomainPack, ImageSpec, SensorSpec, TextSpec


class ImageEncoder(nn.Module):
    """A small CNN trained from scratch (pretrained backbones come with the transfer-learning work).

    GroupNorm, not BatchNorm: small data sets give few steps per epoch, and BatchNorm's running statistics
    then lag the weights so far that eval-mode predictions collapse (seen on the 120-image faces split)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(8, cout),
                                 nn.ReLU(inplace=True))

        self.net = nn.Sequential(block(channels, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2),
                                 block(64, dim), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SensorEncoder(nn.Module):
    """Temporal CNN over (channels x time), average- and max-pooled over time."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, 32, 7, padding=3, bias=False), nn.GroupNorm(8, 32), nn.ReLU(inplace=True),
            nn.Conv1d(32, 64, 5, padding=2, stride=2, bias=False), nn.GroupNorm(8, 64), nn.ReLU(inplace=True),
            nn.Conv1d(64, dim, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x)
        return self.proj(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


class TextEncoder(nn.Module):
    """Hashed-token embedding bag: light, dependency-free; a pretrained text encoder comes later."""

    def __init__(self, buckets: int, dim: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)
        self.proj = nn.Sequential(nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, ids: Tensor) -> Tensor:
        return self.proj(self.bag(ids))


class FusionClassifier(nn.Module):
    def __init__(self, pack: DomainPack, embed_dim: int = 64, fusion: str = "concat",
                 modality_dropout: float = 0.0) -> None:
        super().__init__()
        self.names = pack.modality_names
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        encoders: dict[str, nn.Module] = {}
        for spec in pack.modalities:
            if isinstance(spec, ImageSpec):
                encoders[spec.name] = ImageEncoder(spec.channels, embed_dim)
            elif isinstance(spec, SensorSpec):
                encoders[spec.name] = SensorEncoder(len(spec.channels), embed_dim)
            elif isinstance(spec, TextSpec):
                encoders[spec.name] = TextEncoder(spec.vocab_buckets, embed_dim)
        self.encoders = nn.ModuleDict(encoders)
        n = len(self.names)
        if fusion == "gated":
            self.gate = nn.Linear(embed_dim, 1)
            fused_dim = embed_dim + n
        else:
            fused_dim = embed_dim * n + n
        self.head = nn.Sequential(nn.LayerNorm(fused_dim), nn.Dropout(0.2), nn.Linear(fused_dim, embed_dim),
                                  nn.ReLU(inplace=True), nn.Linear(embed_dim, len(pack.classes)))

    def embed(self, inputs: dict[str, Tensor], masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-modality embeddings (N, M, D) zeroed where a modality is missing, and the masks (N, M)."""
        mask = torch.stack([masks[n] for n in self.names], dim=1)
        if self.training and self.modality_dropout > 0 and len(self.names) > 1:
            drop = (torch.rand_like(mask) < self.modality_dropout).float()
            kept = mask * (1 - drop)
            # never drop every modality a record has
            mask = torch.where(kept.sum(dim=1, keepdim=True) > 0, kept, mask)
        embs = torch.stack([self.encoders[n](inputs[n]) for n in self.names], dim=1)
        return embs * mask.unsqueeze(-1), mask

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        embs, mask = self.embed(inputs, masks)
        if self.fusion == "gated":
            scores = self.gate(embs).squeeze(-1).masked_fill(mask == 0, -1e4)
            fused = (torch.softmax(scores, dim=1).unsqueeze(-1) * embs).sum(dim=1)
        else:
            fused = embs.flatten(1)
        return self.head(torch.cat([fused, mask], dim=1))


def build_model(pack: DomainPack, arch: dict[str, Any]) -> FusionClassifier:
    return FusionClassifier(pack, embed_dim=int(arch["embed_dim"]), fusion=str(arch["fusion"]),
                            modality_dropout=float(arch.get("modality_dropout", 0.0)))
