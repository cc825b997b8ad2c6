"""A BentoML service that answers every record with a constant: the floor that HTTP, BentoML and the load
generator set on this machine (benchmarks/serve_costs.py). Same route and body shape as mmops's /predict;
`GET /readyz` is BentoML's own."""

from __future__ import annotations

from typing import Any

import bentoml


@bentoml.service(name="echo")
class Echo:
    @bentoml.api(route="/predict")
    async def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": r.get("id"), "label": "constant"} for r in records]
