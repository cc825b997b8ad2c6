"""The video kind's default encoder: every sampled frame through an image backbone (pretrained on ImageNet or
not, as for images), then pooled over the frames a clip really has: their mean, an attention-weighted sum (a
learned score per frame, softmax over the valid ones), and how much they change from frame to frame (the mean
absolute difference of consecutive frames' features: zero for a frozen picture, whatever it shows)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FramePooling(nn.Module):
    """(N, T, C, H, W) + lengths in frames (N,) -> (N, 3 * frame features)."""

    def __init__(self, frame_backbone: nn.Module) -> None:
        super().__init__()
        self.frames = frame_backbone
        dim = int(frame_backbone.out_dim)  # type: ignore[arg-type]
        self.score = nn.Linear(dim, 1)
        self.out_dim = 3 * dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        n, t = x.shape[:2]
        if lengths is None:
            lengths = torch.full((n,), t, device=x.device, dtype=torch.long)
        feats = self.frames(x.flatten(0, 1)).view(n, t, -1)  # (N, T, D)
        valid = torch.arange(t, device=x.device).unsqueeze(0) < lengths.clamp(min=1).unsqueeze(1)  # (N, T)
        vmask = valid.unsqueeze(-1).to(feats.dtype)
        mean = (feats * vmask).sum(1) / vmask.sum(1)
        weights = torch.softmax(self.score(feats).squeeze(-1).masked_fill(~valid, float("-inf")), dim=1)
        attended = (weights.unsqueeze(-1) * feats).sum(1)
        steps = (valid[:, 1:] & valid[:, :-1]).unsqueeze(-1).to(feats.dtype)  # pairs of valid frames
        change = ((feats[:, 1:] - feats[:, :-1]).abs() * steps).sum(1) / steps.sum(1).clamp(min=1)
        return torch.cat([mean, attended, change], dim=1)
