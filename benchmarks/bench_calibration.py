"""Does a detector's calibrated threshold flag the share of new normal records it was set to? The realized
false-positive rate of the shipped detectors, measured on enough normal records to tell.

The bundled anomaly packs hold 25 to 34 test normals, where one false alarm moves the rate by 3 to 4
points: a perfectly calibrated threshold lands within 2 points of a 0.05 target only when exactly 2 of 34
are flagged. This benchmark scores hundreds of held-out normal records of the same sources with the product's
own model (AnomalyModel: features, memory bank, Calibration at params.yaml's train.anomaly.fpr) and counts.

- texture: the inspection pack's geometry (mmops/datasets/surfaces.py: 64 x 64 crops of scikit-image's real
  brick.png, BSD-3): the bank from crops of the wall's left half, as the pack's training split; then, per
  repeat, fresh normal crops. No defects are needed: only normal records measure a false-positive rate.
- ECG: the cardiac pack's record (sktime's mitdb.csv, MIT-BIH): the bank from the 2 s records of the first
  8.3 s, as the pack's training split; the normal 2 s records of 8.3-21 s every 15 samples (overlapping:
  neighbours are far from independent, so the counts look larger than they are).

Two protocols, the same detector:
- texture: as the pack splits the wall now (calibrate on the validation bands of its right half, count on the
  test bands between them: 128-row bands, no pixel shared), and as it did before (calibrate on the top of
  the right half, count on its bottom);
- ECG: split by time, as the pack splits it (calibrate on 8.3-13 s, count on 13-21 s), and interleaved: the
  records starting in even against odd seconds of 8.3-21 s, each way round (records are 2 s long:
  neighbours across a boundary overlap).
A threshold calibrated on n normals flags new normals at (a + 1) / (n + 1) on average, a the calibration
normals allowed above it (calibration.allowed_above: the largest a with that rate <= fpr); the range given is the 95 % range of the pooled count for such a threshold (the threshold's own sampling error and the
count's, simulated), so a realized rate outside it means the threshold does not hold.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_calibration.py [--repeats 5 --crops 150]`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmops.context import Context
from mmops.modalities import read_value
from mmops.tasks.anomaly.calibration import Calibration, allowed_above, expected_fpr
from mmops.tasks.anomaly.model import AnomalyModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

TOLERANCE = 0.02  # issue 22: the realized rate within 2 points of the target
TEXTURE, ECG = "texture (inspection's brick wall)", "ECG (cardiac's MIT-BIH record)"


def texture(repeats: int, crops: int) -> tuple[AnomalyModel, list[dict[str, np.ndarray]]]:
    """The inspection detector fitted as the pack fits it, and per repeat the scores of `crops` fresh normal
    crops of each place: the pack's validation and test bands, the top and the bottom of the right half."""
    from mmops.datasets.surfaces import PLACES, RIGHT, SPLITS, crop, photo
    from mmops.modalities.image import png_bytes

    ctx = Context.resolve("inspection")
    spec = ctx.pack.modality("surface")
    wall = photo("brick.png")

    def records(place: list, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"surface": read_value(png_bytes(crop(wall, place, rng)), spec)} for _ in range(n)]

    model = AnomalyModel.fit(ctx.pack, records(PLACES["train"], SPLITS["train"]["normal"], np.random.default_rng(0)),
                             ctx.params.train.anomaly, ctx.params.seed)
    places = {"val": PLACES["val"], "test": PLACES["test"], "top": [((0, 256), RIGHT)],
              "bottom": [((256, 512), RIGHT)]}
    return model, [{k: _scores(model, records(v, crops, np.random.default_rng(1000 + 10 * r + i)))
                    for i, (k, v) in enumerate(places.items())} for r in range(repeats)]


def ecg() -> tuple[AnomalyModel, list[dict[str, np.ndarray]]]:
    """The cardiac detector fitted on the pack's training records; the scores of the normal records of its
    calibration (val) and test regions every 15 samples, and of those starting in even (a) and odd (b)
    seconds of 8.3-21 s."""
    from mmops.datasets.packs import ECG_RATE, ECG_RECORD, ECG_STEP
    from mmops.datasets.sources import package_file
    from mmops.modalities.sensor import sensor_csv_bytes

    ctx = Context.resolve("cardiac")
    spec = ctx.pack.modality("ecg")
    raw = np.loadtxt(package_file("sktime", "sktime/datasets/data/mitdb/mitdb.csv"), delimiter=",", skiprows=1)
    signal, anomalous = raw[:, :1], raw[:, 1].astype(bool)

    def starts(lo: int, hi: int, step: int) -> list[int]:
        return [s for s in range(lo, hi - ECG_RECORD + 1, step) if not anomalous[s:s + ECG_RECORD].any()]

    def records(picked: list[int]) -> list[dict[str, Any]]:  # as the pack lands them and ingest decodes them
        return [{"ecg": read_value(sensor_csv_bytes(signal[s:s + ECG_RECORD], ["mlii"], ECG_RATE), spec)}
                for s in picked]

    def scores(picked: list[int]) -> np.ndarray:
        return _scores(model, records(picked))

    model = AnomalyModel.fit(ctx.pack, records(starts(0, 3000, ECG_STEP)), ctx.params.train.anomaly,
                             ctx.params.seed)
    held = starts(3000, len(raw), 15)
    second = int(ECG_RATE)
    return model, [{"val": scores(starts(3000, 4700, 15)), "test": scores(starts(4700, len(raw), 15)),
                    "a": scores([s for s in held if s // second % 2 == 0]),
                    "b": scores([s for s in held if s // second % 2 == 1])}]


def _scores(model: AnomalyModel, records: list[dict[str, Any]]) -> np.ndarray:
    """Per record, its score per view (rows: records; columns: the model's banks in order)."""
    per = model.modality_scores(records)
    return np.stack([per[k] for k in model.banks], axis=1)


def _flagged(model: AnomalyModel, calibrate: np.ndarray, count: np.ndarray, fpr: float) -> int:
    views = list(model.banks)
    cal = Calibration.fit({k: calibrate[:, i] for i, k in enumerate(views)}, fpr)
    return int(cal.decide({k: count[:, i] for i, k in enumerate(views)})[1].sum())


def calibrated_range(n_cal: list[int], n_count: list[int], fpr: float, draws: int = 20000) -> tuple[float, float]:
    """The 95 % range of the pooled flagged share of calibrated thresholds (one per pair): each threshold's
    true rate is Beta(a + 1, n - a) (a = allowed_above(n, fpr)), its count binomial."""
    rng = np.random.default_rng(0)
    total = np.zeros(draws)
    for n, m in zip(n_cal, n_count, strict=True):
        a = allowed_above(n, fpr)
        total += rng.binomial(m, rng.beta(a + 1, n - a, draws))
    lo, hi = np.percentile(total / sum(n_count), [2.5, 97.5])
    return float(lo), float(hi)


def protocol(name: str, data: str, model: AnomalyModel, pairs: list[tuple[np.ndarray, np.ndarray]],
             fpr: float) -> dict[str, Any]:
    flagged = sum(_flagged(model, cal, count, fpr) for cal, count in pairs)
    n_cal, n_count = [len(c) for c, _ in pairs], [len(c) for _, c in pairs]
    lo, hi = calibrated_range(n_cal, n_count, fpr)
    rate = flagged / sum(n_count)
    expected = float(np.mean([expected_fpr(n, fpr) for n in n_cal]))
    return {"data": data, "protocol": name, "target": fpr, "calibration_normals": n_cal[0],
            "counted_normals": sum(n_count), "thresholds": len(pairs), "flagged": flagged, "fpr": round(rate, 4),
            "expected": round(expected, 4), "calibrated_95": [round(lo, 4), round(hi, 4)],
            "off_target": round(rate - fpr, 4), "holds": bool(lo <= rate <= hi)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="texture: fresh crops this many times")
    parser.add_argument("--crops", type=int, default=150, help="texture: normal crops per region per repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fpr = Context.resolve("inspection").params.train.anomaly.fpr
    texture_model, crops = texture(args.repeats, args.crops)
    ecg_model, (ecg_sets,) = ecg()
    runs = [protocol("the pack's split: alternate bands", TEXTURE, texture_model,
                     [(s["val"], s["test"]) for s in crops], fpr),
            protocol("top vs bottom (the pack's split before)", TEXTURE, texture_model,
                     [(s["top"], s["bottom"]) for s in crops], fpr),
            protocol("the pack's split: by time", ECG, ecg_model, [(ecg_sets["val"], ecg_sets["test"])], fpr),
            protocol("interleaved seconds", ECG, ecg_model,
                     [(ecg_sets["a"], ecg_sets["b"]), (ecg_sets["b"], ecg_sets["a"])], fpr)]
    for r in runs:
        print(json.dumps(r))
    verdicts = {f"{r['data']}, {r['protocol']}: realized FPR within {TOLERANCE:.0%} of the target": abs(
        r["off_target"]) <= TOLERANCE for r in runs if r["protocol"].startswith("the pack's")}  # others: contrasts
    print(json.dumps(verdicts, indent=2))
    save("calibration", {"runs": runs, "threads": 1}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
