"""The audio kind's default encoder: a small CNN over the log-mel spectrogram (frequency x time), pooled over
the frames a clip really has (the padding of shorter clips is masked out). Trained from scratch, or from
`mmops pretrain` weights; no package ships pretrained general audio-event weights (PANNs, VGGish, BEATs)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

STRIDE = 8  # three 2x2 poolings


class LogMelCNN(nn.Module):
    """(N, 1, mels, frames) + lengths in frames (N,) -> (N, 2 * width): mean and max over valid time."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True)]

        self.cnn = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, width))
        self.out_dim = 2 * width

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        n, _, _, frames = x.shape
        if lengths is None:
            lengths = torch.full((n,), frames, device=x.device, dtype=torch.long)
        in_valid = torch.arange(frames, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # (N, T)
        h = self.cnn(x * in_valid[:, None, None, :].to(x.dtype)).mean(dim=2)  # (N, W, T')
        steps = h.shape[2]
        valid_len = torch.clamp((lengths + STRIDE - 1) // STRIDE, min=1, max=steps)
        valid = (torch.arange(steps, device=x.device).unsqueeze(0) < valid_len.unsqueeze(1)).unsqueeze(1)
        vmask = valid.to(h.dtype)
        mean = (h * vmask).sum(2) / vmask.sum(2)
        peak = h.masked_fill(~valid, torch.finfo(h.dtype).min).amax(2)
        return torch.cat([mean, peak], dim=1)
