"""How many threads torch computes the served model with, chosen from the first batches the service answers.

A light model's small operators gain nothing from torch's intra-op threads, and between operators those
threads (OpenMP's) spin on the cores that the service's event loop needs to parse, decode and answer the next
requests: the industrial model served 401 instead of 339 records/s at 32 clients and answered one client with
p99 7.3 instead of 14.4 ms on one thread (2 CPUs, 2026-12-07, docs/serving.md). A heavy model's convolutions
and matrix products do gain from threads. So after WARMUP batches (a model's first calls allocate), the next
CALIBRATION batches run alternately on one thread and on all (torch's count when the service started); then
the service keeps all only where their median time per record was at least MARGIN lower, else one. A reload
calibrates the new model again.

MMOPS_TORCH_THREADS=<n> fixes the count (no calibration). Off the CPU (a GPU) the count is left alone.
`/metadata` (`serving.torch_threads`) says the count and what the calibration measured.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("mmops.serving")

WARMUP = 4  # batches on all threads, not timed
CALIBRATION = 24  # batches, alternating one thread and all, timed
MARGIN = 0.15  # all threads are kept only when at least this much faster per record than one
R = TypeVar("R")


def fixed_threads() -> int | None:
    """MMOPS_TORCH_THREADS as a count, or None (unset or `auto`: calibrate)."""
    raw = os.environ.get("MMOPS_TORCH_THREADS", "").strip().lower()
    if raw in ("", "auto"):
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"MMOPS_TORCH_THREADS={raw!r}: expected a positive count or `auto`")
    return int(raw)


class Threads:
    """Runs the model's calls (on its one thread) with the chosen torch thread count."""

    def __init__(self, device: str, fixed: int | None = None, every: int | None = None) -> None:
        """`every`: the count calibrated against one (default: torch's count now)."""
        import torch

        self.on_cpu = device == "cpu"
        self.all = every or torch.get_num_threads()
        self.fixed = fixed
        self.reset()

    def reset(self) -> None:
        """Calibrate again (a new model)."""
        self.chosen: int | None = self.fixed  # None: calibrating (or, off the CPU, left alone)
        if self.chosen is None and self.on_cpu and self.all == 1:
            self.chosen = 1
        self.spent: dict[int, list[float]] = {1: [], self.all: []}  # count -> seconds per record of each batch
        self.calls = 0

    def run(self, call: Callable[[], R], records: int) -> R:
        """`call()` on the current thread with the chosen count (while calibrating: alternately one and all,
        timed)."""
        import torch

        if not self.on_cpu and self.fixed is None:
            return call()
        calibrating = self.chosen is None and self.calls >= WARMUP
        count = self.chosen or (self.all if not calibrating or self.calls % 2 else 1)
        if torch.get_num_threads() != count:  # per thread in OpenMP: set where the model computes
            torch.set_num_threads(count)
        if self.chosen is not None:
            return call()
        started = time.perf_counter()
        out = call()
        if calibrating:
            self.spent[count].append((time.perf_counter() - started) / max(records, 1))
        self.calls += 1
        if self.calls >= WARMUP + CALIBRATION:
            self._choose()
        return out

    def _choose(self) -> None:
        one, every = (statistics.median(self.spent[n]) for n in (1, self.all))
        self.chosen = self.all if every * (1 + MARGIN) <= one else 1
        log.info("torch threads for the served model: %d (median ms per record on 1: %.3f, on %d: %.3f)",
                 self.chosen, one * 1e3, self.all, every * 1e3)

    def stats(self) -> dict[str, Any]:
        ms = {str(k): round(statistics.median(v) * 1e3, 4) for k, v in self.spent.items() if v}
        return {"torch_threads": self.chosen, "of": self.all, "fixed": self.fixed is not None,
                "calibration_ms_per_record": ms}
