"""How many threads torch computes the served model with, chosen from the first batches the service answers.

A light model's small operators gain nothing from torch's intra-op threads, and between operators those
threads (OpenMP's) spin on the cores that the service's event loop needs to parse, decode and answer the next
requests: the industrial model served 401 instead of 339 records/s at 32 clients and answered one client with
p99 7.3 instead of 14.4 ms on one thread (2 CPUs, 2026-12-07, docs/serving.md). A heavy model's convolutions
and matrix products do gain from threads, the more the more records a batch holds (the medical model, chosen
on a lone client's batches of one, served 27 instead of 46 records/s at 32 clients). So batches of fewer than
SMALL records and larger ones are calibrated apart: after WARMUP batches of a class (a model's first calls
allocate), its next CALIBRATION batches run alternately on one thread and on all (torch's count when the
service started, shared among the service's workers); then the service keeps all for that class only where
their median time per record was at least MARGIN lower, else one. A reload calibrates the new model again.

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

WARMUP = 2  # batches on all threads, not timed
# batches, alternating one thread and all, timed: the medical model's batches of 20 come about twice a second
# at 32 clients, so a calibration of 24 took 15 s, at a quarter below its throughput
CALIBRATION = 8
SMALL = 4  # batches of fewer records are calibrated apart from larger ones
SIZES = ("1-3", "4+")  # the size classes' names, as /metadata says them
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


class _Choice:
    """The calibration of one size class of batches."""

    def __init__(self, every: int, chosen: int | None) -> None:
        self.chosen = chosen  # None: calibrating (or, off the CPU, left alone)
        self.spent: dict[int, list[float]] = {1: [], every: []}  # count -> seconds per record of each batch
        self.calls = 0


class Threads:
    """Runs the model's calls (on its one thread) with the chosen torch thread count: chosen apart for small
    batches (fewer than SMALL records: a lone client's) and larger ones, where threads have more to share."""

    def __init__(self, device: str, fixed: int | None = None, every: int | None = None) -> None:
        """`every`: the count calibrated against one (default: torch's count now)."""
        import torch

        self.on_cpu = device == "cpu"
        self.all = every or torch.get_num_threads()
        self.fixed = fixed
        self.reset()

    def reset(self) -> None:
        """Calibrate again (a new model)."""
        chosen = self.fixed if self.fixed is not None else (1 if self.on_cpu and self.all == 1 else None)
        self.choices = {size: _Choice(self.all, chosen) for size in SIZES}

    def run(self, call: Callable[[], R], records: int) -> R:
        """`call()` on the current thread with the chosen count (while calibrating: alternately one and all,
        timed)."""
        import torch

        if not self.on_cpu and self.fixed is None:
            return call()
        choice = self.choices[SIZES[0] if records < SMALL else SIZES[1]]
        calibrating = choice.chosen is None and choice.calls >= WARMUP
        count = choice.chosen or (self.all if not calibrating or choice.calls % 2 else 1)
        if torch.get_num_threads() != count:  # per thread in OpenMP: set where the model computes
            torch.set_num_threads(count)
        if choice.chosen is not None:
            return call()
        started = time.perf_counter()
        out = call()
        if calibrating:
            choice.spent[count].append((time.perf_counter() - started) / max(records, 1))
        choice.calls += 1
        if choice.calls >= WARMUP + CALIBRATION:
            one, every = (statistics.median(choice.spent[n]) for n in (1, self.all))
            choice.chosen = self.all if every * (1 + MARGIN) <= one else 1
            log.info("torch threads for the served model's batches of %s records: %d (median ms per record on 1: "
                     "%.3f, on %d: %.3f)", next(k for k, v in self.choices.items() if v is choice), choice.chosen,
                     one * 1e3, self.all, every * 1e3)
        return out

    def stats(self) -> dict[str, Any]:
        return {"torch_threads": {k: c.chosen for k, c in self.choices.items()}, "of": self.all,
                "fixed": self.fixed is not None,
                "calibration_ms_per_record": {k: {str(n): round(statistics.median(v) * 1e3, 4)
                                                  for n, v in c.spent.items() if v} for k, c in self.choices.items()}}
