"""A learned scorer for series (sensor windows, log-mel windows): an autoencoder fitted on the normal
training windows only, selected per pack with `task_options: {scorer: autoencoder}`.

It gives a series modality two views in place of its raw windows (model.py):
- `<name>:embedding`: each window's bottleneck code, in a memory bank (nearest-neighbour distance to the
  codes of normal windows): a learned embedding, compact where raw windows are long;
- `<name>:reconstruction`: each window's reconstruction error (mean squared, per value). Its bank is the
  origin, so a record's score is its worst window's error: what the network never learnt to rebuild.

A small multilayer perceptron (windows are already centred and standardised: features.py), trained with
Adam on the mean squared error, full-batch order fixed by the seed, on one thread: the same normal windows
give the same weights on any machine. Weights go to model.safetensors beside the banks (`net.<name>.*`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmops.errors import ValidationFailedError

CODE, HIDDEN = 16, 128  # bottleneck and hidden widths
EPOCHS, BATCH, LR = 60, 256, 2e-3


def _net(width: int) -> Any:
    import torch.nn as nn

    encoder = nn.Sequential(nn.Linear(width, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, CODE))
    decoder = nn.Sequential(nn.Linear(CODE, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, width))
    return nn.ModuleDict({"encoder": encoder, "decoder": decoder})


@dataclass
class WindowAutoencoder:
    """The fitted network and its input width (channels x window)."""

    net: Any
    width: int

    @classmethod
    def fit(cls, windows: np.ndarray, seed: int = 0, epochs: int = EPOCHS) -> WindowAutoencoder:
        """Train on (N, width) normal windows."""
        import torch

        x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        if x.ndim != 2 or len(x) < 2:
            raise ValidationFailedError(f"an autoencoder needs at least 2 normal windows (got {tuple(x.shape)})")
        if not torch.isfinite(x).all():
            raise ValidationFailedError("normal windows hold NaN or inf; the autoencoder would learn nothing")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small matrices: one thread is as fast, and the result is the same anywhere
        try:
            gen = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            net = _net(x.shape[1])
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            for _ in range(epochs):
                for idx in torch.randperm(len(x), generator=gen).split(BATCH):
                    batch = x[idx]
                    loss = torch.mean((net["decoder"](net["encoder"](batch)) - batch) ** 2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
        return cls(net.eval(), int(x.shape[1]))

    def views(self, windows: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per record, its windows' codes (P, CODE) and reconstruction errors (P, 1)."""
        import torch

        if not windows:
            return [], []
        sizes = np.cumsum([len(w) for w in windows])[:-1]
        x = torch.as_tensor(np.concatenate(windows).astype(np.float32))
        if x.shape[1] != self.width:
            raise ValidationFailedError(f"windows of width {x.shape[1]}, the autoencoder's is {self.width}")
        with torch.inference_mode():
            codes = self.net["encoder"](x)
            errors = torch.mean((self.net["decoder"](codes) - x) ** 2, dim=1, keepdim=True)
        return np.split(codes.numpy(), sizes), np.split(errors.numpy(), sizes)

    def state(self, name: str) -> dict[str, np.ndarray]:
        """The weights as safetensors entries `net.<name>.<parameter>`."""
        return {f"net.{name}.{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}

    @classmethod
    def from_state(cls, entries: dict[str, np.ndarray]) -> WindowAutoencoder:
        """Back from one modality's entries (`<parameter>` -> array, the `net.<name>.` prefix removed)."""
        import torch

        width = int(entries["encoder.0.weight"].shape[1])
        net = _net(width)
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in entries.items()})
        return cls(net.eval(), width)
