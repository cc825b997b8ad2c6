"""The challenger on trial in the model service, beside the champion: none, a shadow (mirrored records, never
answering; shadow.py) or a canary (a sticky share of the records, answering; canary.py). One at a time:
starting one ends the other. The model service (service.ModelRunner) hands every batch to `predict`."""

from __future__ import annotations

import time
from typing import Any

from mmops.serving.canary import Bounds, Canary
from mmops.serving.shadow import Mirrored, Shadow
from mmops.serving.store import labels_of, loaded

KINDS = ("shadow", "canary")


class Trials:
    def __init__(self, log_dir: Any, domain: str) -> None:
        self.log_dir, self.domain = log_dir, domain  # where the shadow log goes (the prediction log's folder)
        self.shadow: Shadow | None = None
        self.canary: Canary | None = None

    def predict(self, current: tuple[Any, Any, dict[str, Any]], records: list[dict[str, Any]],
                values: list[dict[str, Any]], embeddings: bool) -> list[dict[str, Any]]:
        """The answers to a batch (decoded `values` of `records`) from the champion `current` and, for a
        canary's share, the canary; a shadow gets the batch after the champion answered."""
        task, predictor, meta = current
        shadow, canary = self.shadow, self.canary
        if canary is not None:
            def champion(vs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str | None]]:
                answers = task.serve(predictor, vs, embeddings=embeddings)
                return [{**a, **meta} for a in answers], labels_of(task, answers, meta)

            return canary.serve(records, values, champion)
        started = time.perf_counter()
        answers = task.serve(predictor, values, embeddings=embeddings)
        if shadow is not None:  # the challenger gets the same records, off this call (shadow.py)
            ms = (time.perf_counter() - started) * 1000 / max(len(values), 1)
            shadow.offer(Mirrored(time.time(), [r.get("id") for r in records], records, meta["model_version"],
                                  labels_of(task, answers, meta), ms))
        return [{**a, **meta} for a in answers]

    def start(self, kind: str, tag: str, bounds: dict[str, Any] | None = None, embeddings: bool = False,
              ) -> dict[str, Any]:
        """Put `tag` on trial as a shadow or a canary (in place of any trial before; its final counts returned)."""
        if kind == "shadow":
            new_shadow, new_canary = Shadow(tag, self.log_dir, self.domain, **(bounds or {})), None
        else:
            task, predictor, meta = loaded(tag)
            new_shadow = None
            new_canary = Canary(meta["model_version"], lambda vs: [
                {**a, **meta} for a in task.serve(predictor, vs, embeddings=embeddings)],
                lambda answers: labels_of(task, answers, meta), Bounds.model_validate(bounds or {}))
        stopped = self.stop()
        self.shadow, self.canary = new_shadow, new_canary
        return {**self.stats(), "stopped": stopped}

    def stop(self) -> dict[str, Any] | None:
        """End the trial; its final counts (None: there was none)."""
        shadow, canary = self.shadow, self.canary
        self.shadow = self.canary = None
        if shadow is not None:
            return {"kind": "shadow", **shadow.close()}
        if canary is not None:
            return {"kind": "canary", **canary.stats()}
        return None

    def stats(self) -> dict[str, Any]:
        if self.shadow is not None:
            return {"kind": "shadow", **self.shadow.stats()}
        if self.canary is not None:
            return {"kind": "canary", **self.canary.stats()}
        return {"kind": None}
