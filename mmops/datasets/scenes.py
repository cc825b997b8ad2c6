"""``surveillance-av``: a shop's camera and microphone after hours, COMPOSED from real recordings the way
URBAN-SED was composed with Scaper: real events placed at random offsets and levels over real backgrounds,
each label following from the placement.

- camera: 4 s windows of a real pedestrian surveillance scene (opencv-doc's ``vtest.avi``, 768x576 at
  10 fps, Apache-2.0/BSD-3), scaled to 160x120 and written as MP4 (MPEG-4 Part 2).
- microphone: real noise (alsa-utils' ``Noise.wav``, GPL-2) as the room, sometimes one of alsa-utils' 8
  real spoken phrases (one speaker), and for a break-in one of pygame's real impact sounds (``boom``,
  ``punch``, ``car_door``, ``whiff``; LGPL) at 10 to 20 dB over the room; WAV or FLAC at 16 kHz.

Classes: ``normal`` (the scene as filmed); ``tampering`` (the camera frozen on one frame of its window, or
its lens covered: dark and flat); ``break_in`` (an impact in the audio, the picture unchanged). The camera
alone cannot tell a break-in from a normal night, nor the microphone a tampered camera: the task needs both.
Voices occur in every class and tell nothing. About 8 % of records lack the microphone, whatever the class.
Pairings are synthetic: the sounds were not recorded in that scene.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mmops.datasets.landing import finish
from mmops.datasets.sources import debian_file, package_file

RATE, SECONDS, SOURCE_FPS = 16_000, 4.0, 10
SIZE = (160, 120)  # width, height of the written clips
CLASSES = ("normal", "tampering", "break_in")
VOICES = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left",
          "Side_Right")
IMPACTS = ("boom.wav", "punch.wav", "car_door.wav", "whiff.wav")
ALSA = "usr/share/sounds/alsa"


def load_sound(data: bytes) -> np.ndarray:
    """An audio file's samples, mono at the scenes' rate (float64)."""
    import soundfile as sf

    from mmops.modalities.audio.decode import resample

    x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), rate, RATE).astype(np.float64)


def sounds() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The real recordings scenes are made of: the room (alsa-utils' noise, looped to three clips' length),
    the 8 spoken phrases, the 4 impacts."""
    noise = load_sound(debian_file("alsa-utils", f"{ALSA}/Noise.wav").read_bytes())
    room = np.tile(noise, int(np.ceil(3 * RATE * SECONDS / len(noise))))
    voices = [load_sound(debian_file("alsa-utils", f"{ALSA}/{v}.wav").read_bytes()) for v in VOICES]
    impacts = [load_sound(package_file("pygame", f"pygame/examples/data/{e}").read_bytes()) for e in IMPACTS]
    return room, voices, impacts


def scene_frames() -> np.ndarray:
    """Every frame of the surveillance scene, scaled to the written size: (795, 120, 160, 3) uint8."""
    import av
    from PIL import Image

    path = debian_file("opencv-doc", "usr/share/doc/opencv-doc/examples/data/vtest.avi")
    with av.open(str(path)) as container:
        return np.stack([np.asarray(f.to_image().resize(SIZE, Image.Resampling.BILINEAR))
                         for f in container.decode(video=0)])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) or 1e-12


def room_clip(room: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A clip's length of the room at a random offset, at -40 to -30 dBFS."""
    n = int(RATE * SECONDS)
    start = int(rng.integers(0, len(room) - n))
    return room[start:start + n] * 10 ** (rng.uniform(-40, -30) / 20) / _rms(room)


def place(clip: np.ndarray, event: np.ndarray, ratio_db: float, rng: np.random.Generator) -> None:
    """Add `event` at a random offset, `ratio_db` over the clip's level (in place)."""
    event = event[: len(clip)]
    at = int(rng.integers(0, len(clip) - len(event) + 1))
    clip[at:at + len(event)] += event * (_rms(clip) * 10 ** (ratio_db / 20) / _rms(event))


def finished(clip: np.ndarray) -> np.ndarray:
    """float32, scaled down if needed so that no sample goes past 0.95."""
    return (clip / max(1.0, float(np.abs(clip).max()) / 0.95)).astype(np.float32)


def _audio(room: np.ndarray, label: str, voices: list[np.ndarray], impacts: list[np.ndarray],
           rng: np.random.Generator) -> np.ndarray:
    clip = room_clip(room, rng)
    if rng.random() < 0.5:
        place(clip, voices[int(rng.integers(len(voices)))], rng.uniform(5, 15), rng)
    if label == "break_in":
        place(clip, impacts[int(rng.integers(len(impacts)))], rng.uniform(10, 20), rng)
    return finished(clip)


def window(frames: np.ndarray, tampered: bool, rng: np.random.Generator) -> np.ndarray:
    """A clip's length of the scene at a random offset; tampered: frozen on one of its frames (a replayed
    still) or covered (a hand or a cloth over the lens: dark and flat), one or the other at random."""
    n = int(SOURCE_FPS * SECONDS)
    start = int(rng.integers(0, len(frames) - n))
    clip = frames[start:start + n].copy()
    if tampered and rng.random() < 0.5:
        clip[:] = clip[int(rng.integers(n))]
    elif tampered:
        clip = (clip * rng.uniform(0.05, 0.2) + rng.normal(6, 2, clip.shape)).clip(0, 255).astype(np.uint8)
    return clip


def write_surveillance_av(root: Path, seed: int, per_class: int = 40) -> dict[str, int]:
    return write_scenes(root, seed, [CLASSES[i % len(CLASSES)] for i in range(per_class * len(CLASSES))])


# ``watch-av`` (anomaly detection): mostly normal nights; known incidents only in validation and test
WATCH_SPLITS = {"train": {"normal": 50}, "val": {"normal": 25, "tampering": 4, "break_in": 4},
                "test": {"normal": 25, "tampering": 16, "break_in": 16}}


def write_watch_av(root: Path, seed: int) -> dict[str, int]:
    """The same scenes for a detector fitted on normal nights only: the training split holds normal records
    alone, the validation split its normals (for the threshold) and a few incidents, the test split the rest."""
    plan = [(split, label) for split, counts in WATCH_SPLITS.items() for label, n in counts.items()
            for _ in range(n)]
    order = np.random.default_rng(seed + 1).permutation(len(plan))  # classes interleaved in the file names
    plan = [plan[i] for i in order]
    return write_scenes(root, seed, [label for _, label in plan], [split for split, _ in plan])


def write_scenes(root: Path, seed: int, labels_in_order: list[str],
                 splits_in_order: list[str] | None = None) -> dict[str, int]:
    import soundfile as sf

    from mmops.modalities.video.decode import encode_clip

    rng = np.random.default_rng(seed)
    frames = scene_frames()
    room, voices, impacts = sounds()
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    splits: dict[str, str] = {}
    for i, label in enumerate(labels_in_order):
        key = f"av{i:03d}"
        labels[key] = label
        if splits_in_order is not None:
            splits[key] = splits_in_order[i]
        files[f"camera/{key}.mp4"] = encode_clip(window(frames, label == "tampering", rng), SOURCE_FPS)
        sound = _audio(room, label, voices, impacts, rng)
        if rng.random() >= 0.08:
            fmt = "FLAC" if i % 4 == 0 else "WAV"
            buf = io.BytesIO()
            sf.write(buf, sound, RATE, format=fmt, subtype="PCM_16")
            files[f"microphone/{key}.{fmt.lower()}"] = buf.getvalue()
    return finish(root, files, labels, splits or None)
