"""Packaged models as the service loads them: which one it serves (MMOPS_MODEL_TAG, else the domain's latest in
the BentoML model store), a model's task, predictor and answer metadata, a failed load said at once, and the
labels a model's raw answers amount to (what a shadow logs, what a canary is judged on)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bentoml

from mmops.serving import LOAD_FAILED
from mmops.tasks import task_of


def model_tag() -> str:
    return os.environ.get("MMOPS_MODEL_TAG") or f"mmops-{os.environ.get('MMOPS_DOMAIN', 'security')}:latest"


@contextmanager
def said_if_it_fails(tag: str) -> Iterator[None]:
    """A failed model load said on stderr (the log) for client.wait_ready, not left to BentoML's restarts."""
    try:
        yield
    except Exception as exc:
        print(f"{LOAD_FAILED} {tag}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise


def loaded(tag: str) -> tuple[Any, Any, dict[str, Any]]:
    """(task, predictor, meta) of a packaged model, as the model service holds it."""
    from mmops.card import read_card

    bento_model = bentoml.models.get(tag)
    card = read_card(Path(bento_model.path))
    task = task_of(card.pack.task)
    meta = {"model_version": str(bento_model.tag), "checkpoint_sha256": card.checkpoint_sha256,
            "classes": card.classes}
    return task, task.load(Path(bento_model.path)), meta


def labeler(tag: str) -> tuple[str, Any]:
    """The packaged model `tag` as the shadow process runs it, on one torch thread: its version, and a function
    from records (as clients send them) to its labels."""
    import torch

    from mmops.serving.schemas import decode_record

    torch.set_num_threads(1)
    task, predictor, meta = loaded(tag)

    def label(records: list[dict[str, Any]]) -> list[str | None]:
        values = [decode_record(predictor.pack, r, stats=False)[0] for r in records]
        return labels_of(task, task.serve(predictor, values, embeddings=False), meta)

    return str(meta["model_version"]), label


def labels_of(task: Any, answers: list[dict[str, Any]], meta: dict[str, Any]) -> list[str | None]:
    """Each raw answer's label as the API would give it (None: no label, e.g. an output that is not a number)."""
    from mmops.errors import BadInputError

    labels: list[str | None] = []
    for a in answers:
        try:
            labels.append(str(task.answer({**a, **meta}, meta["classes"])["label"]))
        except BadInputError:
            labels.append(None)
    return labels
