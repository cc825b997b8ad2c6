"""Load on the prediction service over real HTTP (loopback): throughput, p50/p99 latency and errors at 1, 8,
32 and 64 concurrent clients, for each domain's model, with adaptive batching on and off, and with the
prediction log on and off, with the model in the API service's process (the default layout) and in a
model service of its own (MMOPS_SERVE_LAYOUT=split), and with two workers each holding the model
(MMOPS_SERVE_WORKERS=2), all in the same run.

Targets (issue 6): zero errors at every concurrency; batched throughput >= unbatched everywhere (at one
client, where the batcher is skipped and both settings run the same code, within 5 % noise) and >= 1.5x
at 32 clients for the heaviest model (medical: MiniLM text encoder + MobileNetV2 + sensor encoder); logging
on >= 0.9x logging off. `--domain surveillance` (issue 21: a 4 s video clip and a 4 s audio clip per record,
base64) is recorded apart, in var/bench/serve-surveillance.json, and so is `--domain cardiac inspection watch`
(issue 22: the anomaly detectors, memory-bank scoring; batched >= unbatched at every level) in
var/bench/serve-anomaly.json. `--shadow` (issue 24) serves each domain's champion with a challenger in shadow
(mmops/serving/shadow.py; here the champion's own model loaded a second time: a challenger as heavy as the
champion) and without, at 8 and 32 clients: the champion's clients may lose at most 10 % throughput
(var/bench/serve-shadow.json).

Issue 25 holds the service to the model itself: served throughput (batching on, log on; one worker, or the
two-worker setting where it serves more) at 32 clients >= 0.5x the same model called in a plain loop on
batches of 32 of the same records (benchmarks/serve_costs.py), and p99 <= 3x p50 at every level. Beside it, to say where the time goes: each step of a request timed in process,
and the floor that HTTP and BentoML set (a service answering a constant, under the same load generator,
benchmarks/loadgen.py).

Each domain's model is trained for one epoch with the default architecture (speed does not depend on how
well it was trained) in a temporary project, then served by `bentoml serve`, one child process per setting
(all up at once, idle between their turns); at each concurrency level the settings take turns, so that
drifts in machine speed hit them alike. Every client sends one record per request
(held-out test records, round robin), a new request as soon as the last is answered, until the level's
request budget or time budget is spent; each level runs `--rounds` times per setting, in alternating order,
and the table reports medians (single runs on a shared 2-core machine scatter by about 10 %). Run: `make bench` (or `.venv/bin/python benchmarks/bench_serve.py
[--domain medical] [--clients 1 8 32 64]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import load  # noqa: E402
from record import save  # noqa: E402
from serve_costs import echo_floor, in_process, stage_costs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["industrial", "security", "medical"]
ANOMALY = ["cardiac", "inspection", "watch"]  # --domain cardiac inspection watch: the detectors (issue 22)
PACKS = {"industrial": "industrial-imu", "security": "security-faces", "medical": "medical-cxr",
         "surveillance": "surveillance-av",  # --domain surveillance: audio + video records (issue 21)
         "cardiac": "cardiac-ecg", "inspection": "inspection-brick", "watch": "watch-av"}


def serve(domain: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    from mmops.serving.client import serve_command, wait_ready

    with log.open("ab") as fh:
        proc = subprocess.Popen(serve_command(port), env=env, cwd=env["MMOPS_HOME"], stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=240)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    from mmops.processes import stop_group

    stop_group(proc)


def prepare(root: Path, domains: list[str], epochs: int | None = 1) -> None:
    """Each domain's pack through every stage to a packaged model (`epochs` epochs, default architecture; None:
    the training parameters params.yaml and the pack give), in a project at `root` that this process then uses
    (MMOPS_HOME, BENTOML_HOME; served without a token)."""
    os.environ.update(MMOPS_HOME=str(root), BENTOML_HOME=str(root / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    os.environ.setdefault("MMOPS_PSEUDONYM_KEY", "benchmark")
    os.environ.pop("MMOPS_API_TOKEN", None)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["packs"] = {d: PACKS[d] for d in domains}
    if epochs is not None:
        params["train"].update(epochs=epochs, patience=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "bentofile.yaml").write_text((REPO / "bentofile.yaml").read_text())
    from mmops import pipeline

    for d in domains:
        pipeline.pull_domain(d)
        for stage in ("ingest", "label", "validate", "build", "train", "evaluate"):
            pipeline.STAGES[stage](d)
        pipeline.package(d, build_bento=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", nargs="+", default=DEFAULT, choices=list(PACKS))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--requests-per-client", type=int, default=32, help="request budget: this x clients, >= 160")
    parser.add_argument("--max-seconds", type=float, default=45.0, help="time budget per level")
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting and level (medians reported)")
    parser.add_argument("--port", type=int, default=3917)
    parser.add_argument("--shadow", action="store_true", help="shadow on vs off (at 8 and 32 clients by default)")
    args = parser.parse_args()
    if args.shadow and args.clients == [1, 8, 32, 64]:
        args.clients = [8, 32]
    with tempfile.TemporaryDirectory(prefix="mmops-bench-serve-") as tmp:
        root = Path(tmp)
        prepare(root, args.domain)
        from mmops import pipeline
        from mmops.config import get_settings
        from mmops.domains import load_domain
        from mmops.serving.client import record_payload, service_env

        settings = get_settings()
        table: list[dict[str, Any]] = []
        mirrored: dict[str, dict[str, Any]] = {}
        costs: dict[str, dict[str, Any]] = {"in_process": {}, "stage_costs": {}, "echo_floor": {}}
        for d in args.domain:
            settings_list: list[tuple[str, dict[str, str]]] = (
                [("shadow off", {}), ("shadow on", {"MMOPS_SHADOW_TAG": service_env(d)["MMOPS_MODEL_TAG"]})]
                if args.shadow else [("batching on", {}), ("batching off", {"MMOPS_BATCHING": "0"}),
                                     ("log off", {"MMOPS_PREDICTION_LOG": "0"}),
                                     ("split layout", {"MMOPS_SERVE_LAYOUT": "split"}),
                                     ("2 workers", {"MMOPS_SERVE_WORKERS": "2"})])
            pack = load_domain(d)
            payloads = [record_payload(pack, settings.data_dir, r) for r in pipeline.load_manifest(d).split("test")]
            if not args.shadow:  # the baselines, before any service is up
                costs["in_process"][d] = in_process(d, payloads, args.clients)
                costs["stage_costs"][d] = stage_costs(d, payloads)
                costs["echo_floor"][d] = echo_floor(args.port + 10, payloads, args.clients, args.requests_per_client,
                                                    min(args.max_seconds, 15.0))
                print(json.dumps({"domain": d, **{k: v[d] for k, v in costs.items()}}), flush=True)
            procs = {}
            try:  # all settings up at once, idle between their turns; levels interleave the settings
                for i, (setting, extra) in enumerate(settings_list):
                    procs[setting] = (serve(d, args.port + i, {**service_env(d), **extra}, root / f"serve-{d}.log"),
                                      args.port + i)
                for n in args.clients:
                    for setting, _ in settings_list:  # untimed: a service calibrates its model's threads on its
                        asyncio.run(load(f"http://127.0.0.1:{procs[setting][1]}", payloads, n,  # first batches
                                         4 * n, min(args.max_seconds, 5.0)))
                    runs: dict[str, list[dict[str, Any]]] = {s: [] for s, _ in settings_list}
                    for r in range(args.rounds):  # each round in another order: ABC, CBA, ...
                        for setting, _ in settings_list[:: 1 if r % 2 == 0 else -1]:
                            row = asyncio.run(load(f"http://127.0.0.1:{procs[setting][1]}", payloads, n,
                                                   max(160, n * args.requests_per_client), args.max_seconds))
                            runs[setting].append(row)
                            print(json.dumps({"domain": d, "setting": setting, "round": r + 1, **row}), flush=True)
                    table += [{"domain": d, "setting": s, **median_of(rows)} for s, rows in runs.items()]
            finally:
                for proc, _ in procs.values():
                    stop(proc)
            if args.shadow:  # how much of the traffic the challenger saw (the rest it dropped to keep up)
                from mmops.serving.shadow import report as shadow_report

                seen = shadow_report(settings.prediction_log_dir, d, {})
                mirrored[d] = {k: seen[k] for k in ("mirrored", "dropped", "failed", "agreement", "shadow_ms")}
                print(json.dumps({"domain": d, "shadow": mirrored[d]}), flush=True)
    return report_shadow(table, args.domain, mirrored) if args.shadow else report(table, args.domain, costs)


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One setting at one level over its rounds: median throughput and latencies, errors summed."""
    def med(key: str) -> float:
        return round(float(np.median([r[key] for r in rows])), 2)

    return {"clients": rows[0]["clients"], "ok": sum(r["ok"] for r in rows), "errors": sum(r["errors"] for r in rows),
            "rounds": len(rows), "rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms")}


def report(table: list[dict[str, Any]], domains: list[str], costs: dict[str, dict[str, Any]]) -> int:
    def row(d: str, setting: str, n: int) -> dict[str, Any]:
        return next(r for r in table if r["domain"] == d and r["setting"] == setting and r["clients"] == n)

    def rps(d: str, setting: str, n: int) -> float:
        return float(row(d, setting, n)["rps"])

    print(f"\n{'domain':<11} {'setting':<13} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in table:
        print(f"{r['domain']:<11} {r['setting']:<13} {r['clients']:>7} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['errors']:>6}")
    clients = sorted({r["clients"] for r in table})
    verdicts = {"zero errors everywhere": all(r["errors"] == 0 for r in table)}
    for d in domains:
        ratios = {n: rps(d, "batching on", n) / max(rps(d, "batching off", n), 1e-9) for n in clients}
        print(f"{d}: batched/unbatched throughput " + ", ".join(f"{n}: {x:.2f}x" for n, x in ratios.items())
              + "; log on/off " + ", ".join(f"{n}: {rps(d, 'batching on', n) / max(rps(d, 'log off', n), 1e-9):.2f}x"
                                            for n in clients)
              + "; model in process / model service " + ", ".join(
                  f"{n}: {rps(d, 'batching on', n) / max(rps(d, 'split layout', n), 1e-9):.2f}x" for n in clients)
              + "; two workers / one " + ", ".join(
                  f"{n}: {rps(d, '2 workers', n) / max(rps(d, 'batching on', n), 1e-9):.2f}x" for n in clients))
        # One client: the service skips the batcher when a request would wait alone, so both settings run
        # the same code and their ratio is this machine's noise; there the verdict allows 5 %.
        verdicts[f"{d}: batched >= unbatched"] = all(x >= (0.95 if n == 1 else 1.0) for n, x in ratios.items())
        verdicts[f"{d}: log on >= 0.9x log off"] = all(
            rps(d, "batching on", n) >= 0.9 * rps(d, "log off", n) for n in clients)
        if d == "medical" and 32 in ratios:
            verdicts["medical (text encoder): batched >= 1.5x at 32 clients"] = ratios[32] >= 1.5
        # issue 25: against the model in a plain loop, and the tail at every level
        verdicts[f"{d}: p99 <= 3x p50 at every level"] = all(
            row(d, "batching on", n)["p99_ms"] <= 3 * row(d, "batching on", n)["p50_ms"] for n in clients)
        if 32 in clients:
            verdicts[f"{d}: served (1 or 2 workers) >= 0.5x in-process at 32 clients"] = (
                max(rps(d, "batching on", 32), rps(d, "2 workers", 32)) >= 0.5 * costs["in_process"][d][32])
    overhead = overhead_rows(table, domains, clients, costs)
    print(json.dumps(verdicts, indent=2))
    name = {tuple(DEFAULT): "serve", tuple(ANOMALY): "serve-anomaly"}.get(tuple(domains), "serve-" + "-".join(domains))
    save(name, {"runs": table, "served vs in process (batching on, log on)": overhead,
                "stage costs, microseconds per record (in process, batches of 32)": costs["stage_costs"],
                "echo floor (a service answering a constant, same load generator)": [
                    {"domain": d, "clients": n, **{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}}
                    for d in domains for n, r in costs["echo_floor"][d].items()]}, verdicts)
    return 0 if all(verdicts.values()) else 1


def overhead_rows(table: list[dict[str, Any]], domains: list[str], clients: list[int],
                  costs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per domain and level: served (batching on, log on) vs the model in process and the echo floor."""
    rows = []
    for d in domains:
        for n in clients:
            served = next(r for r in table if (r["domain"], r["setting"], r["clients"]) == (d, "batching on", n))
            inproc, floor = costs["in_process"][d][n], costs["echo_floor"][d][n]["rps"]
            split = next(r for r in table if (r["domain"], r["setting"], r["clients"]) == (d, "split layout", n))
            two = next(r for r in table if (r["domain"], r["setting"], r["clients"]) == (d, "2 workers", n))
            rows.append({"domain": d, "clients": n, "served_rps": served["rps"], "in_process_rps": inproc,
                         "split_layout_rps": split["rps"], "two_workers_rps": two["rps"],
                         "served / in process": round(served["rps"] / inproc, 3),
                         "2 workers / in process": round(two["rps"] / inproc, 3), "echo_floor_rps": floor,
                         "p50_ms": served["p50_ms"], "p99_ms": served["p99_ms"],
                         "p99 / p50": round(served["p99_ms"] / max(served["p50_ms"], 1e-9), 2)})
    print(f"\n{'domain':<11} {'clients':>7} {'served':>8} {'in proc':>8} {'ratio':>6} {'2 wkrs':>7} {'ratio':>6} "
          f"{'echo':>7} {'p99/p50':>7}")
    for r in rows:
        print(f"{r['domain']:<11} {r['clients']:>7} {r['served_rps']:>8.1f} {r['in_process_rps']:>8.1f} "
              f"{r['served / in process']:>6.2f} {r['two_workers_rps']:>7.1f} {r['2 workers / in process']:>6.2f} "
              f"{r['echo_floor_rps']:>7.1f} {r['p99 / p50']:>7.2f}")
    for d in domains:
        print(f"{d}: microseconds per record, in process: " + json.dumps(costs["stage_costs"][d]))
    return rows


def report_shadow(table: list[dict[str, Any]], domains: list[str], mirrored: dict[str, dict[str, Any]]) -> int:
    """Shadow on vs off: the champion's clients' throughput and latency, what the challenger saw, and the
    verdicts."""
    print(f"\n{'domain':<11} {'setting':<11} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in table:
        print(f"{r['domain']:<11} {r['setting']:<11} {r['clients']:>7} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['errors']:>6}")
    verdicts = {"zero errors everywhere": all(r["errors"] == 0 for r in table)}
    for d in domains:
        for n in sorted({r["clients"] for r in table}):
            on, off = (next(r["rps"] for r in table if (r["domain"], r["setting"], r["clients"]) == (d, s, n))
                       for s in ("shadow on", "shadow off"))
            print(f"{d}: shadow on/off throughput at {n} clients: {on / max(off, 1e-9):.2f}x")
            verdicts[f"{d}: shadow on >= 0.9x off at {n} clients"] = on >= 0.9 * off
        seen = mirrored[d]
        print(f"{d}: the challenger saw {seen['mirrored']} records, dropped {seen['dropped']} to keep up "
              f"({seen['mirrored'] / max(seen['mirrored'] + seen['dropped'], 1):.0%} mirrored), {seen['failed']} failed")
    print(json.dumps(verdicts, indent=2))
    save("serve-shadow", {"runs": table, "shadow": mirrored}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
