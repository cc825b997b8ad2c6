"""Sensor encoders: a multi-channel temporal CNN, optionally followed by a GRU or a Transformer, over
variable-length series. Series shorter than the domain's length are zero-padded by the preprocessor; the
encoder gets each record's true length and masks the padding out of every pooling and attention step."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmops.models.export import exporting

SENSOR_ENCODERS = ("cnn", "cnn_gru", "cnn_transformer")


class SensorBackbone(nn.Module):
    """(N, C, L) + lengths (N,) -> (N, out_dim). The CNN halves the time axis once (stride 2)."""

    def __init__(self, channels: int, arch: str = "cnn_gru", width: int = 64) -> None:
        super().__init__()
        if arch not in SENSOR_ENCODERS:
            from mmops.errors import ConfigError

            raise ConfigError(f"unknown sensor encoder {arch!r}; choose from {SENSOR_ENCODERS}")
        self.arch = arch
        self.cnn = nn.Sequential(
            nn.Conv1d(channels, 32, 7, padding=3, bias=False), nn.GroupNorm(8, 32), nn.ReLU(inplace=True),
            nn.Conv1d(32, width, 5, padding=2, stride=2, bias=False), nn.GroupNorm(8, width),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.rnn: nn.GRU | None = None
        self.transformer: nn.TransformerEncoder | None = None
        if arch == "cnn_gru":
            self.rnn = nn.GRU(width, width, batch_first=True, bidirectional=True)
            self.out_dim = 2 * width + 2 * width
        else:
            if arch == "cnn_transformer":
                layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.1,
                                                   batch_first=True, norm_first=True)
                self.transformer = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.out_dim = 2 * width
        self.width = width

    @staticmethod
    def _positions(steps: int, dim: int, device: torch.device) -> Tensor:
        pos = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / dim))
        pe = torch.zeros(steps, dim, device=device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return pe

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        n, _, length = x.shape
        if lengths is None:
            lengths = torch.full((n,), length, device=x.device, dtype=torch.long)
        # whatever sits beyond a series' length (zeros from the preprocessor, or anything else) is zeroed
        # before the convolutions, so it cannot reach the embedding through their receptive fields
        in_valid = torch.arange(length, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        h = self.cnn(x * in_valid.unsqueeze(1).to(x.dtype)).transpose(1, 2)  # (N, T, W)
        steps = h.shape[1]
        valid_len = torch.clamp((lengths + 1) // 2, min=1, max=steps)  # after the stride-2 convolution
        valid = torch.arange(steps, device=x.device).unsqueeze(0) < valid_len.unsqueeze(1)  # (N, T)
        if self.transformer is not None:
            h = self.transformer(h + self._positions(steps, self.width, x.device), src_key_padding_mask=~valid)
        vmask = valid.unsqueeze(-1).to(h.dtype)
        mean = (h * vmask).sum(1) / vmask.sum(1)
        peak = h.masked_fill(~valid.unsqueeze(-1), torch.finfo(h.dtype).min).amax(1)
        pooled = torch.cat([mean, peak], dim=1)
        if self.rnn is not None:
            if exporting():
                last = unpacked_final_states(self.rnn, h, valid_len)
            else:
                packed = nn.utils.rnn.pack_padded_sequence(h, valid_len.cpu(), batch_first=True,
                                                           enforce_sorted=False)
                _, last = self.rnn(packed)  # (2, N, W): final states of both directions over the valid steps
            pooled = torch.cat([pooled, last.transpose(0, 1).reshape(n, -1)], dim=1)
        return pooled


def unpacked_final_states(rnn: nn.GRU, h: Tensor, valid_len: Tensor) -> Tensor:
    """(2, N, W): what a one-layer bidirectional GRU over a packed sequence returns as its final states, from two
    runs over padded tensors (packing does not export to ONNX). Forward: its output at each row's last valid
    step (the padding after it comes later). Backward: the rows right-aligned (their valid steps at the end),
    so that the backward pass reads them last to first before any padding; its output at the first valid step."""
    n, steps, width = h.shape
    last = (valid_len - 1).clamp(min=0)
    rows = torch.arange(n, device=h.device)
    forward, _ = rnn(h)
    shift = (steps - 1 - last).unsqueeze(1)  # where each row's first valid step lands
    source = (torch.arange(steps, device=h.device).unsqueeze(0) - shift).clamp(min=0)
    backward, _ = rnn(h.gather(1, source.unsqueeze(-1).expand(n, steps, width)))
    half = rnn.hidden_size
    return torch.stack([forward[rows, last, :half], backward[rows, shift.squeeze(1), half:]])
