"""Attribution inside one modality of one record: which parts of the input moved the model's probability for
the explained class, the other modalities held as they are.

- Continuous inputs (a sensor's time x channel, audio's mel x frame, image and video pixels): integrated
  gradients (Sundararajan et al., 2017) from the input blurred (`blurred`: shape removed, level and colour
  kept), in plain torch. Not from the zero input: the encoders normalise after their first convolution
  (GroupNorm), so they do not see an input's scale, and along the straight path from zero the answer jumps
  within the first 1e-7 of it, where float32 arithmetic decides it. Completeness is checked on every call:
  the attributions must sum to f(input) - f(baseline) within `TOLERANCE`; the steps double until they do
  (`completeness_error` says how close).
- Images also get Grad-CAM on their encoder's last convolution (captum's LayerGradCam), upsampled.
- Discrete units (text's tokens): occlusion, each token set to padding in turn (gradients mean nothing on
  token ids); the attribution is how much the probability drops without it.

Maps are sum-pooled to at most `MAX_BINS` per axis (sums keep completeness), small enough for a JSON answer.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOLERANCE = 0.01  # completeness: |sum of attributions - (f(x) - f(baseline))| within 1 % of the gap,
GAP_FLOOR = 0.01  # or of 0.01 where the gap is smaller (1e-4 in probability: float32's noise decides below)
MAX_STEPS = 1024  # encoder passes along the path, at most: points x frames (a clip's frames each pass)
CHUNK = 64  # path points per forward pass
MAX_BINS = {2: (64, 256), 3: (32, 16, 16)}  # by the map's rank once colour channels are summed


@dataclass
class RecordForward:
    """The model's probability for class `target` on one record (tensors with a batch of 1), with one
    modality's input or the presence of modalities varied."""

    model: Any
    inputs: dict[str, Any]
    masks: dict[str, Any]
    lengths: dict[str, Any]
    target: int
    temperature: float = 1.0  # the model's calibration (tasks/temperature.py): probabilities as it answers them
    _features: dict[str, dict[str, Any]] = field(default_factory=dict)  # per varied modality: the others'

    def prob(self, name: str, x: Any) -> Any:
        """(n,) probabilities with modality `name`'s input replaced by the n rows of x; the other modalities'
        backbones run once (their features are kept), only `name`'s runs on every row."""
        import torch

        n = x.shape[0]
        if name not in self._features:
            with torch.no_grad():
                self._features[name] = {
                    k: self.model.encoders[k].features(v, self.lengths.get(k)) for k, v in self.inputs.items()
                    if k != name}
        features = {k: f.expand(n, *f.shape[1:]) for k, f in self._features[name].items()}
        inputs = {name: x}
        masks = {k: v.expand(n) for k, v in self.masks.items()}
        lengths = {k: v.expand(n) for k, v in self.lengths.items()}
        return self._target(self.model(inputs, masks, lengths, features))

    def coalitions(self, names: list[str], subsets: np.ndarray) -> np.ndarray:
        """The probability with only each subset of `names` present (the others masked out, as missing)."""
        import torch

        n = len(subsets)
        keep = torch.from_numpy(subsets).to(next(iter(self.masks.values())).device)
        masks = {k: v.expand(n).clone() for k, v in self.masks.items()}
        for j, name in enumerate(names):
            masks[name] = masks[name] * keep[:, j]
        for name in set(masks) - set(names):
            masks[name] = torch.zeros_like(masks[name])
        inputs = {k: v.expand(n, *v.shape[1:]) for k, v in self.inputs.items()}
        lengths = {k: v.expand(n) for k, v in self.lengths.items()}
        with torch.no_grad():
            logits = self.model(inputs, masks, lengths)
        return self._target(logits).cpu().numpy().astype(np.float64)

    def _target(self, logits: Any) -> Any:
        """The target class's probability, as the model answers it (over its temperature)."""
        import torch

        return torch.softmax(logits.float() / self.temperature, dim=1)[:, self.target]


def no_cudnn(device: str) -> Any:
    """cuDNN's RNN has no backward pass in eval mode: gradients through a GRU encoder need it off on CUDA."""
    import torch

    return torch.backends.cudnn.flags(enabled=False) if device.startswith("cuda") else nullcontext()


def path_nodes(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]: where along the path from the baseline to the input the
    gradients are taken, and how much each counts."""
    x, w = np.polynomial.legendre.leggauss(steps)
    return (x + 1) / 2, w / 2


def blurred(x: Any, kind: str) -> Any:
    """The baseline: the input blurred by a Gaussian of a sixth of its extent, along time for sensors and
    audio (a sensor's slow trend, a sound's average spectrum), over height and width for images and each
    video frame (the picture's colours without its shapes)."""
    import torch
    import torch.nn.functional as F

    def along(t: Any, axis: int) -> Any:
        n = t.shape[axis]
        sigma = max(n / 6.0, 1.0)
        half = min(int(3 * sigma), n - 1)
        if half < 1:
            return t
        k = torch.exp(-0.5 * (torch.arange(-half, half + 1, device=t.device, dtype=t.dtype) / sigma) ** 2)
        moved = t.movedim(axis, -1)
        flat = moved.reshape(-1, 1, n)
        out = F.conv1d(F.pad(flat, (half, half), mode="reflect"), (k / k.sum()).view(1, 1, -1))
        return out.reshape(moved.shape).movedim(-1, axis)

    if kind in ("image", "video"):
        return along(along(x, -1), -2)
    return along(x, -1)


def integrated_gradients(fw: RecordForward, name: str, kind: str, steps: int = 16) -> dict[str, Any]:
    """Integrated gradients of modality `name` from its blurred input, the steps doubled until completeness
    holds within TOLERANCE or the budget is spent (MAX_STEPS encoder passes: a clip of T frames gets MAX_STEPS /
    T path points); `completeness_error` says how close it came."""
    import torch

    x0 = fw.inputs[name].float()
    frames = int(x0.shape[1]) if kind == "video" else 1
    base = blurred(x0, kind)
    x = x0 - base
    with torch.no_grad():
        gap = float(fw.prob(name, x0)[0] - fw.prob(name, base)[0])
    while True:
        alphas, weights = path_nodes(steps)
        grads = torch.zeros_like(x[0])
        for chunk in range(0, len(alphas), CHUNK):
            a = torch.as_tensor(alphas[chunk : chunk + CHUNK], dtype=x.dtype, device=x.device)
            w = torch.as_tensor(weights[chunk : chunk + CHUNK], dtype=x.dtype, device=x.device)
            shape = (-1, *([1] * (x.dim() - 1)))
            points = (base + a.view(shape) * x).requires_grad_(True)
            (g,) = torch.autograd.grad(fw.prob(name, points).sum(), points)
            grads += (w.view(shape) * g).sum(0)
        attr = (grads * x[0]).detach().cpu().double().numpy()
        error = abs(float(attr.sum()) - gap) / max(abs(gap), GAP_FLOOR)
        if error <= TOLERANCE or 2 * steps * frames > MAX_STEPS:
            break
        steps *= 2
    return {"method": "integrated_gradients", "baseline": "blurred input", "steps": steps,
            "prediction_gap": round(gap, 6), "total": round(float(attr.sum()), 6),
            "completeness_error": round(error, 6), "raw": attr}


def grad_cam(fw: RecordForward, name: str) -> np.ndarray | None:
    """Grad-CAM on the last Conv2d of the modality's encoder, upsampled to the input's height x width
    (None when the encoder has no convolution)."""
    from captum.attr import LayerAttribution, LayerGradCam
    from torch import nn

    convs = [m for m in fw.model.encoders[name].modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return None
    x = fw.inputs[name].float()
    cam = LayerGradCam(lambda t: fw.prob(name, t), convs[-1]).attribute(x, relu_attributions=True)
    up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    out: np.ndarray = up[0, 0].detach().cpu().double().numpy()
    return out


def occlusion(fw: RecordForward, name: str, units: list[str]) -> dict[str, Any]:
    """Each unit (token) set to padding (0) in turn: attribution = p(record) - p(record without it)."""
    import torch

    ids = fw.inputs[name]
    positions = [int(i) for i in torch.nonzero(ids[0] != 0).flatten()]
    variants = ids.expand(len(positions) + 1, *ids.shape[1:]).clone()
    for row, pos in enumerate(positions, start=1):
        variants[row, pos] = 0
    with torch.no_grad():
        p = fw.prob(name, variants).cpu().double().numpy()
    scores = p[0] - p[1:]
    return {"method": "occlusion", "baseline": "token removed",
            "units": [units[i] if i < len(units) else f"#{i}" for i in positions],
            "attribution": [round(float(s), 6) for s in scores]}


def pooled(a: np.ndarray, kind: str) -> np.ndarray:
    """The attribution summed over colour channels (images, frames, audio's one) and sum-pooled to MAX_BINS:
    a sensor's (channels, time), an image's or a spectrogram's (height, width), a clip's (frames, h, w)."""
    if kind in ("image", "video", "audio"):
        a = a.sum(axis=-3)
    for axis, cap in enumerate(MAX_BINS.get(a.ndim, ())):
        if a.shape[axis] > cap:
            edges = np.linspace(0, a.shape[axis], cap + 1).astype(int)[:-1]
            a = np.add.reduceat(a, edges, axis=axis)
    return a


def rounded(a: np.ndarray) -> Any:
    """A map as nested lists with 6 significant figures (JSON)."""
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale == 0.0:
        return np.zeros_like(a).tolist()
    digits = max(0, 6 - int(np.floor(np.log10(scale))) - 1)
    return np.round(a, digits).tolist()
