"""Audio (speech, machine sound, alarms): WAV, FLAC, OGG or MP3 files, read with soundfile, mixed down to
mono and resampled to the pack's rate. The model reads a standardised log-mel spectrogram (64 bands, 25 ms
frames every 10 ms) of the first `clip_seconds`; shorter clips are padded and masked.

The kind is this folder: decoding and statistics (decode.py), the log-mel front end (features.py), the
default encoder (encoder.py), and here the spec and everything else the platform asks of a kind.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mmops.modalities.audio.decode import audio_stats, decode_samples, suffix_of, wav_bytes
from mmops.modalities.audio.features import N_MELS, log_mel_array, n_frames
from mmops.modalities.base import Decoded, Encoder, Expectation, ModalityKind, ModalitySpec, file_from_wire

MAX_AUDIO_B64_CHARS = 16 * 1024 * 1024  # an audio file in a request, base64


class AudioSpec(ModalitySpec):
    kind: Literal["audio"] = "audio"
    sample_rate_hz: int = Field(16_000, ge=1_000, le=192_000)  # what the model hears (others are resampled)
    clip_seconds: float = Field(4.0, gt=0)  # the most the model reads: longer clips are cut, shorter padded
    min_seconds: float = Field(0.1, gt=0)  # shorter recordings fail the gate
    max_seconds: float = Field(600.0, gt=0)  # longer files are refused (at ingest, from the header)
    n_mels: int = Field(N_MELS, ge=8, le=256)
    max_clip_share: float = Field(0.01, ge=0, le=1)  # samples at full scale: a level set too hot
    max_silence_share: float = Field(0.9, ge=0, le=1)  # 25 ms frames under -50 dBFS: a dead microphone
    # `silero`: the statistics get `speech_share` (silero-vad's pretrained detector; ~8 ms per 4 s clip)
    speech_detector: Literal["silero"] | None = None
    min_speech_share: float | None = Field(None, ge=0, le=1)  # recordings that must hold speech (the gate warns)
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")

    @model_validator(mode="after")
    def _durations(self) -> AudioSpec:
        if not self.min_seconds <= self.clip_seconds <= self.max_seconds:
            raise ValueError(f"{self.name}: needs min_seconds <= clip_seconds <= max_seconds")
        if self.min_speech_share is not None and self.speech_detector is None:
            raise ValueError(f"{self.name}: min_speech_share needs speech_detector: silero")
        return self

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate_hz)

    @property
    def frames(self) -> int:
        return n_frames(self.clip_samples, self.sample_rate_hz)


def decode_audio(data: bytes, spec: AudioSpec) -> Decoded:
    samples, source = decode_samples(data, spec.sample_rate_hz, spec.max_seconds)
    return Decoded(samples, {**clip_stats(samples, spec), **source})


def clip_stats(samples: np.ndarray, spec: AudioSpec) -> dict[str, float]:
    stats = audio_stats(samples, spec.sample_rate_hz)
    if spec.speech_detector == "silero":
        from mmops.modalities.audio.speech import speech_share

        stats["speech_share"] = speech_share(samples, spec.sample_rate_hz)
    return stats


def audio_tensor(samples: np.ndarray, spec: AudioSpec, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Samples -> (1, n_mels, frames) float32: log-mel standardised per band, padding zero."""
    mel = log_mel_array(samples[: spec.clip_samples], spec.sample_rate_hz, spec.n_mels)
    out = np.zeros((1, spec.n_mels, spec.frames), dtype=np.float32)
    out[0, :, : mel.shape[1]] = (mel - mean[:, None]) / std[:, None]
    return out


def shift_audio(b64: str, gain: float = 0.5, snr_db: float = 10.0, seed: int = 0, dull: bool = True) -> str:
    """Another microphone in a noisier place: a first-order low-pass (a duller frequency response: 15 dB
    down at the top of the band; `dull`), the level times `gain`, white noise at `snr_db` (base64 audio in,
    base64 WAV out)."""
    import soundfile as sf
    from scipy.signal import lfilter

    x, rate = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float64", always_2d=True)
    mono = x.mean(axis=1)
    y = (lfilter([0.3], [1.0, -0.7], mono) if dull else mono) * gain
    power = float(np.mean(y * y)) or 1e-12
    y = y + np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(y))
    return base64.b64encode(wav_bytes(y.astype(np.float32), rate)).decode("ascii")


class AudioKind(ModalityKind):
    name = "audio"
    nudge_says = "10 % quieter with hiss at 40 dB SNR"
    spec = AudioSpec

    def decode(self, data: bytes, spec: AudioSpec, phi_key: bytes | None = None) -> Decoded:
        return decode_audio(data, spec)

    def read(self, data: bytes, spec: AudioSpec) -> np.ndarray:
        return decode_samples(data, spec.sample_rate_hz, spec.max_seconds)[0]  # no speech detector run

    def stats(self, value: np.ndarray, spec: AudioSpec) -> dict[str, float]:
        return clip_stats(value, spec)

    def expectations(self, spec: AudioSpec) -> list[Expectation]:
        speech: list[Expectation] = [] if spec.min_speech_share is None else [
            ("ExpectColumnValuesToBeBetween", {"column": "speech_share", "min_value": spec.min_speech_share,
                                               "mostly": 0.9}, "warning")]
        return speech + [
            ("ExpectColumnValuesToBeBetween", {"column": "duration_s", "min_value": spec.min_seconds,
                                               "max_value": spec.max_seconds}, "critical"),
            ("ExpectColumnValuesToBeBetween", {"column": "sample_rate_hz", "min_value": spec.sample_rate_hz,
                                               "max_value": spec.sample_rate_hz}, "critical"),
            # NaN or inf samples (float WAV): a broken recorder or converter, not sound
            ("ExpectColumnValuesToBeBetween", {"column": "nonfinite_share", "max_value": 0.0}, "critical"),
            ("ExpectColumnValuesToBeBetween", {"column": "silence_share", "max_value": spec.max_silence_share,
                                               "mostly": 0.95}, "critical"),
            ("ExpectColumnValuesToBeBetween", {"column": "clip_share", "max_value": spec.max_clip_share,
                                               "mostly": 0.95}, "warning"),
            ("ExpectColumnValuesToBeBetween", {"column": "dc_offset", "min_value": -0.05, "max_value": 0.05,
                                               "mostly": 0.95}, "warning"),
            ("ExpectColumnValuesToBeUnique", {"column": "sha256", "mostly": 0.8}, "warning"),
        ]

    def fit(self, spec: AudioSpec, values: list[Any]) -> dict[str, Any] | None:
        mels = np.concatenate([log_mel_array(v[: spec.clip_samples], spec.sample_rate_hz, spec.n_mels)
                               for v in values], axis=1)
        return {"mean": mels.mean(axis=1).astype(float).tolist(),
                "std": np.maximum(mels.std(axis=1), 1e-3).astype(float).tolist()}

    def tensor(self, value: np.ndarray, spec: AudioSpec, fitted: Mapping[str, Any],
               options: Mapping[str, str]) -> np.ndarray:
        mean = np.asarray(fitted.get("mean", [-50.0] * spec.n_mels), dtype=np.float32)
        std = np.asarray(fitted.get("std", [20.0] * spec.n_mels), dtype=np.float32)
        return audio_tensor(value, spec, mean, std)

    def empty(self, spec: AudioSpec) -> np.ndarray:
        return np.zeros((1, spec.n_mels, spec.frames), dtype=np.float32)

    def length(self, value: np.ndarray, spec: AudioSpec) -> int | None:
        return n_frames(min(len(value), spec.clip_samples), spec.sample_rate_hz)

    def arch(self, params: Any) -> dict[str, Any]:
        return {"audio_encoder": "logmel_cnn"}

    def encoder(self, spec: AudioSpec, arch: Mapping[str, Any], pretrained: bool) -> Encoder:
        from mmops.modalities.audio.encoder import LogMelCNN

        return Encoder(LogMelCNN(), None, True)

    def wire_schema(self, spec: AudioSpec) -> dict[str, Any]:
        return {"type": "string", "format": "byte", "maxLength": MAX_AUDIO_B64_CHARS,
                "description": f"base64 of a WAV/FLAC/OGG/MP3 file of at most {spec.max_seconds:g} s (the model "
                               f"hears the first {spec.clip_seconds:g} s, mono at {spec.sample_rate_hz} Hz)"}

    def from_wire(self, raw: Any, spec: AudioSpec) -> np.ndarray:
        return self.read(file_from_wire(raw, MAX_AUDIO_B64_CHARS, "an audio file"), spec)

    def to_wire(self, data: bytes, value: np.ndarray, spec: AudioSpec) -> Any:
        return base64.b64encode(data).decode("ascii")  # the file's own bytes

    def to_file(self, value: Any, spec: AudioSpec) -> tuple[bytes, str]:
        data = base64.b64decode(value, validate=True)
        return data, suffix_of(data)

    def warnings(self, spec: AudioSpec, value: Any, raw: Any) -> list[str]:
        seconds = len(value) / spec.sample_rate_hz
        if seconds > spec.clip_seconds:
            return [f"{spec.name}: {seconds:.2f} s, the model hears the first {spec.clip_seconds:g} s"]
        return []

    shift_note = "audio through a duller microphone, half the level, noise at 10 dB SNR"

    def shift(self, raw: Any, spec: AudioSpec) -> Any:
        return shift_audio(raw)

    def nudge(self, raw: Any, spec: AudioSpec) -> Any:
        return shift_audio(raw, gain=0.9, snr_db=40.0, dull=False)  # a little quieter, a little hiss

    def labelstudio_tag(self, spec: AudioSpec) -> str:
        from xml.sax.saxutils import quoteattr

        return f'<Audio name={quoteattr(spec.name)} value="${spec.name}"/>'

    def labelstudio_value(self, spec: AudioSpec, value: Any) -> Any:
        return "data:audio/wav;base64," + base64.b64encode(wav_bytes(np.asarray(value), spec.sample_rate_hz)).decode()

    def labelstudio_placeholder(self, spec: AudioSpec) -> Any:
        return "data:audio/wav;base64," + base64.b64encode(wav_bytes(np.zeros(160, np.float32), 16_000)).decode()
