"""The floors under the serving benchmark: what a BentoML service that does nothing answers on this machine,
under bench_serve.py's load generator (benchmarks/loadgen.py), at 1, 8, 32 and 64 clients.

- one service answering a constant (`echo_service:Echo`);
- the same through a second service, as mmops's API service hands records to its model service
  (`echo_service:EchoTwo`: JSON between the two, adaptive batching on the second).

The difference between the two is the cost of the hop alone, with no model and no decoding. The records are
shaped like the industrial domain's (two sensor series of 100 rows x 3 channels, as JSON lists of numbers;
made up, never served to a model). No target: these bound what any service built this way can reach here.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_serve_floor.py [--clients 1 8 32 64]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import load  # noqa: E402
from record import save  # noqa: E402

HERE = Path(__file__).resolve().parent


def records(n: int = 16) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)

    def series() -> list[list[float]]:
        return [[round(float(v), 6) for v in row] for row in rng.normal(size=(100, 3))]

    return [{"id": f"rec-{i}", "inputs": {"accel": series(), "gyro": series()}} for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=3967)
    args = parser.parse_args()
    from mmops.processes import stop_group
    from mmops.serving.client import wait_ready

    payloads = records()
    services = {"one service": "echo_service:Echo", "two services (API -> model service)": "echo_service:EchoTwo"}
    procs = {}
    rows = []
    try:
        for i, (name, target) in enumerate(services.items()):
            port = args.port + i
            procs[name] = (subprocess.Popen([sys.executable, "-m", "bentoml", "serve", target, "--port", str(port)],
                                            cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True), port)
            wait_ready(f"http://127.0.0.1:{port}", procs[name][0], timeout=120)
        for n in args.clients:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in services}
            for r in range(args.rounds):  # the two take turns, in alternating order
                for name in list(services)[:: 1 if r % 2 == 0 else -1]:
                    runs[name].append(asyncio.run(load(f"http://127.0.0.1:{procs[name][1]}", payloads, n,
                                                       10**9, args.max_seconds)))
            for name, rs in runs.items():
                row = {"service": name, "clients": n, **{k: round(statistics.median(x[k] for x in rs), 1)
                                                         for k in ("rps", "p50_ms", "p99_ms")},
                       "errors": sum(x["errors"] for x in rs)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for proc, _ in procs.values():
            stop_group(proc)
    verdicts = {"zero errors everywhere": all(r["errors"] == 0 for r in rows)}
    save("serve-floor", {"floors": rows}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
