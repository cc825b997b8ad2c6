"""The challenger on trial in the model service, beside the champion: none, a shadow (mirrored records, never
answering; shadow.py) or a canary (a sticky share of the records, answering; canary.py). One at a time:
starting one ends the other. The served model (model.ServedModel) hands every batch to `predict`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mmops.serving.canary import Bounds, Canary
from mmops.serving.schemas import RecordIn
from mmops.serving.shadow import Mirrored, Shadow
from mmops.serving.store import labels_of, loaded

KINDS = ("shadow", "canary")


class Trials:
    def __init__(self, log_dir: Any, domain: str) -> None:
        self.log_dir, self.domain = log_dir, domain  # where the shadow log goes (the prediction log's folder)
        self.trial: Shadow | Canary | None = None

    def predict(self, current: tuple[Any, Any, dict[str, Any]], records: Sequence[RecordIn | dict[str, Any]],
                values: list[dict[str, Any]], embeddings: bool) -> list[dict[str, Any]]:
        """The answers to a batch (decoded `values` of `records`, validated records or the JSON of them) from
        the champion `current` and, for a canary's share, the canary; a shadow gets the batch after the
        champion answered."""
        task, predictor, meta = current
        trial = self.trial
        if isinstance(trial, Canary):
            def champion(vs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str | None]]:
                answers = task.serve(predictor, vs, embeddings=embeddings)
                return [{**a, **meta} for a in answers], labels_of(task, answers, meta)

            return trial.serve([r.get("id") if isinstance(r, dict) else r.id for r in records], values, champion)
        started = time.perf_counter()
        answers = task.serve(predictor, values, embeddings=embeddings)
        if isinstance(trial, Shadow):  # the challenger gets the same records, off this call (shadow.py)
            ms = (time.perf_counter() - started) * 1000 / max(len(values), 1)
            wire = [r if isinstance(r, dict) else r.model_dump() for r in records]
            trial.offer(Mirrored(time.time(), wire, meta["model_version"], labels_of(task, answers, meta), ms))
        return [{**a, **meta} for a in answers]

    def start(self, kind: str, tag: str, bounds: dict[str, Any] | None = None, embeddings: bool = False,
              ) -> dict[str, Any]:
        """Put `tag` on trial as a shadow or a canary (in place of any trial before; its final counts returned)."""
        new: Shadow | Canary
        if kind == "shadow":
            new = Shadow(tag, self.log_dir, self.domain, **(bounds or {}))
        else:
            task, predictor, meta = loaded(tag)
            new = Canary(meta["model_version"], lambda vs: [
                {**a, **meta} for a in task.serve(predictor, vs, embeddings=embeddings)],
                lambda answers: labels_of(task, answers, meta), Bounds.model_validate(bounds or {}))
        stopped = self.stop()
        self.trial = new
        return {**self.stats(), "stopped": stopped}

    def stop(self) -> dict[str, Any] | None:
        """End the trial; its final counts (None: there was none)."""
        trial, self.trial = self.trial, None
        if trial is None:
            return None
        return {"kind": _kind(trial), **(trial.close() if isinstance(trial, Shadow) else trial.stats())}

    def stats(self) -> dict[str, Any]:
        trial = self.trial
        return {"kind": None} if trial is None else {"kind": _kind(trial), **trial.stats()}


def _kind(trial: Shadow | Canary) -> str:
    return "shadow" if isinstance(trial, Shadow) else "canary"
