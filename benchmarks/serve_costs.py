"""Where a served request's time goes, measured in process beside the HTTP benchmark (bench_serve.py).

- `in_process`: the baseline the service is held to: the served model called on the same records in a plain
  loop, in batches of a level's client count (at n clients sending one record each, the batcher can form
  batches of at most n), with the call the model service makes (`task.serve`, embeddings for the prediction
  log included).
- `stage_costs`: each step the service takes for a record, timed on its own over the same records in batches
  of 32: parsing and validating the request body (what BentoML does with pydantic), decoding and checking the
  inputs, the hop to the model service and back (JSON both ways) and decoding again there (the split layout
  only: in the default layout the model runs in the API service's process), the model, building and encoding
  the answer, and the prediction log's line.
- `echo_floor`: what HTTP and BentoML cost alone: a service that answers every record with a constant
  (benchmarks/echo_service.py), under the same load generator.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _served(domain: str) -> tuple[Any, Any, dict[str, Any], Any]:
    from mmops.domains import load_domain
    from mmops.serving.client import service_env
    from mmops.serving.store import loaded

    task, predictor, meta = loaded(service_env(domain)["MMOPS_MODEL_TAG"])
    return task, predictor, meta, load_domain(domain)


def _values(pack: Any, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from mmops.serving.schemas import RecordIn, decode_record

    return [decode_record(pack, RecordIn.model_validate(p))[0] for p in payloads]


def in_process(domain: str, payloads: list[dict[str, Any]], levels: list[int], seconds: float = 3.0,
               ) -> dict[int, float]:
    """Records per second of the served model called in a plain loop on batches of each level's size."""
    task, predictor, _, pack = _served(domain)
    values = _values(pack, payloads)
    rates = {}
    for n in levels:
        batches = [values[i : i + n] for i in range(0, len(values), n)]
        task.serve(predictor, batches[0], embeddings=True)  # warm
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for batch in batches:
                task.serve(predictor, batch, embeddings=True)
                done += len(batch)
        rates[n] = round(done / (time.perf_counter() - started), 1)
    return rates


def stage_costs(domain: str, payloads: list[dict[str, Any]], batch: int = 32, repeat: int = 3) -> dict[str, float]:
    """Microseconds per record of each step the service takes, over the records in batches of `batch`
    (medians of `repeat` passes)."""
    from pydantic import TypeAdapter

    from mmops.serving.model import wire_answers
    from mmops.serving.predlog import Entry, to_line, with_stats
    from mmops.serving.schemas import PredictIn, PredictionOut, decode_record, record_warnings

    wire = TypeAdapter(list[dict[str, Any]])  # BentoML's JSON between the two services: pydantic's, both ways

    task, predictor, meta, pack = _served(domain)
    bodies = [json.dumps({"records": [p]}).encode() for p in payloads]
    timings: dict[str, list[float]] = {}

    def timed(stage: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        out = fn(*args)
        timings.setdefault(stage, []).append(time.perf_counter() - started)
        return out

    def answer(records: list[Any], answers: list[dict[str, Any]]) -> list[tuple[bytes, str]]:
        out = []
        for rec, a in zip(records, answers, strict=True):
            fields = task.answer(a, a["classes"])
            fields.pop("outputs")
            body = PredictionOut(id=rec.id, model_version=a["model_version"], warnings=[], missing_modalities=[],
                                 **fields).model_dump_json().encode()
            out.append((body, fields["label"]))
        return out

    for _ in range(repeat):
        for i in range(0, len(bodies), batch):
            chunk = bodies[i : i + batch]
            records = timed("parse and validate the request", lambda c: [
                PredictIn.model_validate_json(b).records[0] for b in c], chunk)
            timed("decode and check the inputs", lambda rs: [
                record_warnings(pack, r, decode_record(pack, r, stats=False)[0]) for r in rs], records)
            sent = timed("split layout: hop to the model service (JSON there)", lambda rs: wire.validate_json(wire.dump_json(
                [r.model_dump() for r in rs])), records)
            values = timed("split layout: decode again in the model service", lambda rs: [
                decode_record(pack, r, stats=False)[0] for r in rs], sent)
            answers = timed("model (task.serve, with embeddings)", lambda vs: [
                {**a, **meta} for a in task.serve(predictor, vs, embeddings=True)], values)
            timed("split layout: hop back (JSON)", lambda a: wire.validate_json(wire.dump_json(wire_answers(
                [{**x, "embeddings": dict(x.get("embeddings", {}))} for x in a]))), answers)
            built = timed("build and encode the answers", answer, records, answers)
            timed("prediction log (the writer thread: statistics, line)", lambda vs, ans, out: [
                to_line(e) for e in with_stats(pack, [Entry(
                    0.0, None, a["model_version"], a["checkpoint_sha256"], {}, label, a.get("probabilities", []),
                    a.get("embeddings", {}), inputs=v) for v, a, (_, label) in zip(vs, ans, out, strict=True)])],
                  values, answers, built)
    passes = {stage: [sum(t[j::repeat]) for j in range(repeat)] for stage, t in timings.items()}
    n_records = len(bodies)
    return {stage: round(statistics.median(p) / n_records * 1e6, 1) for stage, p in passes.items()}


def echo_floor(port: int, payloads: list[dict[str, Any]], levels: list[int], n_requests: int,
               max_seconds: float) -> dict[int, dict[str, Any]]:
    """The echo service's throughput and latency at each level, under the same load generator."""
    from loadgen import load

    from mmops.processes import stop_group
    from mmops.serving.client import wait_ready

    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "echo_service:Echo", "--port", str(port)],
                            cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=120)
        return {n: asyncio.run(load(f"http://127.0.0.1:{port}", payloads, n, max(160, n_requests * n),
                                    max_seconds)) for n in levels}
    finally:
        stop_group(proc)
