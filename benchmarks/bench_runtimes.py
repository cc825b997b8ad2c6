"""The serving runtimes side by side (issue 25): each domain's classifier packaged for eager torch, ONNX Runtime
(onnx) and ONNX Runtime with int8 weights (int8), then for each runtime: the parity gate's figures (test
accuracy against eager torch, largest probability difference), the model file's size, in-process batched
throughput (the packaged model's Predictor on the test split in batches of 64, no HTTP), and served throughput
and latency over real HTTP at 1, 8, 32 and 64 clients (`bentoml serve`, one record per request, as
bench_serve.py loads it), with the service's resident memory (RSS of its process tree) after the load.

Each domain's model is trained for one epoch with the default architecture in a temporary project (speed does
not depend on how well it was trained). The three services are up at once, idle between their turns; at each
level the runtimes take turns, in alternating order per round, and the table reports medians. Run: `make bench`
(or `.venv/bin/python benchmarks/bench_runtimes.py [--domain industrial medical] [--rounds 2]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import median_of, prepare, serve, stop  # noqa: E402
from loadgen import load  # noqa: E402
from record import save  # noqa: E402

RUNTIMES = ("torch", "onnx", "int8")


def in_process(paths: dict[str, Path], values: list[dict[str, Any]], repeat: int = 5) -> dict[str, float]:
    """Records per second of each packaged model's Predictor over `values` in batches of 64: the runtimes take
    turns `repeat` times (a drift in machine speed hits them alike), medians."""
    from mmops.card import read_card
    from mmops.tasks import task_of

    predictors = {rt: task_of(read_card(path).pack.task).load(path, device="cpu") for rt, path in paths.items()}
    for predictor in predictors.values():
        predictor.predict_proba(values[:64], batch_size=64)  # warm up
    rates: dict[str, list[float]] = {rt: [] for rt in predictors}
    for r in range(repeat):
        for rt, predictor in list(predictors.items())[:: 1 if r % 2 == 0 else -1]:
            started = time.perf_counter()
            predictor.predict_proba(values, batch_size=64)
            rates[rt].append(len(values) / (time.perf_counter() - started))
    return {rt: round(statistics.median(rs), 1) for rt, rs in rates.items()}


def rss_mb(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", nargs="+", default=["industrial", "security", "medical"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--requests-per-client", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=3947)
    args = parser.parse_args()
    import bentoml

    with tempfile.TemporaryDirectory(prefix="mmops-bench-runtimes-") as tmp:
        root = Path(tmp)
        prepare(root, args.domain)
        from mmops import pipeline
        from mmops.config import get_settings
        from mmops.datasets.tensors import load_split
        from mmops.domains import load_domain
        from mmops.errors import ValidationFailedError
        from mmops.runtimes import FILES
        from mmops.serving.client import record_payload, service_env

        settings = get_settings()
        table: list[dict[str, Any]] = []
        models: list[dict[str, Any]] = []
        for d in args.domain:
            tags = {"torch": pipeline.package(d, build_bento=False).model_tag}
            for rt in RUNTIMES[1:]:
                try:
                    tags[rt] = pipeline.package(d, build_bento=False, runtime=rt).model_tag
                except ValidationFailedError as exc:  # the parity gate refused it: a result, said in the table
                    models.append({"domain": d, "runtime": rt, "refused": str(exc)})
                    print(json.dumps(models[-1]), flush=True)
            pipeline.package(d, build_bento=False)  # the project's package.json back on eager torch
            active = [rt for rt in RUNTIMES if rt in tags]
            pack, rows = load_domain(d), pipeline.load_manifest(d).split("test")
            values = load_split(pack, settings.data_dir, rows)
            payloads = [record_payload(pack, settings.data_dir, r) for r in rows]
            procs: dict[str, tuple[Any, int]] = {}
            try:
                for i, rt in enumerate(active):
                    procs[rt] = (serve(d, args.port + i, {**service_env(d), "MMOPS_MODEL_TAG": tags[rt]},
                                       root / f"serve-{d}.log"), args.port + i)
                for n in args.clients:
                    runs: dict[str, list[dict[str, Any]]] = {rt: [] for rt in active}
                    for r in range(args.rounds):
                        for rt in active[:: 1 if r % 2 == 0 else -1]:
                            row = asyncio.run(load(f"http://127.0.0.1:{procs[rt][1]}", payloads, n,
                                                   max(160, n * args.requests_per_client), args.max_seconds))
                            runs[rt].append(row)
                            print(json.dumps({"domain": d, "runtime": rt, "round": r + 1, **row}), flush=True)
                    table += [{"domain": d, "runtime": rt, **median_of(rs)} for rt, rs in runs.items()]
                paths = {rt: Path(bentoml.models.get(tags[rt]).path) for rt in active}
                rates = in_process(paths, values)
                for rt, path in paths.items():
                    card = json.loads((path / "card.json").read_text())
                    parity = card.get("runtime") or {}
                    models.append({
                        "domain": d, "runtime": rt, "model_mb": round((path / FILES.get(rt, "model.safetensors"))
                                                                      .stat().st_size / 1e6, 2),
                        "in_process_rps": rates[rt], "service_rss_mb": rss_mb(procs[rt][0].pid),
                        "test_accuracy": parity.get("compiled", parity.get("eager")),
                        "eager_accuracy": parity.get("eager"), "max_probability_diff": parity.get("max_probability_diff"),
                    })
                    print(json.dumps(models[-1]), flush=True)
            finally:
                for proc, _ in procs.values():
                    stop(proc)
    return report(table, models, args.domain)


def report(table: list[dict[str, Any]], models: list[dict[str, Any]], domains: list[str]) -> int:
    print(f"\n{'domain':<11} {'runtime':<7} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in table:
        print(f"{r['domain']:<11} {r['runtime']:<7} {r['clients']:>7} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['errors']:>6}")
    served = [m for m in models if "refused" not in m]
    verdicts = {"zero errors with every runtime": all(r["errors"] == 0 for r in table),
                "every served runtime within 0.5 point of eager torch's test accuracy (the parity gate)": all(
                    m["runtime"] == "torch" or abs(m["test_accuracy"] - m["eager_accuracy"]) <= 0.005 for m in served)}
    for d in domains:
        by = {m["runtime"]: m for m in served if m["domain"] == d}
        print(f"{d}: in-process " + ", ".join(f"{rt} {m['in_process_rps']}/s" for rt, m in by.items())
              + "; model " + ", ".join(f"{rt} {m['model_mb']} MB" for rt, m in by.items()))
    for m in models:
        if "refused" in m:
            print(f"{m['domain']}: {m['runtime']} refused at packaging: {m['refused']}")
    print(json.dumps(verdicts, indent=2))
    refused = [m for m in models if "refused" in m]
    save("serve-runtimes", {"models": served, "runs": table, **({"refused": refused} if refused else {})}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
