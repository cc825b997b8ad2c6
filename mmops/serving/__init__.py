"""Serving: the BentoML service, its request/response schemas, and packaging into the model store + bentos."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmops.config import Settings

LOAD_FAILED = "mmops: the model could not be loaded"  # the service's log line when loading its model fails


def bentoml_env(settings: Settings) -> None:
    """BentoML reads its home at import: point it inside the project before the first import."""
    os.environ.setdefault("BENTOML_HOME", str(settings.bentoml_home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
