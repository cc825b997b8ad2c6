"""Locks across processes on one machine: an exclusive advisory lock on a file (flock), released by the OS
when its holder dies, so a `kill -9` never leaves a stale lock behind. Re-entrant within a thread."""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_held: dict[tuple[Path, int], int] = {}  # (lock file, thread) -> depth


@contextmanager
def file_lock(path: Path, waiting_for: str = "") -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; when another process holds it, log what is awaited
    (`waiting_for`) and wait."""
    key = (path.resolve(), threading.get_ident())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for %s (lock %s)", waiting_for or "another process", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            fcntl.flock(fh, fcntl.LOCK_UN)
