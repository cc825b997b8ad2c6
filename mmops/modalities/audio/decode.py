"""Audio files to checked mono samples at the pack's rate, with their statistics.

soundfile (libsndfile, bundled in its wheel) reads WAV (PCM 8/16/24/32-bit, float, ADPCM), FLAC, OGG and
MP3. The header is read first: a file that claims more audio than the pack allows, no frames or an absurd
rate is refused before a sample is decoded. Several channels are averaged to one (the statistics say how
many there were); another rate is resampled with a polyphase filter (scipy's resample_poly).
"""

from __future__ import annotations

import io
import math
import struct
from typing import Any

import numpy as np

from mmops.errors import BadInputError

MIN_RATE, MAX_RATE = 1_000, 384_000  # what a real recording can have been sampled at
CLIP_LEVEL = 0.999  # |sample| at or above: pinned at full scale
SILENCE_DBFS = -50.0  # a 25 ms frame quieter than this is silence


def read_header(data: bytes) -> Any:
    """soundfile's view of the file's header (format, codec, rate, channels, frames)."""
    import soundfile as sf

    if not data:
        raise BadInputError("empty file")
    try:
        return sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise BadInputError(f"not a readable audio file ({_reason(exc)}): WAV, FLAC, OGG or MP3 expected") from None


def _reason(exc: Exception) -> str:
    text = str(exc).split(": ", 1)[-1].strip() or type(exc).__name__
    return text[0].lower() + text[1:] if text else text


def check_wav_header(data: bytes, max_seconds: float) -> None:
    """What a WAV's own chunks declare, checked before libsndfile reads it (it quietly trusts the file's size
    over the header): the rate, a length over the limit, and a file shorter than its header says (cut off in
    transfer). Streaming WAVs that declare no length (0 or 0xFFFFFFFF) are left to libsndfile."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos, byte_rate, align = 12, 0, 1
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and size >= 16 and pos + 24 <= len(data):
            _, _, rate, byte_rate, align, _ = struct.unpack("<HHIIHH", data[pos + 8:pos + 24])
            if not MIN_RATE <= rate <= MAX_RATE:
                raise BadInputError(f"WAV header gives a sample rate of {rate} Hz (a recording has {MIN_RATE} to "
                                    f"{MAX_RATE})")
        elif chunk == b"data" and byte_rate and size not in (0, 0xFFFFFFFF):
            if size / byte_rate > max_seconds:
                raise BadInputError(f"audio header claims {size / byte_rate:,.0f} s, over the limit of "
                                    f"{max_seconds:g} s")
            held = len(data) - pos - 8
            if size > held + max(align, 1):
                raise BadInputError(f"WAV file is cut off: its header claims {size / byte_rate:.2f} s, the file "
                                    f"holds {held / byte_rate:.2f} s")
            return
        pos += 8 + size + (size & 1)


def decode_samples(data: bytes, target_rate: int, max_seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """(mono float32 samples at `target_rate`, what the file was: rate, channels, duration, non-finite share)."""
    import soundfile as sf

    check_wav_header(data, max_seconds)
    info = read_header(data)
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadInputError(f"audio header gives a sample rate of {rate} Hz (a recording has {MIN_RATE} to "
                            f"{MAX_RATE})")
    if channels < 1:
        raise BadInputError("audio header gives no channels")
    if 0 < frames < (1 << 62) and frames / rate > max_seconds:
        raise BadInputError(f"audio header claims {frames / rate:,.0f} s, over the limit of {max_seconds:g} s")
    try:
        raw, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True, frames=int(max_seconds * rate) + 1)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"audio data cannot be decoded ({_reason(exc)}; codec {info.subtype_info or '?'})") \
            from None
    if raw.shape[0] == 0:
        raise BadInputError("audio file has no frames")
    if raw.shape[0] > max_seconds * rate:
        raise BadInputError(f"audio is longer than the limit of {max_seconds:g} s")
    finite = np.isfinite(raw)
    mono = np.where(finite, raw, 0.0).mean(axis=1).astype(np.float32)
    return resample(mono, rate, target_rate), {"source_rate_hz": float(rate), "channels": float(channels),
                                               "downmixed": float(channels > 1),
                                               "nonfinite_share": float(1.0 - finite.mean())}


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from `rate` to `target_rate`."""
    if rate == target_rate:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(rate, target_rate)
    return resample_poly(samples, target_rate // g, rate // g).astype(np.float32)


def audio_stats(samples: np.ndarray, rate: int) -> dict[str, float]:
    """Level, clipping, silence, DC offset and spectral centroid of mono samples."""
    x = samples.astype(np.float64)
    n = len(x)
    rms = math.sqrt(float(np.mean(x * x))) if n else 0.0
    frame = max(1, round(0.025 * rate))
    framed = x[: n - n % frame].reshape(-1, frame) if n >= frame else x.reshape(1, -1)
    frame_db = 10 * np.log10(np.maximum(np.mean(framed * framed, axis=1), 1e-12))
    spectrum = np.abs(np.fft.rfft(x[: min(n, 1 << 20)]))
    freqs = np.fft.rfftfreq(min(n, 1 << 20), 1.0 / rate)
    centroid = float((spectrum * freqs).sum() / spectrum.sum()) if spectrum.sum() > 0 else 0.0
    return {
        "sample_rate_hz": float(rate),
        "duration_s": n / rate,
        "rms_dbfs": 20 * math.log10(max(rms, 1e-6)),
        "peak": float(np.max(np.abs(x))) if n else 0.0,
        "clip_share": float(np.mean(np.abs(x) >= CLIP_LEVEL)) if n else 0.0,
        "silence_share": float(np.mean(frame_db < SILENCE_DBFS)),
        "dc_offset": float(np.mean(x)) if n else 0.0,
        "spectral_centroid_hz": centroid,
    }


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono float samples as a 16-bit PCM WAV file."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def suffix_of(data: bytes) -> str:
    """The file suffix of audio bytes, from their magic number."""
    if data[:4] == b"RIFF":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"OggS":
        return ".ogg"
    return ".mp3"
