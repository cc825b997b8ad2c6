"""Self-supervised pretraining of a sensor encoder on unlabeled data (SimCLR-style: two random augmentations of
each window should embed closer to each other than to any other window; InfoNCE loss), saved as a safetensors
backbone that any domain's training can start from (``train.init_weights``) and fine-tune with
freeze-then-unfreeze and a lower backbone learning rate.

Sources (offline):
- ``daphnet``: aeon's Daphnet S06R02E0 recording, body-worn 3-axis accelerometers at the ankle, thigh and
  trunk of a Parkinson's patient walking (64 Hz, 110 s; its labels are not used). Each sensor location's
  (x, y, z) becomes windows, resampled to the target rate and length.
- ``<domain>``: the domain's own ingested records of one sensor modality, labels ignored (the unlabeled pool).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmops.blobs import read_blob
from mmops.errors import ConfigError, NotFoundError

log = logging.getLogger(__name__)

DAPHNET_RATE_HZ = 64.0
DAPHNET_AXES = {"ankle": ("ankle_horiz_fwd", "ankle_vert", "ankle_horiz_lateral"),
                "leg": ("leg_horiz_fwd", "leg_vert", "leg_horiz_lateral"),
                "trunk": ("trunk_horiz_fwd", "trunk_vert", "trunk_horiz_lateral")}


def daphnet_windows(rate_hz: float, length: int, stride: int) -> np.ndarray:
    """(n, 3, length) windows from every sensor location of the Daphnet recording, resampled to rate_hz."""
    from importlib import resources

    import pandas as pd
    from scipy.signal import resample_poly

    path = Path(str(resources.files("aeon.datasets") / "data" / "Daphnet_S06R02E0" / "S06R02E0.csv"))
    if not path.is_file():
        raise NotFoundError("the daphnet source needs aeon 1.6 (its bundled Daphnet_S06R02E0 recording)")
    frame = pd.read_csv(path)
    from fractions import Fraction

    ratio = Fraction(rate_hz / DAPHNET_RATE_HZ).limit_denominator(100)
    out = []
    for axes in DAPHNET_AXES.values():
        x = resample_poly(frame[list(axes)].to_numpy(dtype=np.float64), ratio.numerator, ratio.denominator, axis=0)
        for start in range(0, len(x) - length + 1, stride):
            out.append(x[start : start + length].T)
    if not out:
        raise ConfigError(f"the recording is shorter than one window of {length} samples at {rate_hz} Hz")
    return np.stack(out).astype(np.float32)


def domain_windows(domain: str, modality: str) -> tuple[np.ndarray, int, float]:
    """The domain's ingested records of one sensor modality (labels ignored), as (n, channels, length)."""
    from sqlalchemy import select

    from mmops.catalog import SampleFile, session_scope
    from mmops.config import get_settings
    from mmops.domains import load_domain
    from mmops.modalities import read_value
    from mmops.modalities.sensor import SensorSpec

    pack = load_domain(domain)
    spec = pack.modality(modality)
    if not isinstance(spec, SensorSpec):
        raise ConfigError(f"{domain}.{modality} is not a sensor modality")
    settings = get_settings()
    with session_scope(settings.catalog_url) as session:
        blobs = list(session.scalars(select(SampleFile.blob_path).where(
            SampleFile.modality == modality, SampleFile.status == "ok", SampleFile.duplicate_of.is_(None))))
    out = []
    for blob in blobs:
        if blob is None:
            continue
        x = read_value(read_blob(settings.data_dir, blob), spec)[: spec.length]
        pad = np.zeros((spec.length, len(spec.channels)), dtype=np.float32)
        pad[: len(x)] = x
        out.append(pad.T)
    if not out:
        raise NotFoundError(f"no ingested {domain}.{modality} records; run `mmops ingest --domain {domain}`")
    return np.stack(out), len(spec.channels), spec.sample_rate_hz


def _augment(x: Any, gen: Any) -> Any:
    """Random per-channel scaling, jitter, a random time shift and a masked segment."""
    import torch

    n, c, length = x.shape
    x = x * (1 + 0.2 * torch.randn(n, c, 1, generator=gen))
    x = x + 0.1 * torch.randn(x.shape, generator=gen)
    shift = int(torch.randint(-length // 8, length // 8 + 1, (1,), generator=gen))
    x = torch.roll(x, shift, dims=2)
    start = int(torch.randint(0, length - length // 10, (1,), generator=gen))
    x[:, :, start : start + length // 10] = 0
    return x


def pretrain_sensor(windows: np.ndarray, arch: str, out: Path, epochs: int = 40, batch_size: int = 64,
                    lr: float = 1e-3, seed: int = 42, temperature: float = 0.2,
                    source: str = "") -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from mmops.models import info_nce
    from mmops.models.sensor import SensorBackbone
    from mmops.training import seed_everything

    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    mean = windows.mean(axis=(0, 2), keepdims=True)
    std = np.maximum(windows.std(axis=(0, 2), keepdims=True), 1e-6)
    data = torch.from_numpy(((windows - mean) / std).astype(np.float32))
    backbone = SensorBackbone(data.shape[1], arch)
    head = torch.nn.Sequential(torch.nn.Linear(backbone.out_dim, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    started, losses = time.perf_counter(), []
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(0, len(order) - 1, batch_size):
            x = data[order[i : i + batch_size]]
            if len(x) < 2:
                continue
            z1 = torch.nn.functional.normalize(head(backbone(_augment(x, gen))), dim=1)
            z2 = torch.nn.functional.normalize(head(backbone(_augment(x, gen))), dim=1)
            loss = info_nce(z1, z2, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
        losses.append(total / len(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(out))
    summary = {"weights": str(out), "source": source, "arch": arch, "windows": int(len(data)),
               "channels": int(data.shape[1]), "length": int(data.shape[2]), "epochs": epochs,
               "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
               "chance_loss": round(float(np.log(min(batch_size, len(data)))), 4),
               "seconds": round(time.perf_counter() - started, 1)}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def pretrain(source: str, domain: str, modality: str, arch: str, out: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Pretrain for a target `domain.modality` (its rate and length shape the windows)."""
    from mmops.domains import load_domain
    from mmops.modalities.sensor import SensorSpec

    spec = load_domain(domain).modality(modality)
    if not isinstance(spec, SensorSpec):
        raise ConfigError(f"{domain}.{modality} is not a sensor modality")
    if source == "daphnet":
        if len(spec.channels) != 3:
            raise ConfigError(f"daphnet windows are 3-axis; {domain}.{modality} has {len(spec.channels)} channels")
        windows = daphnet_windows(spec.sample_rate_hz, spec.length, max(1, spec.length // 10))
    else:
        windows, _, _ = domain_windows(source, modality)
    return pretrain_sensor(windows, arch, out, epochs=epochs, seed=seed, source=source)
