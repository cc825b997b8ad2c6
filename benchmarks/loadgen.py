"""The HTTP load generator of the serving benchmarks: closed-loop clients, each sending one record per request
as soon as its last was answered.

aiohttp, with each request's body encoded once up front: with httpx's client, at 32 clients the generator
itself capped a BentoML service that answers a constant at 280 requests/s on this 2-core machine (840 with
this one, same machine, same minute), so the benchmarks measured the client more than the service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import numpy as np

JSON = {"content-type": "application/json"}


def body_of(rec: dict[str, Any]) -> bytes:
    """A /predict (or /explain) request body holding one record."""
    return json.dumps({"records": [rec]}).encode("utf-8")


def session(clients: int, timeout_s: float) -> aiohttp.ClientSession:
    """A client session with a connection per client, kept alive."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients, limit_per_host=clients),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def predict_one(http: aiohttp.ClientSession, url: str, body: bytes, route: str = "/predict") -> float | str:
    """POST one request: its latency in seconds, or what went wrong (an exception's name, `HTTP <code>`)."""
    started = time.perf_counter()
    try:
        async with http.post(f"{url}{route}", data=body, headers=JSON) as resp:
            await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__
    return time.perf_counter() - started if status == 200 else f"HTTP {status}"


async def load(url: str, payloads: list[dict[str, Any]], clients: int, n_requests: int,
               max_seconds: float, route: str = "/predict") -> dict[str, Any]:
    """`clients` clients, each sending one record per request to `route` as soon as its last is answered,
    until n_requests are issued or max_seconds pass (after a warm-up request per client)."""
    bodies = [body_of(rec) for rec in payloads]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    issued = 0
    deadline = float("inf")  # set once the warm-up is done: a slow route's warm-up must not eat the budget

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < n_requests and time.perf_counter() < deadline:
            body = bodies[issued % len(bodies)]
            issued += 1
            outcome = await predict_one(http, url, body, route)
            if isinstance(outcome, float):
                latencies.append(outcome)
            else:
                errors[outcome] += 1

    async with session(clients, max_seconds + 60) as http:
        # warm: first calls allocate, open connections and let the batcher calibrate
        await asyncio.gather(*(predict_one(http, url, body, route) for body in (bodies * clients)[:clients]))
        started = time.perf_counter()
        deadline = started + max_seconds
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"route": route, "clients": clients, "ok": len(latencies), "errors": sum(errors.values()),
            "error_kinds": dict(errors), "rps": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "seconds": round(elapsed, 1)}
