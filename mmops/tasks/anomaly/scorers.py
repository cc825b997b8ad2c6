"""The scorers a pack may choose for its series (sensor, audio) with `task_options.scorer`; images and video
are always scored by memory banks of patch features (features.py)."""

from __future__ import annotations

from typing import Any

SCORERS = ("memory_bank", "autoencoder")  # memory banks of raw windows (the default), or autoencoder.py's views


def scorer_of(pack: Any) -> str:
    """The pack's scorer for series."""
    return str(pack.task_options.get("scorer", SCORERS[0]))
