"""The standard audio front end in plain torch: 25 ms Hann frames every 10 ms, a power spectrum, an HTK mel
filterbank with Slaney area normalisation, 10*log10, and for MFCCs an orthonormal DCT-II.

Frames are centred with zero padding (librosa's default; torch.stft's own default pads by reflection, which
moves the edge frames by up to 11 dB). With the same settings librosa 0.11 gives the same numbers to about
3e-5 dB (tests/unit/test_audio.py compares them). torchaudio is not used: no release matches torch 2.13.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

FRAME_S, HOP_S = 0.025, 0.010
N_MELS, N_MFCC = 64, 13
POWER_FLOOR = 1e-10  # -100 dB: digital silence stays finite


def frame_sizes(sample_rate: int) -> tuple[int, int, int]:
    """(n_fft, window, hop) in samples: a 25 ms window, a 10 ms hop, the FFT the next power of two."""
    win, hop = round(FRAME_S * sample_rate), round(HOP_S * sample_rate)
    return 1 << max(win - 1, 1).bit_length(), win, hop


def n_frames(n_samples: int, sample_rate: int) -> int:
    """Frames of a centred STFT over `n_samples`."""
    return 1 + n_samples // frame_sizes(sample_rate)[2]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) triangular HTK-mel filters from 0 Hz to Nyquist, each scaled to unit area
    (Slaney's normalisation: 2 / bandwidth)."""
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def dct_matrix(n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mfcc, n_mels) orthonormal DCT-II."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis


def power_spectrogram(samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(..., n_samples) -> (..., n_fft//2 + 1, frames) power."""
    import torch

    n_fft, win, hop = frame_sizes(sample_rate)
    window = torch.hann_window(win, periodic=True, dtype=samples.dtype, device=samples.device)
    spec = torch.stft(samples, n_fft, hop_length=hop, win_length=win, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    return spec.real.square() + spec.imag.square()


def log_mel(samples: torch.Tensor, sample_rate: int, n_mels: int = N_MELS) -> torch.Tensor:
    """(..., n_samples) float -> (..., n_mels, frames) log-mel power in dB."""
    import torch

    power = power_spectrogram(samples, sample_rate)
    bank = _bank(sample_rate, n_mels).to(dtype=power.dtype, device=power.device)
    return 10.0 * torch.log10(torch.clamp(bank @ power, min=POWER_FLOOR))


def mfcc(samples: torch.Tensor, sample_rate: int, n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> torch.Tensor:
    """(..., n_samples) -> (..., n_mfcc, frames)."""
    import torch

    mel = log_mel(samples, sample_rate, n_mels)
    return torch.from_numpy(dct_matrix(n_mfcc, n_mels)).to(dtype=mel.dtype, device=mel.device) @ mel


@functools.lru_cache(maxsize=16)
def _bank(sample_rate: int, n_mels: int) -> torch.Tensor:
    import torch

    return torch.from_numpy(mel_filterbank(sample_rate, frame_sizes(sample_rate)[0], n_mels))


def log_mel_array(samples: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """numpy in, numpy out (float32), for ingest statistics and tensors."""
    import torch

    with torch.no_grad():
        return log_mel(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), sample_rate,
                       n_mels).numpy()
