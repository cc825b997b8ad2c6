"""BentoML services that answer every record with a constant: the floors that HTTP, BentoML and the load
generator set on this machine (benchmarks/serve_costs.py, bench_serve_floor.py). Same route and body shape
as mmops's /predict; `GET /readyz` is BentoML's own.

- `Echo`: one service answers.
- `EchoTwo`: the API service hands the records to a second service that answers, as mmops's `Svc` hands them
  to `ModelRunner` (JSON between the two, adaptive batching on the second, the same session settings).
"""

from __future__ import annotations

from typing import Any

import bentoml


@bentoml.service(name="echo")
class Echo:
    @bentoml.api(route="/predict")
    async def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": r.get("id"), "label": "constant"} for r in records]


@bentoml.service(name="echo_model", workers=1, runner_connection={"max_requests": 2**62, "max_age": 10.0 * 365 * 86400})
class EchoModel:
    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10000)
    def infer(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": r.get("id"), "label": "constant"} for r in records]


@bentoml.service(name="echo_two")
class EchoTwo:
    model = bentoml.depends(EchoModel)

    @bentoml.api(route="/predict")
    async def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = await self.model.to_async.infer(records)
        return answers
