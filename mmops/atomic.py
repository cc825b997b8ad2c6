"""Atomic file writes: readers see the old file or the new one, never a torn one, and concurrent writers of
the same file (two runs of a stage at once) never share a temporary file."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

_serial = itertools.count()


def temp_path(path: Path) -> Path:
    """A temporary name beside `path`, unique to this process, thread and call: `.<name>.<pid>.<thread>-<n>.tmp`
    (a cleanup can tell from the pid whether its writer is still running; two writes of one target by one
    thread, in two batches in flight, never share a name)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}-{next(_serial)}.tmp")


def write_atomic(path: Path, data: bytes | str, fsync: bool = False) -> None:
    """Write `data` to `path` through a temporary file and a rename (fsync: durable before the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
