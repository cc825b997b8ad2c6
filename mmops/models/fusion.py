"""The multimodal model: one encoder per modality (backbone -> projection to a shared width), a fusion layer
(concatenation, gated weighted sum or cross-modal attention), a classification head, and projection heads
for the contrastive (InfoNCE) alignment of modality embeddings.

A record missing a modality gets a zero embedding for it and a 0 in its mask; every fusion mode sees the
masks, so one model serves complete and partial records. Modality dropout (training only) hides present
modalities at random so the model learns to cope with partial records.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmops.domains import DomainPack
from mmops.modalities import ModalitySpec, kind_of

FUSIONS = ("concat", "gated", "attention")


class ModalityEncoder(nn.Module):
    """backbone (possibly pretrained) -> LayerNorm + Linear + GELU to the shared embedding width.

    `source` names the pretrained weights the backbone may start from (None: none exist for it);
    `pretrained` says whether this model's backbone did, which training reads to freeze it at first."""

    def __init__(self, backbone: nn.Module, dim: int, source: str | None = None, takes_lengths: bool = False) -> None:
        super().__init__()
        self.source, self.pretrained, self.takes_lengths = source, source is not None, takes_lengths
        self.backbone = backbone
        out = int(backbone.out_dim)  # type: ignore[arg-type]
        self.head = nn.Sequential(nn.LayerNorm(out), nn.Linear(out, dim), nn.GELU())

    def features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.backbone(x, lengths) if self.takes_lengths else self.backbone(x)

    def forward(self, x: Tensor, lengths: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        return self.head(self.features(x, lengths) if features is None else features)


def make_encoder(spec: ModalitySpec, arch: dict[str, Any], pretrained: bool) -> ModalityEncoder:
    """The modality's kind's default encoder, projected to the shared width."""
    enc = kind_of(spec).encoder(spec, arch, pretrained)
    return ModalityEncoder(enc.backbone, int(arch["embed_dim"]), enc.source, enc.takes_lengths)


class FusionClassifier(nn.Module):
    def __init__(self, pack: DomainPack, arch: dict[str, Any], pretrained: bool = False) -> None:
        super().__init__()
        self.names = pack.modality_names
        self.fusion = str(arch.get("fusion", "concat"))
        if self.fusion not in FUSIONS:
            from mmops.errors import ConfigError

            raise ConfigError(f"unknown fusion {self.fusion!r}; choose from {FUSIONS}")
        self.modality_dropout = float(arch.get("modality_dropout", 0.0))
        dim = int(arch["embed_dim"])
        self.encoders = nn.ModuleDict({s.name: make_encoder(s, arch, pretrained) for s in pack.modalities})
        n = len(self.names)
        if self.fusion == "gated":
            self.gate = nn.Linear(dim, 1)
            fused_dim = dim + n
        elif self.fusion == "attention":
            self.modality_token = nn.Parameter(torch.zeros(n, dim))
            nn.init.normal_(self.modality_token, std=0.02)
            heads = 4 if dim % 4 == 0 else 1
            self.attention = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.1,
                                                        batch_first=True, norm_first=True)
            fused_dim = dim + n
        else:
            fused_dim = dim * n + n
        self.head = nn.Sequential(nn.LayerNorm(fused_dim), nn.Dropout(0.2), nn.Linear(fused_dim, dim),
                                  nn.ReLU(inplace=True), nn.Linear(dim, len(pack.classes)))
        proj = int(arch.get("proj_dim", 0) or 0)
        self.projections = nn.ModuleDict({m: nn.Linear(dim, proj) for m in self.names}) if proj and n > 1 else None

    def embed(self, inputs: dict[str, Tensor], masks: dict[str, Tensor], lengths: dict[str, Tensor] | None = None,
              features: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(raw embeddings (N, M, D), presence mask (N, M), fusion mask (N, M) after modality dropout)."""
        lengths, features = lengths or {}, features or {}
        present = torch.stack([masks[n] for n in self.names], dim=1)
        mask = present
        if self.training and self.modality_dropout > 0 and len(self.names) > 1:
            kept = present * (torch.rand_like(present) >= self.modality_dropout).to(present.dtype)
            mask = torch.where(kept.sum(dim=1, keepdim=True) > 0, kept, present)  # never drop all
        embs = torch.stack([self.encoders[n](inputs.get(n), lengths.get(n), features.get(n))
                            for n in self.names], dim=1)
        return embs, present, mask

    def fuse(self, embs: Tensor, mask: Tensor) -> Tensor:
        embs = embs * mask.unsqueeze(-1).to(embs.dtype)
        if self.fusion == "gated":
            scores = self.gate(embs).squeeze(-1).float().masked_fill(mask == 0, -1e4)
            fused = (torch.softmax(scores, dim=1).unsqueeze(-1).to(embs.dtype) * embs).sum(dim=1)
        elif self.fusion == "attention":
            # cross-modal attention: each present modality attends to the others; missing ones are keys never
            # attended to (a record with none at all attends to its zero tokens rather than to nothing)
            pad = (mask == 0) & (mask.sum(dim=1, keepdim=True) > 0)
            out = self.attention(embs + self.modality_token, src_key_padding_mask=pad)
            keep = (~pad).unsqueeze(-1).to(out.dtype)
            fused = (out * keep).sum(1) / keep.sum(1).clamp(min=1)
        else:
            fused = embs.flatten(1)
        return torch.cat([fused, mask.to(fused.dtype)], dim=1)

    def forward(self, inputs: dict[str, Tensor], masks: dict[str, Tensor], lengths: dict[str, Tensor] | None = None,
                features: dict[str, Tensor] | None = None, return_embeddings: bool = False) -> Any:
        """Logits; with return_embeddings, (logits, raw embeddings (N, M, D), presence mask (N, M)) for the
        alignment loss. `features` replaces a modality's backbone by its precomputed (frozen) output."""
        embs, present, mask = self.embed(inputs, masks, lengths, features)
        logits = self.head(self.fuse(embs, mask))
        return (logits, embs, present) if return_embeddings else logits

    def forward_with_embeddings(self, inputs: dict[str, Tensor], masks: dict[str, Tensor],
                                lengths: dict[str, Tensor] | None = None,
                                features: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        out: tuple[Tensor, Tensor, Tensor] = self(inputs, masks, lengths, features, return_embeddings=True)
        return out

    def projected(self, embs: Tensor) -> dict[str, Tensor]:
        """L2-normalised projections per modality, for contrastive alignment and cross-modal retrieval."""
        if self.projections is None:
            return {}
        return {m: F.normalize(self.projections[m](embs[:, i]).float(), dim=1) for i, m in enumerate(self.names)}


def info_nce(za: Tensor, zb: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE (CLIP-style): row i of za should match row i of zb against every other row."""
    logits = za @ zb.T / temperature
    target = torch.arange(len(za), device=za.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def alignment_loss(model: FusionClassifier, embs: Tensor, present: Tensor, temperature: float = 0.1) -> Tensor:
    """Mean InfoNCE over modality pairs, on the records of the batch that have both modalities."""
    proj = model.projected(embs)
    losses = []
    names = model.names
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            both = (present[:, i] > 0) & (present[:, j] > 0)
            if int(both.sum()) >= 2:
                losses.append(info_nce(proj[names[i]][both], proj[names[j]][both], temperature))
    return torch.stack(losses).mean() if losses else embs.sum() * 0.0


def recall_at_k(za: Tensor, zb: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Cross-modal retrieval: for each row of za, is its partner (same row of zb) among the k most similar?"""
    sims = za @ zb.T
    rank = (sims > sims.diag().unsqueeze(1)).sum(1)  # how many candidates beat the true partner
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def build_model(pack: DomainPack, arch: dict[str, Any], pretrained: bool = False) -> FusionClassifier:
    """The model an arch dict describes. pretrained=True loads ImageNet / MiniLM weights into the backbones
    (training); serving builds the bare architecture and loads the trained safetensors over it."""
    return FusionClassifier(pack, arch, pretrained)
