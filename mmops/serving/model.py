"""The served model and the two ways the API service reaches it.

`ServedModel` holds a packaged model (task, predictor, answer metadata) and the challenger on trial beside it;
it answers decoded records, explains them, swaps in another model and starts or stops trials. The API service
(service.Svc) reaches it either
- in its own process (`LocalModel`, the default layout `one`): records decoded once by the API service go
  straight to the model, batched across concurrent requests by an in-process batcher (batcher.py); or
- in a model service of its own (`RemoteModel` over service.ModelRunner, layout `split`, MMOPS_SERVE_LAYOUT):
  records travel as JSON to a second process that decodes them again, batched there by BentoML. What a
  model on its own process buys: the API service's workers scale apart from it.
Measured (docs/serving.md, Where the time goes): the hop and the second decode cost the light models more than
the model itself, hence `one` by default. Both facades have the same async methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmops import faults
from mmops.errors import BadInputError
from mmops.serving.batcher import Batcher
from mmops.serving.schemas import RecordIn, decode_record
from mmops.serving.store import loaded
from mmops.serving.threads import Threads, fixed_threads
from mmops.serving.trials import Trials

log = logging.getLogger("mmops.serving")

LAYOUTS = ("one", "split")
MAX_BATCH = 64  # records in one model call


def layout() -> str:
    """MMOPS_SERVE_LAYOUT: `one` (the model in the API service's process, the default) or `split`."""
    chosen = os.environ.get("MMOPS_SERVE_LAYOUT", "one").strip().lower() or "one"
    if chosen not in LAYOUTS:
        raise ValueError(f"MMOPS_SERVE_LAYOUT={chosen!r}: expected one of {list(LAYOUTS)}")
    return chosen


Answers = list[dict[str, Any]]


def wire_answers(answers: Answers) -> Answers:
    """Answers as they travel back over JSON from the model service: the embeddings' float32 arrays as lists
    (rounded in decimal, as the log writes them)."""
    for a in answers:
        if "embeddings" in a:
            a["embeddings"] = {m: np.round(np.asarray(e, dtype=np.float64), 4).tolist()
                               for m, e in a["embeddings"].items()}
    return answers


class ServedModel:
    """A packaged model as a service answers with it, and its trials (trials.py). Thread-safe for one caller
    of `predict` at a time beside the others: `load` swaps the model in one assignment, so a batch in flight
    keeps what it started with."""

    def __init__(self, tag: str, log_dir: Path, embeddings: bool, workers: int = 1) -> None:
        self.embeddings = embeddings  # each modality's embedding in the answers, for the prediction log
        self.threads: Threads | None = None
        self.workers = workers  # processes sharing the machine's cores, each with a model like this one
        self.load(tag)
        self.trials = Trials(log_dir, self.current[1].pack.name)  # the shadow log's folder and domain
        if os.environ.get("MMOPS_SHADOW_TAG"):
            self.trials.start("shadow", os.environ["MMOPS_SHADOW_TAG"])

    def load(self, tag: str) -> dict[str, Any]:
        """Load `tag` and swap it in; its answer metadata."""
        self.current = loaded(tag)
        if self.threads is None:  # torch's count now (before the model's thread changed it), shared by the workers
            import torch

            self.threads = Threads(str(getattr(self.current[1], "device", "cpu")), fixed_threads(),
                                   every=max(1, torch.get_num_threads() // self.workers))
        else:
            self.threads.reset()  # another model: calibrate again
        log.info("serving %s", self.current[2]["model_version"])
        return self.current[2]

    def reload(self, tag: str) -> dict[str, Any]:
        """`load` asked for by a client (POST /admin/reload)."""
        faults.point("serve.reload")
        return self.load(tag)

    def predict(self, records: list[RecordIn] | list[dict[str, Any]], values: list[dict[str, Any]]) -> Answers:
        """The answers to decoded `values` of `records` (a challenger on trial may take part), computed with the
        chosen torch thread count (threads.py)."""
        current = self.current
        assert self.threads is not None
        return self.threads.run(lambda: self.trials.predict(current, records, values, self.embeddings), len(values))

    def predict_wire(self, records: list[dict[str, Any]]) -> Answers:
        """`predict` on records as clients send them (validated by the API service: decoded here again)."""
        pack = self.current[1].pack
        return wire_answers(self.predict(records, [decode_record(pack, r, stats=False)[0] for r in records]))

    def explain(self, values: list[dict[str, Any]], target: str | None) -> Answers:
        """Explanations of decoded records; [{"error": ...}] for inputs the model cannot explain (a 400)."""
        task, predictor, meta = self.current
        try:
            return [{**a, **meta} for a in task.explain(predictor, values, target)]
        except BadInputError as exc:
            return [{"error": str(exc)}]

    def trial(self, kind: str = "", tag: str = "", bounds: dict[str, Any] | None = None,
              stop: bool = False) -> dict[str, Any]:
        """Put `tag` on trial as `kind` (shadow or canary), or `stop` the trial; the trial's state."""
        if tag:
            return self.trials.start(kind, tag, bounds, self.embeddings)
        return {"kind": None, "stopped": self.trials.stop()} if stop else self.trials.stats()

    def close(self) -> None:
        self.trials.stop()


class LocalModel:
    """The model in the API service's process: one decode, no hop, batched across requests in process."""

    layout = "one"

    def __init__(self, model: ServedModel, batching: bool) -> None:
        self.model = model
        self.batcher: Batcher[tuple[RecordIn, dict[str, Any]], dict[str, Any]] = Batcher(
            self._predict, MAX_BATCH if batching else 0)

    def _predict(self, pairs: list[tuple[RecordIn, dict[str, Any]]]) -> Answers:
        return self.model.predict([r for r, _ in pairs], [v for _, v in pairs])

    async def infer(self, records: list[RecordIn], values: list[dict[str, Any]]) -> Answers:
        return await self.batcher(list(zip(records, values, strict=True)))

    async def explain(self, records: list[RecordIn], values: list[dict[str, Any]], target: str | None) -> Answers:
        # on the model's thread, never beside a batch: Grad-CAM hooks into the served model's layers while it runs
        return await self.batcher.alone(self.model.explain, values, target)

    async def reload(self, tag: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.model.reload, tag)

    async def trial(self, kind: str, tag: str, bounds: dict[str, Any] | None, stop: bool) -> dict[str, Any]:
        return await asyncio.to_thread(self.model.trial, kind, tag, bounds, stop)

    def stats(self) -> dict[str, Any]:
        assert self.model.threads is not None
        return {"layout": self.layout, **self.batcher.stats(), **self.model.threads.stats()}

    def close(self) -> None:
        self.model.close()
        self.batcher.close()


class RemoteModel:
    """The model in the model service (service.ModelRunner), reached over BentoML's client."""

    layout = "split"

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._in_flight = 0  # model calls awaiting an answer (one event loop: no lock needed)

    async def infer(self, records: list[RecordIn], values: list[dict[str, Any]], attempts: int = 3) -> Answers:
        """Call the model service, retrying a dropped connection (inference is idempotent). BentoML 1.4.40's
        client closes a replaced session under calls in flight (_bentoml_impl/client/proxy2.py,
        SessionManager); ModelRunner's runner_connection setting keeps one session, and this retry covers
        what is left (a model-service worker restarting). A call that would wait alone (nothing else in
        flight) skips the batcher, so a lone client pays nothing for it."""
        import aiohttp

        payload = [r.model_dump() for r in records]
        call = self.runner.to_async.infer if self._in_flight else self.runner.to_async.infer_now
        self._in_flight += 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    answers: Answers = await call(payload)
                    return answers
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    if attempt == attempts:
                        raise
                    log.warning("model call dropped (%s); retry %d/%d", exc, attempt, attempts - 1)
                    await asyncio.sleep(0.05 * attempt)
        finally:
            self._in_flight -= 1
        raise AssertionError("unreachable")

    async def explain(self, records: list[RecordIn], values: list[dict[str, Any]], target: str | None) -> Answers:
        answers: Answers = await self.runner.to_async.explain([r.model_dump() for r in records], target)
        return answers

    async def reload(self, tag: str) -> dict[str, Any]:
        meta: dict[str, Any] = await self.runner.to_async.reload(tag)
        return meta

    async def trial(self, kind: str, tag: str, bounds: dict[str, Any] | None, stop: bool) -> dict[str, Any]:
        state: dict[str, Any] = await self.runner.to_async.trial(kind, tag, bounds, stop)
        return state

    def stats(self) -> dict[str, Any]:
        return {"layout": self.layout}

    def close(self) -> None:
        pass
