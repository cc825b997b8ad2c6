"""Several workers in one service, each holding the model: a reload told to one reaches them all.

On a CPU, one worker's process is bound by its interpreter lock: at 32 clients the industrial model's worker
kept one of 2 cores busy and answered 382 records/s; two workers, each computing on one torch thread,
answered 615 (2026-12-07, docs/serving.md). `MMOPS_SERVE_WORKERS=n` runs n workers (BentoML's processes,
sharing the port), each with its own copy of the model.

The workers of one `bentoml serve` share a folder (`Peers.folder`: keyed by their parent, the process
manager, and its start time). The worker that answers POST /admin/reload loads the model, swaps it in, then
publishes the change as the next generation of `state.json` (under a file lock, replaced atomically) and
answers only once every worker has written, in `ack-<worker>.json`, that it applied that generation (or why
it could not): after a reload returns, every worker serves the new model. Each worker watches `state.json`
from a thread of its own (every POLL_S) and applies a newer generation; a worker the process manager
restarted (after a crash) starts from the state its peers serve, not from the model its environment names.

Trials (shadow, canary) judge a challenger on the traffic of one worker; with several they are refused (409).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmops.atomic import write_atomic

log = logging.getLogger("mmops.serving")

POLL_S = 0.2
STATE = "state.json"


def serve_workers() -> int:
    """MMOPS_SERVE_WORKERS: how many workers the service runs (default 1)."""
    raw = os.environ.get("MMOPS_SERVE_WORKERS", "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise ValueError(f"MMOPS_SERVE_WORKERS={raw!r}: expected a count from 1 to 64")
    return int(raw)


def shared_folder() -> Path:
    """The folder this service's workers share: MMOPS_SERVE_STATE, else one named by their parent process
    (BentoML's process manager) and its start time, so that a later service whose manager got the same pid
    does not read this one's state."""
    if os.environ.get("MMOPS_SERVE_STATE"):
        return Path(os.environ["MMOPS_SERVE_STATE"])
    import psutil

    parent = psutil.Process(os.getppid())
    return Path(tempfile.gettempdir()) / f"mmops-serve-{parent.pid}-{int(parent.create_time() * 1000)}"


class Peers:
    """This worker (`index`, 1-based) among `count` workers sharing `folder`."""

    def __init__(self, folder: Path, index: int, count: int) -> None:
        self.folder, self.index, self.count = folder, index, count
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.applied = 0  # the generation this worker serves
        self._stop = threading.Event()

    @contextmanager
    def _locked(self) -> Any:
        with (self.folder / "lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def state(self) -> dict[str, Any]:
        """What the workers are to serve: `generation` (0: nothing published yet) and `model` (a tag)."""
        try:
            state: dict[str, Any] = json.loads((self.folder / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"generation": 0}
        return state

    def publish(self, change: dict[str, Any]) -> int:
        """Make `change` (already applied here) the next generation; its number."""
        with self._locked():
            state = {**self.state(), **change}
            state["generation"] = int(state.get("generation", 0)) + 1
            write_atomic(self.folder / STATE, json.dumps(state))
        self.ack(state["generation"])
        return int(state["generation"])

    def ack(self, generation: int, error: str | None = None) -> None:
        self.applied = max(self.applied, generation)
        write_atomic(self.folder / f"ack-{self.index}.json", json.dumps(
            {"generation": generation, "error": error, "pid": os.getpid()}))

    def acks(self) -> dict[int, dict[str, Any]]:
        out = {}
        for i in range(1, self.count + 1):
            try:
                out[i] = json.loads((self.folder / f"ack-{i}.json").read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                out[i] = {"generation": 0, "error": None}
        return out

    def wait(self, generation: int, timeout: float) -> dict[int, str]:
        """Until every worker applied `generation`: {} then, else {worker: why not} (its error, or that it
        did not answer within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            acks = self.acks()
            behind = {i: a for i, a in acks.items() if a.get("generation", 0) < generation}
            failed = {i: str(a["error"]) for i, a in acks.items()
                      if a.get("generation", 0) == generation and a.get("error")}
            if not behind:
                return failed
            if time.monotonic() > deadline:
                return {**failed, **{i: f"did not apply it within {timeout:.0f} s" for i in behind}}
            time.sleep(POLL_S / 2)

    def watch(self, apply: Callable[[dict[str, Any]], None]) -> threading.Thread:
        """Apply each newer generation as it is published (`apply(state)`, on a thread of its own); an
        exception is this worker's error in its ack."""

        def run() -> None:
            seen = None
            while not self._stop.wait(POLL_S):
                try:
                    stamp = (self.folder / STATE).stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                if stamp == seen:
                    continue
                seen = stamp
                state = self.state()
                generation = int(state.get("generation", 0))
                if generation <= self.applied:
                    continue
                try:
                    apply(state)
                    self.ack(generation)
                except Exception as exc:  # said in the ack: the worker that published answers with it
                    log.error("worker %d could not apply generation %d: %s", self.index, generation, exc)
                    self.ack(generation, f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run, name="mmops-peers", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop.set()
