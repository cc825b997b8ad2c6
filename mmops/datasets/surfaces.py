"""``inspection-brick``: a camera over a wall on an inspection line, COMPOSED from real photographs the way
MVTec-AD-style sets compose synthetic defects: 64 x 64 crops of scikit-image's ``brick.png`` (a real brick
wall, BSD-3), and defects pasted into some of them: a square of real ``gravel.png`` (an ``inclusion``) or
of real ``grass.png`` (``growth``), 10 to 20 pixels, at a random place, level-matched to the crop. Each label
follows from the placement.

Splits follow the wall, so that no test pixel was seen in training or calibration: training crops come from
its left half; validation and test crops from alternate 128-row bands of its right half (validation: rows
0-128 and 256-384; test: 128-256 and 384-512), so that the threshold is calibrated on the conditions it is
tested on. (With validation from the top of the right half and test from the bottom, the bottom's normal
crops scored lower: 0 of 750 new ones flagged at a 5 % threshold; benchmarks/bench_calibration.py.) The
training split holds normal crops only; the defects are in validation (a few) and test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmops.datasets.landing import finish
from mmops.datasets.sources import package_file

SIDE = 64
DEFECTS = {"inclusion": "gravel.png", "growth": "grass.png"}
SPLITS = {"train": {"normal": 60}, "val": {"normal": 30, "inclusion": 3, "growth": 3},
          "test": {"normal": 30, "inclusion": 15, "growth": 15}}
Rect = tuple[tuple[int, int], tuple[int, int]]  # (rows, columns) of the wall
RIGHT = (256, 512)
PLACES: dict[str, list[Rect]] = {"train": [((0, 512), (0, 256))],
                                 "val": [((0, 128), RIGHT), ((256, 384), RIGHT)],
                                 "test": [((128, 256), RIGHT), ((384, 512), RIGHT)]}


def photo(name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(package_file("scikit-image", f"skimage/data/{name}")).convert("L"))


def crop(wall: np.ndarray, place: list[Rect], rng: np.random.Generator) -> np.ndarray:
    """A SIDE x SIDE crop wholly inside one of the place's rectangles (picked at random)."""
    (r0, r1), (c0, c1) = place[int(rng.integers(len(place)))]
    r, c = int(rng.integers(r0, r1 - SIDE + 1)), int(rng.integers(c0, c1 - SIDE + 1))
    return wall[r:r + SIDE, c:c + SIDE].copy()


def paste(img: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square of `source` (10 to 20 px, from a random place) pasted at a random place of `img`, shifted to
    the crop's mean level, so that brightness alone does not give it away."""
    side = int(rng.integers(10, 21))
    sr, sc = rng.integers(0, source.shape[0] - side, 2)
    square = source[sr:sr + side, sc:sc + side].astype(np.float64)
    square += img.mean() - square.mean()
    r, c = rng.integers(0, SIDE - side, 2)
    out = img.copy()
    out[r:r + side, c:c + side] = square.clip(0, 255).astype(np.uint8)
    return out


def write_inspection_brick(root: Path, seed: int) -> dict[str, int]:
    from mmops.modalities.image import png_bytes

    rng = np.random.default_rng(seed)
    wall = photo("brick.png")
    sources = {label: photo(name) for label, name in DEFECTS.items()}
    plan = [(split, label) for split, counts in SPLITS.items() for label, n in counts.items() for _ in range(n)]
    plan = [plan[i] for i in rng.permutation(len(plan))]  # classes interleaved in the file names
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    splits: dict[str, str] = {}
    for i, (split, label) in enumerate(plan):
        img = crop(wall, PLACES[split], rng)
        if label != "normal":
            img = paste(img, sources[label], rng)
        key = f"wall_{i:03d}"
        files[f"surface/{key}.png"] = png_bytes(img)
        labels[key], splits[key] = label, split
    return finish(root, files, labels, splits)
