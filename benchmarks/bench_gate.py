"""What Great Expectations costs: the gate's suites on 100k sensor records' and 10k images' statistics, run
by GX (`mmops.validation.validate_frames`) and, side by side in the same process, as plain pandas checks of
the same rules. Prints the ratio GX / pandas and whether both reached the same verdict on every
expectation (a cross-check of the rules, too). No target: the ratio tells what GX's reporting costs.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_gate.py --repeat 3`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmops.domains import load_domain
from mmops.validation import GateResult, _expectations, validate_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402


def frames(n_sensor: int, n_image: int, seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Statistics frames shaped like ingest's: industrial accel + gyro (n_sensor records), security camera."""
    rng = np.random.default_rng(seed)

    def sensor() -> pd.DataFrame:
        cols: dict[str, Any] = {"key": [f"r{i}" for i in range(n_sensor)], "sha256": [f"s{i}" for i in range(n_sensor)],
                                "n_samples": np.full(n_sensor, 100.0), "rate_hz": rng.normal(10, 0.05, n_sensor)}
        for ch in "xyz":
            std = rng.gamma(2, 1, n_sensor)
            cols |= {f"{ch}_mean": rng.normal(0, 1, n_sensor), f"{ch}_std": std, f"{ch}_min": -3 * std,
                     f"{ch}_max": 3 * std, f"{ch}_flat_share": rng.beta(1, 12, n_sensor),
                     f"{ch}_clip_share": rng.beta(1, 40, n_sensor)}
        return pd.DataFrame(cols)

    labels = ["standing", "walking", "running", "badminton"]
    industrial = {"accel": sensor(), "gyro": sensor(), "labels": pd.DataFrame({
        "key": [f"r{i}" for i in range(n_sensor)], "label": rng.choice(labels, n_sensor),
        "n_modalities": np.full(n_sensor, 2), "has_accel": True, "has_gyro": True})}
    industrial["class_balance"] = pd.DataFrame({"label": labels, "share": [0.25] * 4})
    industrial["coverage"] = pd.DataFrame({"labeled_share": [1.0]})
    security = {"camera": pd.DataFrame({
        "key": [f"c{i}" for i in range(n_image)], "sha256": [f"h{i}" for i in range(n_image)],
        "height": np.full(n_image, 25.0), "width": np.full(n_image, 25.0),
        "brightness": rng.uniform(0.2, 0.8, n_image), "contrast": rng.uniform(0.05, 0.3, n_image),
        "sharpness": rng.uniform(0.01, 0.2, n_image), "blur": rng.gamma(2, 500, n_image)}),
        "labels": pd.DataFrame({"key": [f"c{i}" for i in range(n_image)],
                                "label": rng.choice(["face", "non_face"], n_image),
                                "n_modalities": np.ones(n_image), "has_camera": True})}
    security["class_balance"] = pd.DataFrame({"label": ["face", "non_face"], "share": [0.5, 0.5]})
    # a few bad batches inside, so that the verdicts compared include failures: a stuck accelerometer axis
    # on 10 % of the records, dead-camera frames on 6 %, a gyro channel with missing means
    industrial["accel"].loc[: n_sensor // 10, "x_flat_share"] = 0.9
    security["camera"].loc[: int(n_image * 0.06), "contrast"] = 0.0
    industrial["gyro"].loc[:10, "y_mean"] = np.nan
    security["coverage"] = pd.DataFrame({"labeled_share": [1.0]})
    return industrial, security


def pandas_check(cls: str, kw: dict[str, Any], df: pd.DataFrame) -> bool:
    """The same rule as the GX expectation, in plain pandas (null values are ignored, as GX does)."""
    col = df[kw["column"]] if "column" in kw else None
    mostly = kw.get("mostly", 1.0)
    if cls == "ExpectColumnValuesToBeBetween":
        v = col.dropna()
        ok = pd.Series(True, index=v.index)
        if kw.get("min_value") is not None:
            ok &= v >= kw["min_value"]
        if kw.get("max_value") is not None:
            ok &= v <= kw["max_value"]
        return bool(ok.mean() >= mostly) if len(v) else True
    if cls == "ExpectColumnValuesToNotBeNull":
        return bool(col.notna().mean() >= mostly)
    if cls == "ExpectColumnValuesToBeInSet":
        v = col.dropna()
        return bool(v.isin(kw["value_set"]).mean() >= mostly) if len(v) else True
    if cls == "ExpectColumnDistinctValuesToContainSet":
        return set(kw["value_set"]) <= set(col.dropna().unique())
    if cls == "ExpectTableRowCountToBeBetween":
        return (kw.get("min_value") is None or len(df) >= kw["min_value"]) and (
            kw.get("max_value") is None or len(df) <= kw["max_value"])
    if cls == "ExpectColumnMeanToBeBetween":
        m = col.mean()
        return (kw.get("min_value") is None or m >= kw["min_value"]) and (
            kw.get("max_value") is None or m <= kw["max_value"])
    if cls == "ExpectColumnValuesToBeUnique":
        v = col.dropna()
        return bool((~v.duplicated(keep=False)).mean() >= mostly)
    raise NotImplementedError(cls)


Verdicts = dict[tuple[str, str, str], bool]  # (suite, expectation type, column) -> success


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def run_pandas(suites: dict[str, list], data: dict[str, pd.DataFrame]) -> Verdicts:
    return {(name, _snake(cls), kw.get("column", "table")): pandas_check(cls, kw, data[name])
            for name, items in suites.items() for cls, kw, _ in items}


def run_gx(domain: str, suites: dict[str, list], data: dict[str, pd.DataFrame]) -> Verdicts:
    details = validate_frames(domain, data, suites, GateResult(domain, "bench", True, 0))
    return {(d["suite"], d["expectation"], d["kwargs"].get("column", "table")): d["success"] for d in details}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sensor-rows", type=int, default=100_000)
    parser.add_argument("--image-rows", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    industrial, security = frames(args.sensor_rows, args.image_rows)
    work = [("industrial", _expectations(load_domain("industrial")), industrial),
            ("security", _expectations(load_domain("security")), security)]
    run_gx(*work[1])  # imports and first-use costs outside the timing
    gx_times, pd_times, agree = [], [], True
    for _ in range(args.repeat):
        start = time.perf_counter()
        gx_verdicts = [run_gx(*w) for w in work]
        gx_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        pd_verdicts = [run_pandas(w[1], w[2]) for w in work]
        pd_times.append(time.perf_counter() - start)
        agree &= gx_verdicts == pd_verdicts
        failed = sum(not ok for v in gx_verdicts for ok in v.values())
    n_exp = sum(len(v) for w in work for v in w[1].values())
    result = {
        "sensor_records": args.sensor_rows, "image_records": args.image_rows, "expectations": n_exp,
        "gx_s": round(statistics.median(gx_times), 3), "pandas_s": round(statistics.median(pd_times), 4),
        "gx_over_pandas": round(statistics.median(gx_times) / statistics.median(pd_times), 1),
        "failed_expectations": failed, "same_verdicts": agree,
    }
    print(json.dumps(result, indent=2))
    save("gate", result, {"GX and pandas reach the same verdict on every expectation": agree})
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
