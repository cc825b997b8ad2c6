"""Ingest's blob writes (mmops/ingest/store.py): a batch staged under temporary names, made durable and
renamed into place at once, on Linux's syncfs and on the file-by-file fallback."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from mmops.ingest import store


def _target(root: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return root / "raw" / "d" / "m" / sha[:2] / f"{sha}.bin"


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync per file"])
def test_a_staged_batch_appears_only_when_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     syncfs: bool) -> None:
    synced: list[str] = []
    real_fsync = store._fsync
    if not syncfs:
        monkeypatch.setattr(store, "_syncfs", lambda path: False)
        monkeypatch.setattr(store, "_fsync", lambda path: (synced.append(path.name), real_fsync(path)))
    blobs = [f"file {i}".encode() for i in range(20)]
    staged = [(tmp, _target(tmp_path, b)) for b in blobs if (tmp := store.stage(_target(tmp_path, b), b))]
    assert len(staged) == 20 and not any(t.exists() for _, t in staged)  # nothing under its name yet
    store.publish(staged, tmp_path)
    assert [t.read_bytes() for _, t in staged] == blobs
    assert not list(tmp_path.rglob(".*.tmp"))
    if not syncfs:  # every file before its rename, every folder after
        assert len(synced) == 20 + len({t.parent for _, t in staged})
    assert store.stage(_target(tmp_path, blobs[0]), blobs[0]) is None  # stored already: not written again


def test_the_same_bytes_staged_twice_in_a_batch_are_renamed_once(tmp_path: Path) -> None:
    """Each stage has its own temporary name, even by one thread twice (two batches in flight may stage the
    same content before either is published); publish renames one and removes the others."""
    data = b"one content, two files"
    target = _target(tmp_path, data)
    first = store.stage(target, data)
    other: list[Path | None] = []
    worker = threading.Thread(target=lambda: other.append(store.stage(target, data)))  # another worker
    worker.start()
    worker.join()
    again = store.stage(target, data)  # and the same worker once more
    assert first and other[0] and again and len({first, other[0], again}) == 3
    store.publish([(first, target), (other[0], target), (again, target)], tmp_path)
    assert target.read_bytes() == data and not list(tmp_path.rglob(".*.tmp"))


def test_syncfs_is_used_where_the_c_library_has_it(tmp_path: Path) -> None:
    import ctypes.util

    name = ctypes.util.find_library("c")
    has_it = bool(name) and hasattr(ctypes.CDLL(name), "syncfs")
    assert store._syncfs(tmp_path) is has_it
