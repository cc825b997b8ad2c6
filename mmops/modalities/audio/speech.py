"""The share of a clip that is speech, by silero-vad (MIT): a pretrained voice-activity detector whose weights
ship inside its wheel, so it loads offline. Its sequence model runs a whole clip as one ONNX Runtime call (the
same per-window probabilities as its streaming TorchScript model, which loops over 32 ms windows in Python:
a 4 s clip in ~8 ms instead of ~45 ms on one thread). It keeps no state between calls, so threads share it. A
pack turns it on (`speech_detector: silero`) where speech matters."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

VAD_RATE = 16_000  # the detector runs at 8 or 16 kHz
_LOAD = threading.Lock()
_MODEL: Any = None


def _model() -> Any:
    global _MODEL
    with _LOAD:
        if _MODEL is None:
            from silero_vad import load_silero_vad

            _MODEL = load_silero_vad(sequence=True, sampling_rate=VAD_RATE)
    return _MODEL


def speech_share(samples: np.ndarray, rate: int) -> float:
    """The share of `samples` (mono, at `rate`) that the detector marks as speech."""
    from silero_vad.sequence_vad import get_speech_timestamps_sequence

    from mmops.modalities.audio.decode import resample

    if rate != VAD_RATE:
        samples = resample(samples, rate, VAD_RATE)
    if len(samples) < 512:  # shorter than one of the detector's windows
        return 0.0
    stamps = get_speech_timestamps_sequence(np.ascontiguousarray(samples, dtype=np.float32), _model(),
                                            sampling_rate=VAD_RATE)
    return float(sum(s["end"] - s["start"] for s in stamps) / len(samples))
