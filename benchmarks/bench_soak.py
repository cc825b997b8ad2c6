"""Soak: the prediction service under steady load for a bounded time, memory and latency sampled throughout.

One domain's model (default industrial) is trained for one epoch in a temporary project and served by
`bentoml serve` as in production (adaptive batching and the prediction log on). `--clients` clients send one
held-out record per request, a new one as soon as the last is answered, for `--minutes`; every
`--reload-every` seconds the champion is hot-reloaded (`POST /admin/reload`, what a deployment does), so that a
leak per reload shows too. Every `--interval` seconds a sample is taken: the resident memory of the whole
service (the BentoML supervisor and all its workers), its open file descriptors and threads, and that
window's throughput, p50/p99 latency and errors.

Targets (issue 8), each a ratio within the same run (these machines are noisy; no absolute time): zero errors
and zero failed reloads; memory does not grow: the median RSS of the last quarter of the samples is within
5 % of the first quarter's (after a `--warmup` of 60 s), and the least-squares slope over the second half of
the run stays under 1 % of the RSS per 10 minutes; file descriptors do not grow (last <= first + 4); p99
latency of the last quarter within 1.5x of the first quarter's. Run: `.venv/bin/python benchmarks/bench_soak.py
[--minutes 10] [--clients 8] [--domain industrial]`; `make bench` runs it for 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import PACKS, prepare, serve, stop  # noqa: E402
from loadgen import body_of, predict_one, session  # noqa: E402
from record import save  # noqa: E402


def service_footprint(pid: int) -> dict[str, int]:
    """RSS (bytes), open file descriptors and threads of a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"rss": 0, "fds": 0, "threads": 0, "processes": 0}
    rss = fds = threads = 0
    for p in procs:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                fds += p.num_fds()
                threads += p.num_threads()
        except psutil.NoSuchProcess:
            continue
    return {"rss": rss, "fds": fds, "threads": threads, "processes": len(procs)}


async def soak(url: str, payloads: list[dict[str, Any]], pid: int, clients: int, seconds: float,
               interval: float, reload_every: float, tag: str) -> list[dict[str, Any]]:
    import aiohttp

    bodies = [body_of(rec) for rec in payloads]
    window: dict[str, Any] = {"lat": [], "errors": Counter()}
    samples: list[dict[str, Any]] = []
    stop_at = time.perf_counter() + seconds
    sent = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.perf_counter() < stop_at:
            body = bodies[sent % len(bodies)]
            sent += 1
            outcome = await predict_one(http, url, body)  # counted in the window it ends in
            if isinstance(outcome, float):
                window["lat"].append(outcome)
            else:
                window["errors"][outcome] += 1

    async def reloader(http: aiohttp.ClientSession) -> None:
        while reload_every > 0 and time.perf_counter() + reload_every < stop_at:
            await asyncio.sleep(reload_every)
            try:
                async with http.post(f"{url}/admin/reload", json={"tag": tag},
                                     timeout=aiohttp.ClientTimeout(total=300)) as resp:
                    ok = resp.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            window["errors"]["reload ok" if ok else "reload failed"] += 1

    async def sampler() -> None:
        started = last = time.perf_counter()
        while time.perf_counter() < stop_at:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            n_ok = len(window["lat"])
            lat = np.array(window["lat"]) * 1000 if window["lat"] else np.array([np.nan])
            errors = window["errors"]
            reloads = errors.pop("reload ok", 0)
            window["lat"], window["errors"] = [], Counter()
            fp = await asyncio.to_thread(service_footprint, pid)
            row = {"t": round(now - started, 1), "ok": n_ok, "rps": round(n_ok / (now - last), 1),
                   "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                   "errors": sum(errors.values()), "error_kinds": dict(errors), "reloads": reloads,
                   "rss_mb": round(fp["rss"] / 2**20, 1), "fds": fp["fds"], "threads": fp["threads"],
                   "processes": fp["processes"]}
            last = now
            samples.append(row)
            print(json.dumps(row), flush=True)

    async with session(clients + 1, 120) as http:
        await asyncio.gather(sampler(), reloader(http), *(client(http) for _ in range(clients)))
    return samples


def verdicts(figures: dict[str, Any], samples: list[dict[str, Any]], minutes: float, warmup: float) -> dict[str, bool]:
    # the first minute warms up (allocator arenas, the batcher's calibration, connection pools): memory climbs
    # by about a tenth, then stays flat; the verdicts are on what comes after
    steady = [s for s in samples if s["t"] > warmup]
    if len(steady) < 8:
        raise SystemExit(f"{len(steady)} samples after the {warmup:g} s warm-up: run longer (--minutes)")
    q = max(1, len(steady) // 4)
    first, last = steady[:q], steady[-q:]
    rss_first = float(np.median([s["rss_mb"] for s in first]))
    rss_last = float(np.median([s["rss_mb"] for s in last]))
    half = steady[len(steady) // 2:]
    t = np.array([s["t"] for s in half]) / 60.0
    slope = float(np.polyfit(t, [s["rss_mb"] for s in half], 1)[0]) if len(half) >= 3 else 0.0  # MB per minute
    p99_first = float(np.median([s["p99_ms"] for s in first]))
    p99_last = float(np.median([s["p99_ms"] for s in last]))
    print(f"\nRSS first quarter {rss_first:.1f} MB, last quarter {rss_last:.1f} MB ({rss_last / rss_first:.3f}x); "
          f"second-half slope {slope:+.2f} MB/min ({slope * 10 / rss_first * 100:+.2f} % per 10 min); "
          f"fds {steady[0]['fds']} -> {steady[-1]['fds']}; threads {steady[0]['threads']} -> {steady[-1]['threads']}; "
          f"p99 first {p99_first:.1f} ms, last {p99_last:.1f} ms ({p99_last / p99_first:.2f}x); "
          f"{len(samples)} samples over {minutes:g} min, "
          f"{sum(s['reloads'] for s in samples)} reloads")
    figures.update({
        "rss_first_quarter_mb": round(rss_first, 1), "rss_last_quarter_mb": round(rss_last, 1),
        "rss_last_over_first": round(rss_last / rss_first, 3), "rss_slope_mb_per_min": round(slope, 3),
        "fds_first": steady[0]["fds"], "fds_last": steady[-1]["fds"],
        "p99_first_quarter_ms": round(p99_first, 1), "p99_last_quarter_ms": round(p99_last, 1),
        "p99_last_over_first": round(p99_last / p99_first, 2), "samples": len(samples),
        "requests_answered": sum(s["ok"] for s in samples), "reloads": sum(s["reloads"] for s in samples)})
    return {
        "zero errors and failed reloads": all(s["errors"] == 0 for s in samples),
        "memory: last quarter within 5 % of the first": rss_last <= 1.05 * rss_first,
        "memory: second-half slope < 1 % per 10 min": slope * 10 <= 0.01 * rss_first,
        "file descriptors do not grow": steady[-1]["fds"] <= steady[0]["fds"] + 4,
        "p99 latency: last quarter <= 1.5x the first": p99_last <= 1.5 * p99_first,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="industrial", choices=list(PACKS))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--reload-every", type=float, default=60.0, help="seconds between hot reloads (0: none)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the verdicts")
    parser.add_argument("--port", type=int, default=3937)
    parser.add_argument("--out", type=Path, help="write the samples and verdicts here as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmops-bench-soak-") as tmp:
        root = Path(tmp)
        prepare(root, [args.domain])
        from mmops import pipeline
        from mmops.config import get_settings
        from mmops.domains import load_domain
        from mmops.serving.client import record_payload, service_env

        pack = load_domain(args.domain)
        payloads = [record_payload(pack, get_settings().data_dir, r)
                    for r in pipeline.load_manifest(args.domain).split("test")]
        env = service_env(args.domain)
        proc = serve(args.domain, args.port, env, root / "serve.log")
        try:
            samples = asyncio.run(soak(f"http://127.0.0.1:{args.port}", payloads, proc.pid, args.clients,
                                       args.minutes * 60, args.interval, args.reload_every, env["MMOPS_MODEL_TAG"]))
        finally:
            stop(proc)
        log_lines = sum(1 for _ in (root / "var" / "predictions" / f"{args.domain}.jsonl").open())
    figures: dict[str, Any] = {"minutes": args.minutes, "warmup_s": args.warmup, "clients": args.clients,
                               "reload_every_s": args.reload_every}
    result = verdicts(figures, samples, args.minutes, args.warmup)
    answered = sum(s["ok"] for s in samples)
    print(f"prediction log: {log_lines} lines; {answered} requests answered within the sampled windows")
    print(json.dumps(result, indent=2))
    save("soak", {**figures, "prediction_log_lines": log_lines}, result)
    if args.out:
        args.out.write_text(json.dumps({"samples": samples, "verdicts": result}, indent=2))
    return 0 if all(result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
