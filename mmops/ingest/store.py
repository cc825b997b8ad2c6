"""Writing what ingest keeps: durable, atomic writes under content-addressed names, and the sweep of
temporary files a killed ingest left behind.

Blobs are written a batch at a time: each worker writes its files under temporary names beside their final
ones (`stage`), and `publish` makes the whole batch durable with one sync of the filesystem, renames the files
into place and syncs again (the renames), before the batch's catalog rows are committed. An fsync per file
costs ~1.5 ms on a plain disk, more than reading, hashing and decoding a small file together; two syncs per
batch of hundreds cost about what two of them do. After a crash a blob exists under its name only with its
bytes on disk (renamed after the first sync); a temporary file is swept by the next ingest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

from mmops import faults
from mmops.atomic import temp_path

log = logging.getLogger(__name__)
_made_dirs: set[Path] = set()


def _folder_of(target: Path) -> None:
    if target.parent not in _made_dirs:
        target.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(target.parent)


def write_atomic(target: Path, data: bytes) -> bool:
    """Write bytes durably under their final name (tmp file, fsync, rename). False when the target exists:
    content-addressed, an existing blob already holds these bytes."""
    tmp = stage(target, data, fsync=True)
    if tmp is None:
        return False
    tmp.replace(target)
    faults.point("ingest.after_write")
    return True


def stage(target: Path, data: bytes, fsync: bool = False) -> Path | None:
    """Write bytes under a temporary name beside `target`, durable only with `fsync` (`publish` makes a
    batch durable at once). None when the target exists: content-addressed, an existing blob already holds
    these bytes."""
    if target.exists():
        return None
    _folder_of(target)
    tmp = temp_path(target)
    try:
        fh = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:  # the folder went away since it was cached (a cleanup): make it again
        target.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, "wb")  # noqa: SIM115
    with fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return tmp


def publish(staged: list[tuple[Path, Path]], root: Path) -> None:
    """Make a batch of staged blobs ((temporary, target) pairs under `root`) durable, then give them their
    names, durably. One syncfs(2) of root's filesystem before and one after the renames; where there is no
    syncfs, an fsync per file before and per folder after."""
    moves: dict[Path, Path] = {}
    for tmp, target in staged:  # two files with the same bytes in one batch: one rename, the other dropped
        if moves.setdefault(target, tmp) != tmp:
            tmp.unlink(missing_ok=True)
    if not moves:
        return
    if not _syncfs(root):
        for tmp in moves.values():
            _fsync(tmp)
    for target, tmp in moves.items():
        tmp.replace(target)
        faults.point("ingest.after_write")
    if not _syncfs(root):
        for folder in {t.parent for t in moves}:
            _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc: list[ctypes.CDLL | None] = []


def _syncfs(path: Path) -> bool:
    """syncfs(2) of the filesystem holding `path` (Linux); False where it is unavailable or fails."""
    if not _libc:
        name = ctypes.util.find_library("c")
        _libc.append(ctypes.CDLL(name, use_errno=True) if name else None)
    syncfs = getattr(_libc[0], "syncfs", None)
    if syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) == 0:
            return True
        log.warning("syncfs of %s failed (errno %d): syncing file by file", path, ctypes.get_errno())
        return False
    finally:
        os.close(fd)


def sweep_partial_writes(root: Path) -> int:
    """Remove temporary files a killed ingest left behind (`.<name>.<pid>.tmp` of a process that is gone)."""
    removed = 0
    for tmp in root.rglob(".*.tmp") if root.is_dir() else []:
        try:
            pid = int(tmp.name.rsplit(".", 3)[-3])
            os.kill(pid, 0)
            continue  # its writer is still running
        except (ValueError, IndexError):
            pass
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
