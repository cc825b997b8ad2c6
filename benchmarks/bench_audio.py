"""The audio front end's speed: log-mel spectrograms of real speech (alsa-utils' phrases, resampled to 16 kHz
and joined into 10 s clips) on one thread, as seconds of audio per second of compute, beside librosa on the
same clips in the same process. Target (issue 21): at least 1000x real time on one core.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_audio.py [--clips 200]`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmops.datasets import scenes
from mmops.modalities.audio.features import log_mel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

RATE, CLIP_S = scenes.RATE, 10.0


def clips(n: int) -> np.ndarray:
    """(n, 10 s) of real speech: the phrases end to end, each clip starting at another offset."""
    joined = np.concatenate(scenes.sounds()[1]).astype(np.float32)  # alsa-utils' 8 phrases at 16 kHz
    size = int(RATE * CLIP_S)
    joined = np.tile(joined, size * 2 // len(joined) + 2)
    offsets = np.random.default_rng(0).integers(0, len(joined) - size, n)
    return np.stack([joined[o:o + size] for o in offsets])


def timed(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch = clips(args.clips)
    audio_s = args.clips * CLIP_S
    one_by_one = timed(lambda: [log_mel(torch.from_numpy(c), RATE) for c in batch])
    batched = timed(lambda: log_mel(torch.from_numpy(batch), RATE))
    figures: dict[str, float | int | str] = {
        "clips": args.clips, "audio_seconds": audio_s,
        "x_real_time_one_by_one": round(audio_s / one_by_one, 1),
        "x_real_time_batched": round(audio_s / batched, 1)}
    try:
        import librosa

        def reference() -> None:
            for c in batch:
                librosa.power_to_db(librosa.feature.melspectrogram(
                    y=c, sr=RATE, n_fft=512, hop_length=160, win_length=400, center=True, pad_mode="constant",
                    n_mels=64, htk=True, norm="slaney"), top_db=None)

        reference()  # numba compiles on the first call
        figures["x_real_time_librosa"] = round(audio_s / timed(reference), 1)
        figures["vs_librosa_one_by_one"] = round(figures["x_real_time_one_by_one"] / figures["x_real_time_librosa"], 2)
    except ImportError:
        figures["x_real_time_librosa"] = "librosa not installed"
    verdicts = {"log-mel >= 1000x real time on one core (clip by clip)": figures["x_real_time_one_by_one"] >= 1000}
    print(figures, verdicts)
    save("audio", figures, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
