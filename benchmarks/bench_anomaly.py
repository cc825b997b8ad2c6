"""The anomaly memory bank's scoring speed with and without coreset subsampling, at the AUROC each reaches,
on two real data sets, in the same process.

- ECG (sktime's mitdb.csv, MIT-BIH, one annotated anomalous stretch): a bank of every 1 s window of the
  first 11 s (all normal) at every offset; scored: 2 s records of the rest every 15 samples, each as its 1 s
  windows every 4 samples (as the cardiac domain's model scores them), anomalous when a record holds at
  least half of the annotated stretch.
- Texture (scikit-image's brick.png, BSD-3; COMPOSED defects): 64 x 64 crops of the real brick wall; the
  bank holds PatchCore patch features (mmops/tasks/anomaly/features.py) of 60 crops of its left half; scored:
  40 crops of its right half, 20 of them with a 12 x 12 square of real gravel (gravel.png) pasted at a
  random place, as MVTec-style defects are simulated. The defects are composed and labeled by placement.

Scoring (the nearest-neighbour search over the bank, on precomputed features) is timed for the full bank
and for k-center coresets of 20 % and 10 % of it. Target (issue 22): a coreset at least 5x faster at an
AUROC within 0.01 of the full bank's.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_anomaly.py [--repeat 5]`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mmops.datasets.sources import package_file
from mmops.tasks.anomaly.features import ImagePatches
from mmops.tasks.anomaly.memory_bank import MemoryBank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

RATIOS = (1.0, 0.2, 0.1)


def ecg() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    from mmops.tasks.anomaly.features import sensor_windows

    raw = np.loadtxt(package_file("sktime", "sktime/datasets/data/mitdb/mitdb.csv"), delimiter=",", skiprows=1)
    signal, anomalous = raw[:, 0].astype(np.float32), raw[:, 1].astype(bool)
    record, win, split = 720, 360, 4000
    bank = sensor_windows(signal[None, :split], split, win, 1)  # every 1 s window at every offset
    starts = np.arange(split, len(signal) - record + 1, 15)
    held = np.array([anomalous[s:s + record].sum() for s in starts])
    keep = (held == 0) | (held >= anomalous.sum() / 2)
    records = [sensor_windows(signal[None, s:s + record], record, win, 4) for s in starts[keep]]
    return bank, records, held[keep] > 0


def texture() -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    from PIL import Image

    brick = np.asarray(Image.open(package_file("scikit-image", "skimage/data/brick.png")), np.float32) / 255
    gravel = np.asarray(Image.open(package_file("scikit-image", "skimage/data/gravel.png")), np.float32) / 255
    rng = np.random.default_rng(0)
    half = brick.shape[1] // 2

    def crops(x0: int, x1: int, n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            r, c = rng.integers(0, brick.shape[0] - 64), rng.integers(x0, x1 - 64)
            out.append(brick[r:r + 64, c:c + 64].copy())
        return out

    normal = crops(0, half, 60)
    test = crops(half, brick.shape[1], 40)
    y = np.arange(40) % 2 == 1
    for img in (t for t, bad in zip(test, y, strict=True) if bad):
        r, c = rng.integers(0, 52, 2)
        gr, gc = rng.integers(0, gravel.shape[0] - 12, 2)
        img[r:r + 12, c:c + 12] = gravel[gr:gr + 12, gc:gc + 12]
    patches = ImagePatches(128)
    bank_feats = patches(np.stack(normal)[:, None])
    test_feats = patches(np.stack(test)[:, None])
    return bank_feats.reshape(-1, bank_feats.shape[-1]), list(test_feats), y


def measure(name: str, bank: np.ndarray, records: list[np.ndarray], y: np.ndarray, repeat: int) -> list[dict]:
    rows = []
    for ratio in RATIOS:
        start = time.perf_counter()
        mb = MemoryBank.fit(bank, coreset=ratio)
        fit_s = time.perf_counter() - start
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            scores = mb.score(records)
            times.append(time.perf_counter() - start)
        rows.append({"data": name, "coreset": ratio, "bank_vectors": len(mb.bank), "fit_s": round(fit_s, 3),
                     "score_s": round(statistics.median(times), 4), "auroc": round(float(roc_auc_score(y, scores)), 4),
                     "records": len(records), "anomalous": int(y.sum())})
    full = rows[0]
    for r in rows:
        r["speedup"] = round(full["score_s"] / r["score_s"], 2)
        r["auroc_drop"] = round(full["auroc"] - r["auroc"], 4)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = measure("ECG (MIT-BIH)", *ecg(), args.repeat) + measure("texture (brick, composed defects)",
                                                                      *texture(), args.repeat)
    for r in runs:
        print(json.dumps(r))
    verdicts = {f"{data}: a coreset >= 5x faster at an AUROC within 0.01": any(
        r["speedup"] >= 5 and abs(r["auroc_drop"]) <= 0.01 for r in runs if r["data"] == data and r["coreset"] < 1)
        for data in dict.fromkeys(r["data"] for r in runs)}
    print(json.dumps(verdicts, indent=2))
    save("anomaly", {"runs": runs, "threads": 1}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
