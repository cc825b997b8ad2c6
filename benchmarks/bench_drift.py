"""Drift at scale: the streaming check against reference sketches (`mmops.drift`) vs Evidently's
DataDriftPreset, on the same data in the same process, at 10k, 100k and 1M rows.

The data: 20 numeric columns of assorted shapes (normal, lognormal, uniform, bimodal, integer counts, a
4-valued code), reference and current of the same size; in the current data one column is shifted by half
a standard deviation and one is rescaled. Evidently reads both frames in full; the sketch check reads only
the current data, streamed in chunks, against a sketch built once from the reference (at training time in
mmops: its cost is printed apart). Then a long stream: the sketch of the 1M-row reference saved to a file, and
a fresh process that loads it and streams --stream rows (default 10M; made chunk by chunk, not timed) through
one check, reporting its throughput and peak RSS.

Targets (issue 25): >= 200x faster than DataDriftPreset at 1M rows, the same drifted / not-drifted verdict on
every column at every size, cost growing linearly with rows, 10M rows streamed with the process's RSS under
1 GB and the same columns found.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_drift.py [--rows 10000 100000 1000000]`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmops.drift import DriftCheck, ReferenceSketch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import peak_rss_mb, save  # noqa: E402

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

    from mmops.monitoring import evidently_verdicts  # here: the long stream's process imports only the check

    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    return {c: v["drifted"] for c, v in evidently_verdicts(snapshot.dict())[1].items()}


def sketch_check(sketch: ReferenceSketch, cur: pd.DataFrame, chunk: int) -> dict[str, bool]:
    check = DriftCheck(sketch)
    for start in range(0, len(cur), chunk):
        check.update(cur.iloc[start : start + chunk])
    return {c: d.drifted for c, d in check.verdict().columns.items()}


def stream(sketch_path: Path, rows: int, chunk: int) -> dict[str, Any]:
    """In this (fresh) process: load the saved sketch, stream `rows` made chunk by chunk through one check."""
    check = DriftCheck(ReferenceSketch.load(sketch_path))
    rss_loaded = peak_rss_mb()
    rng, checking = np.random.default_rng(7), 0.0
    for start in range(0, rows, chunk):
        frame = make(min(chunk, rows - start), rng, True)
        started = time.perf_counter()
        check.update(frame)
        checking += time.perf_counter() - started
    drifted = check.verdict().drifted_columns
    return {"rows": rows, "check_s": round(checking, 2), "rows_per_s": round(rows / checking),
            "peak_rss_mb_loaded": round(rss_loaded), "peak_rss_mb": round(peak_rss_mb()), "drifted": drifted}


def long_stream(sketch: ReferenceSketch, rows: int, chunk: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sketch.json"
        sketch.save(path)
        out = subprocess.run([sys.executable, __file__, "--stream-from", str(path), "--stream", str(rows),
                              "--chunk", str(chunk)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk", type=int, default=100_000, help="rows per streamed chunk")
    parser.add_argument("--stream", type=int, default=10_000_000, help="rows of the long stream (0: none)")
    parser.add_argument("--stream-from", type=Path, help=argparse.SUPPRESS)  # the long stream's own process
    args = parser.parse_args()
    if args.stream_from:
        print(json.dumps(stream(args.stream_from, args.stream, args.chunk)))
        return 0
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
        f">= 200x faster at {largest['rows']} rows": largest["speedup"] >= 200,
        # linear: the cost per row stays flat from 100k rows on (below that, fixed costs dominate)
        "cost grows linearly (per-row cost within 2x from 100k rows on)": (
            not per_row or max(per_row) <= 2 * min(per_row)),
    }
    figures: dict[str, Any] = {"sizes": rows}
    if args.stream:
        ref = make(largest["rows"], np.random.default_rng(largest["rows"]), False)
        long = long_stream(ReferenceSketch.build(ref), args.stream, args.chunk)
        del ref
        print(json.dumps(long), flush=True)
        figures["long stream"] = [long]
        verdicts[f"{args.stream:,} rows streamed with RSS under 1 GB"] = long["peak_rss_mb"] < 1024
        verdicts[f"the same columns found in the {args.stream:,}-row stream"] = long["drifted"] == sorted(
            {SHIFTED, RESCALED})
    print(json.dumps(verdicts, indent=2))
    save("drift", figures, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
