"""Self-supervised pretraining of a sensor or audio encoder on unlabeled data (SimCLR-style: two random
augmentations of each input should embed closer to each other than to any other input; InfoNCE loss), saved as
a safetensors
backbone that any domain's training can start from (``train.init_weights``) and fine-tune with
freeze-then-unfreeze and a lower backbone learning rate.

Sources (offline):
- ``daphnet``: aeon's Daphnet S06R02E0 recording, body-worn 3-axis accelerometers at the ankle, thigh and
  trunk of a Parkinson's patient walking (64 Hz, 110 s; its labels are not used). Each sensor location's
  (x, y, z) becomes windows, resampled to the target rate and length.
- ``<domain>``: the domain's own ingested records of one sensor or audio modality, labels ignored (the
  unlabeled pool). Audio has no other offline source: no package ships general audio-event recordings.
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


def domain_values(domain: str, modality: str) -> tuple[Any, list[Any]]:
    """The domain's ingested records of one modality (labels ignored: the unlabeled pool), read the way
    training reads them, with the modality's spec."""
    from sqlalchemy import select

    from mmops.catalog import SampleFile, session_scope
    from mmops.config import get_settings
    from mmops.domains import load_domain
    from mmops.modalities import read_value

    spec = load_domain(domain).modality(modality)
    settings = get_settings()
    with session_scope(settings.catalog_url) as session:
        blobs = list(session.scalars(select(SampleFile.blob_path).where(
            SampleFile.domain == domain, SampleFile.modality == modality, SampleFile.status == "ok",
            SampleFile.duplicate_of.is_(None))))
    values = [read_value(read_blob(settings.data_dir, b), spec) for b in blobs if b is not None]
    if not values:
        raise NotFoundError(f"no ingested {domain}.{modality} records; run `mmops ingest --domain {domain}`")
    return spec, values


def domain_windows(domain: str, modality: str) -> tuple[np.ndarray, int, float]:
    """The domain's ingested records of one sensor modality (labels ignored), as (n, channels, length)."""
    from mmops.modalities.sensor import SensorSpec

    spec, values = domain_values(domain, modality)
    if not isinstance(spec, SensorSpec):
        raise ConfigError(f"{domain}.{modality} is not a sensor modality")
    out = []
    for v in values:
        x = v[: spec.length]
        pad = np.zeros((spec.length, len(spec.channels)), dtype=np.float32)
        pad[: len(x)] = x
        out.append(pad.T)
    return np.stack(out), len(spec.channels), spec.sample_rate_hz


def _augment(x: Any, gen: Any, lengths: Any = None) -> Any:
    """Windows (N, C, L): random per-channel scaling, jitter, a random time shift and a masked segment."""
    import torch

    n, c, length = x.shape
    x = x * (1 + 0.2 * torch.randn(n, c, 1, generator=gen))
    x = x + 0.1 * torch.randn(x.shape, generator=gen)
    shift = int(torch.randint(-length // 8, length // 8 + 1, (1,), generator=gen))
    x = torch.roll(x, shift, dims=2)
    start = int(torch.randint(0, length - length // 10, (1,), generator=gen))
    x[:, :, start : start + length // 10] = 0
    return x


def _augment_logmel(x: Any, gen: Any, lengths: Any) -> Any:
    """Standardised log-mel spectrograms (N, 1, mels, frames), SpecAugment-style: a random level (an offset
    in dB, per clip), a random circular shift within each clip's real frames, one band of mels and one
    stretch of frames masked, a little noise; the padding stays zero."""
    import torch

    n, _, mels, frames = x.shape
    x = x + 0.3 * torch.randn(n, 1, 1, 1, generator=gen)
    out = torch.zeros_like(x)
    for i in range(n):
        t = int(lengths[i])
        shift = int(torch.randint(0, max(t, 1), (1,), generator=gen))
        out[i, :, :, :t] = torch.roll(x[i, :, :, :t], shift, dims=2)
        f0 = int(torch.randint(0, mels - mels // 8, (1,), generator=gen))
        out[i, :, f0 : f0 + mels // 8] = 0
        width = max(1, t // 8)
        t0 = int(torch.randint(0, max(t - width, 1), (1,), generator=gen))
        out[i, :, :, t0 : t0 + width] = 0
    valid = (torch.arange(frames).unsqueeze(0) < lengths.unsqueeze(1))[:, None, None, :]
    return (out + 0.1 * torch.randn(out.shape, generator=gen)) * valid


def contrastive(backbone: Any, data: Any, lengths: Any, augment: Any, out: Path, epochs: int, batch_size: int,
                lr: float, seed: int, temperature: float, about: dict[str, Any]) -> dict[str, Any]:
    """SimCLR: two augmentations of each input, embedded by the backbone and a projection head, matched by
    InfoNCE against the rest of the batch. Saves the backbone (safetensors) and a JSON summary beside it."""
    import torch
    from safetensors.torch import save_file

    from mmops.models import info_nce
    from mmops.training import seed_everything

    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Linear(backbone.out_dim, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(head.parameters()), lr=lr, weight_decay=1e-4)

    def embed(x: Any, ln: Any) -> Any:
        return torch.nn.functional.normalize(head(backbone(x) if ln is None else backbone(x, ln)), dim=1)

    started, losses = time.perf_counter(), []
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(0, len(order) - 1, batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            x, ln = data[idx], None if lengths is None else lengths[idx]
            loss = info_nce(embed(augment(x, gen, ln), ln), embed(augment(x, gen, ln), ln), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(out))
    summary = {"weights": str(out), **about, "epochs": epochs,
               "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
               "chance_loss": round(float(np.log(min(batch_size, len(data)))), 4),
               "seconds": round(time.perf_counter() - started, 1)}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def pretrain_sensor(windows: np.ndarray, arch: str, out: Path, epochs: int = 40, batch_size: int = 64,
                    lr: float = 1e-3, seed: int = 42, temperature: float = 0.2,
                    source: str = "") -> dict[str, Any]:
    """A sensor encoder (`arch`) on (n, channels, length) windows, standardised per channel."""
    import torch

    from mmops.models.sensor import SensorBackbone

    mean = windows.mean(axis=(0, 2), keepdims=True)
    std = np.maximum(windows.std(axis=(0, 2), keepdims=True), 1e-6)
    data = torch.from_numpy(((windows - mean) / std).astype(np.float32))
    torch.manual_seed(seed)
    about = {"source": source, "arch": arch, "windows": int(len(data)), "channels": int(data.shape[1]),
             "length": int(data.shape[2])}
    return contrastive(SensorBackbone(data.shape[1], arch), data, None, _augment, out, epochs, batch_size, lr,
                       seed, temperature, about)


def pretrain_audio(clips: list[np.ndarray], spec: Any, out: Path, epochs: int = 40, batch_size: int = 32,
                   lr: float = 1e-3, seed: int = 42, temperature: float = 0.2, source: str = "") -> dict[str, Any]:
    """The audio kind's log-mel CNN on mono clips at the spec's rate, each read as training reads it (the
    first clip_seconds, log-mel standardised per band over these clips, padding masked)."""
    import torch

    from mmops.modalities.audio import AudioKind
    from mmops.modalities.audio.encoder import LogMelCNN

    kind = AudioKind()
    fitted = kind.fit(spec, clips)
    assert fitted is not None
    data = torch.from_numpy(np.stack([kind.tensor(c, spec, fitted, {}) for c in clips]))
    lengths = torch.tensor([kind.length(c, spec) for c in clips], dtype=torch.long)
    torch.manual_seed(seed)
    about = {"source": source, "arch": "logmel_cnn", "clips": len(clips), "mels": spec.n_mels,
             "frames": spec.frames, "seconds_of_audio": round(sum(len(c) for c in clips) / spec.sample_rate_hz, 1)}
    return contrastive(LogMelCNN(), data, lengths, _augment_logmel, out, epochs, batch_size, lr, seed,
                       temperature, about)


def pretrain(source: str, domain: str, modality: str, arch: str, out: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Pretrain for a target `domain.modality`: a sensor's rate and length shape the windows; an audio
    modality's spec shapes its log-mel input (`arch` is then the log-mel CNN's)."""
    from mmops.domains import load_domain
    from mmops.modalities.audio import AudioSpec
    from mmops.modalities.sensor import SensorSpec

    spec = load_domain(domain).modality(modality)
    if isinstance(spec, AudioSpec):
        if source == "daphnet":
            raise ConfigError(f"{domain}.{modality} is audio: pretrain it on a domain's own clips (--source <domain>)")
        src_spec, clips = domain_values(source, modality)
        if not isinstance(src_spec, AudioSpec):
            raise ConfigError(f"{source}.{modality} is not an audio modality")
        return pretrain_audio(clips, spec, out, epochs=epochs, seed=seed, source=source)
    if not isinstance(spec, SensorSpec):
        raise ConfigError(f"{domain}.{modality} is a {spec.kind} modality: pretraining is for sensor and audio "
                          "ones (images and text start from ImageNet and MiniLM weights)")
    if source == "daphnet":
        if len(spec.channels) != 3:
            raise ConfigError(f"daphnet windows are 3-axis; {domain}.{modality} has {len(spec.channels)} channels")
        windows = daphnet_windows(spec.sample_rate_hz, spec.length, max(1, spec.length // 10))
    else:
        windows, _, _ = domain_windows(source, modality)
    return pretrain_sensor(windows, arch, out, epochs=epochs, seed=seed, source=source)
