"""Packaged models as the service loads them: which one it serves (MMOPS_MODEL_TAG, else the domain's latest in
the BentoML model store), a model's task, predictor and answer metadata, and a failed load said at once."""

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


def served_model() -> Any:
    """The BentoML model this process serves."""
    return bentoml.models.get(model_tag())
