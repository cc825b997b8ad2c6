"""Drift at scale: the streaming check against reference sketches (`mmops.drift`) vs Evidently's
DataDriftPreset, on the same data in the same process, at 10k, 100k and 1M rows.

The data: 20 numeric columns of assorted shapes (normal, lognormal, uniform, bimodal, integer counts, a
4-valued code), reference and current of the same size; in the current data one column is shifted by half
a standard deviation and one is rescaled. Evidently reads both frames in full; the sketch check reads only
the current data, streamed in chunks, against a sketch built once from the reference (at training time in
mmops: its cost is printed apart). Targets (issue 7): >= 50x faster than DataDriftPreset at 1M rows, the
same drifted / not-drifted verdict on every column at every size, cost growing linearly with rows.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_drift.py [--rows 10000 100000 1000000]`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmops.drift import DriftCheck, ReferenceSketch
from mmops.monitoring import evidently_verdicts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

SHIFTED, RESCALED = "c03", "c11"


def make(n: int, rng: np.random.Generator, drift: bool) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {}
    for i in range(20):
        kind = i % 5
        if kind == 0:
            v = rng.normal(10, 2, n)
        elif kind == 1:
            v = rng.lognormal(0, 0.7, n)
        elif kind == 2:
            v = rng.uniform(-1, 1, n)
        elif kind == 3:
            v = np.where(rng.random(n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(2, 1, n))
        else:
            v = rng.poisson(30, n).astype(float) if i != 14 else rng.choice([0.0, 1.0, 2.0, 5.0], n)
        cols[f"c{i:02d}"] = v
    frame = pd.DataFrame(cols)
    if drift:
        frame[SHIFTED] += 0.5 * frame[SHIFTED].std()
        frame[RESCALED] = frame[RESCALED].mean() + 1.5 * (frame[RESCALED] - frame[RESCALED].mean())
    return frame


def evidently(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, bool]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    return {c: v["drifted"] for c, v in evidently_verdicts(snapshot.dict())[1].items()}


def sketch_check(sketch: ReferenceSketch, cur: pd.DataFrame, chunk: int) -> dict[str, bool]:
    check = DriftCheck(sketch)
    for start in range(0, len(cur), chunk):
        check.update(cur.iloc[start : start + chunk])
    return {c: d.drifted for c, d in check.verdict().columns.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk", type=int, default=100_000, help="rows per streamed chunk")
    args = parser.parse_args()
    evidently(make(2000, np.random.default_rng(9), False), make(2000, np.random.default_rng(8), True))  # imports
    rows: list[dict[str, Any]] = []
    for n in args.rows:
        ref, cur = make(n, np.random.default_rng(n), False), make(n, np.random.default_rng(n + 1), True)
        started = time.perf_counter()
        ev = evidently(ref, cur)
        ev_s = time.perf_counter() - started
        started = time.perf_counter()
        sketch = ReferenceSketch.build(ref)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        sk = sketch_check(sketch, cur, args.chunk)
        check_s = time.perf_counter() - started
        differ = sorted(c for c in ev if ev[c] != sk.get(c))
        row = {"rows": n, "evidently_s": round(ev_s, 3), "sketch_check_s": round(check_s, 3),
               "sketch_build_s": round(build_s, 3), "speedup": round(ev_s / check_s, 1),
               "check_us_per_row": round(check_s / n * 1e6, 3), "columns": len(ev),
               "evidently_drifted": sorted(c for c, d in ev.items() if d),
               "sketch_drifted": sorted(c for c, d in sk.items() if d), "verdicts_differ": differ}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'rows':>9} {'Evidently s':>12} {'sketch s':>9} {'speedup':>8} {'us/row':>7} {'build s':>8}  drifted")
    for r in rows:
        print(f"{r['rows']:>9} {r['evidently_s']:>12.2f} {r['sketch_check_s']:>9.3f} {r['speedup']:>7.1f}x "
              f"{r['check_us_per_row']:>7.2f} {r['sketch_build_s']:>8.2f}  {','.join(r['sketch_drifted'])}")
    largest = max(rows, key=lambda r: r["rows"])
    per_row = [r["check_us_per_row"] for r in rows if r["rows"] >= 100_000]
    verdicts = {
        "same verdict on every column at every size": all(not r["verdicts_differ"] for r in rows),
        "the shifted and the rescaled column found": all(
            {SHIFTED, RESCALED} <= set(r["sketch_drifted"]) for r in rows),
        f">= 50x faster at {largest['rows']} rows": largest["speedup"] >= 50,
        # linear: the cost per row stays flat from 100k rows on (below that, fixed costs dominate)
        "cost grows linearly (per-row cost within 2x from 100k rows on)": (
            not per_row or max(per_row) <= 2 * min(per_row)),
    }
    print(json.dumps(verdicts, indent=2))
    save("drift", {"sizes": rows}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
