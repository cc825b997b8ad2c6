"""Landing sources: where files arrive. A local folder, or any fsspec URL (s3://, gs://, az://, memory://)
whose credentials the environment provides (fsspec comes with DVC; install its s3fs/gcsfs extra for clouds).

A source lists entries cheaply (path, size, version: mtime or ETag, no reads) so that ingest can skip what
it has seen, and reads one file at a time. Every path is checked: `..`, absolute paths, backslashes and
control characters are refused (object stores allow such keys), and locally a symbolic link is never
followed and a path never resolves outside the root.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmops.errors import BadInputError, NotFoundError

log = logging.getLogger(__name__)

SYMLINK_REFUSED = "symbolic link: refused (it could point outside the landing folder)"
READ_ATTEMPTS = 3  # transient read errors (network, NFS) are retried with backoff, then raised


@dataclass(frozen=True, slots=True)  # slots: a listing of 100,000 new files holds 100,000 of these
class Entry:
    rel: str  # posix path relative to the domain's landing root
    size: int
    version: str  # changes whenever the content may have changed (mtime in ns, ETag, generation)
    problem: str | None = None  # why the entry is refused without reading it
    landed_at: float | None = None  # when it was landed (mtime, as a POSIX time), where the source says


def _landed_at(info: dict[str, Any]) -> float | None:
    """An object store's modification time as a POSIX time (a number or a datetime, under its own key)."""
    from datetime import datetime

    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return None


def _version(info: dict[str, Any]) -> str:
    """What changes when an object store's object changes (whichever the filesystem reports)."""
    keys = ("ETag", "etag", "generation", "md5", "mtime", "LastModified", "updated", "created")
    return next((str(info[k]) for k in keys if info.get(k) is not None), "")


_REFUSED_CHARS = re.compile(r"[\x00-\x1f\\]")


def unsafe_path(rel: str) -> str | None:
    """Why a landing-relative path is refused, or None when it is safe to use under a root."""
    if not rel or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return "absolute path: refused (it could point outside the landing folder)"
    if _REFUSED_CHARS.search(rel):
        return "path contains a backslash or a control character"
    if any(p in ("", ".", "..") for p in rel.split("/")):
        return "path escapes the landing folder ('..' or an empty part)"
    return None


class Landing:
    """The landing area of one domain."""

    def __init__(self, url: str | Path):
        text = str(url)
        self.url = text
        if "://" in text and not text.startswith("file://"):
            import fsspec

            self.fs: Any = fsspec.core.url_to_fs(text)[0]
            self.root = fsspec.core.url_to_fs(text)[1].rstrip("/")
            self.local: Path | None = None
        else:
            self.fs = None
            self.root = text.removeprefix("file://")
            self.local = Path(self.root)

    def __repr__(self) -> str:
        return f"Landing({self.url!r})"

    def exists(self) -> bool:
        return self.local.is_dir() if self.local is not None else bool(self.fs.isdir(self.root))

    def entries(self) -> list[Entry]:
        """Every file under the root (hidden files skipped), sorted; nothing is read."""
        if not self.exists():
            raise NotFoundError(f"no landing folder {self.url}; land files there or run `mmops data pull`")
        found = list(self._local_entries() if self.local is not None else self._remote_entries())
        # hidden files (.DS_Store, editors' temp files, partial uploads) are not data; a refused path is kept
        # whatever its name, so that `..` tricks end in quarantine, not in silence
        return sorted((e for e in found if e.problem or not any(p.startswith(".") for p in e.rel.split("/"))),
                      key=lambda e: e.rel)

    def _local_entries(self) -> Iterator[Entry]:
        """Files under the local root, by scandir (its entries carry their types: one lstat per file). A link
        (to a file or a folder) is listed, to be refused; a folder that cannot be read is logged, not
        skipped in silence."""
        assert self.local is not None
        folders = [(str(self.local), "")]
        while folders:
            folder, prefix = folders.pop()
            try:
                found = os.scandir(folder)
            except OSError as exc:
                log.warning("cannot list %s (%s): its files are not ingested until it can be read", folder, exc)
                continue
            with found:
                for item in found:
                    rel = prefix + item.name
                    if item.is_dir(follow_symlinks=False):
                        folders.append((item.path, rel + "/"))
                        continue
                    st = item.stat(follow_symlinks=False)
                    problem = None
                    if stat.S_ISLNK(st.st_mode):
                        problem = SYMLINK_REFUSED
                    elif not stat.S_ISREG(st.st_mode):
                        problem = "not a regular file"
                    yield Entry(rel, st.st_size, str(st.st_mtime_ns), problem or unsafe_path(rel), st.st_mtime)

    def _remote_entries(self) -> Iterator[Entry]:
        prefix = self.root + "/"
        for name, info in self.fs.find(self.root, detail=True, withdirs=False).items():
            name = name.rstrip("/")
            rel = name[len(prefix):] if name.startswith(prefix) else name
            yield Entry(rel, int(info.get("size") or 0), _version(info), unsafe_path(rel), _landed_at(info))

    def stat(self, rel: str) -> Entry:
        """The entry for one path (a batch handed over by a scheduler is re-checked, never trusted)."""
        problem = unsafe_path(rel)
        if problem:
            return Entry(rel, 0, "", problem)
        if self.local is not None:
            path = self.local / rel
            try:
                st = path.lstat()
            except FileNotFoundError:
                raise NotFoundError(f"{self.url}/{rel} is gone (moved or deleted since it was listed)") from None
            if stat.S_ISLNK(st.st_mode):
                return Entry(rel, st.st_size, str(st.st_mtime_ns),
                             SYMLINK_REFUSED)
            if not path.resolve().is_relative_to(self.local.resolve()):
                return Entry(rel, st.st_size, str(st.st_mtime_ns), "path escapes the landing folder")
            return Entry(rel, st.st_size, str(st.st_mtime_ns), None if stat.S_ISREG(st.st_mode) else "not a regular file",
                         st.st_mtime)
        try:
            info = self.fs.info(f"{self.root}/{rel}")
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}/{rel} is gone (moved or deleted since it was listed)") from None
        return Entry(rel, int(info.get("size") or 0), _version(info), None, _landed_at(info))

    def read(self, rel: str, limit: int) -> bytes:
        """The bytes of one entry (refusing unsafe paths and files over `limit`), retrying transient errors."""
        problem = unsafe_path(rel)
        if problem:
            raise BadInputError(problem)
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self._read_once(rel, limit)
            except (BadInputError, FileNotFoundError, IsADirectoryError, PermissionError):
                raise
            except OSError as exc:  # timeouts, resets, stale NFS handles: worth another try
                if attempt == READ_ATTEMPTS:
                    raise
                log.warning("read %s/%s failed (%s); retry %d of %d", self.url, rel, exc, attempt, READ_ATTEMPTS - 1)
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _read_once(self, rel: str, limit: int) -> bytes:
        if self.local is not None:
            path = self.local / rel
            # O_NOFOLLOW: a file swapped for a symlink after listing is still refused
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                if path.is_symlink():
                    raise BadInputError(SYMLINK_REFUSED) from None
                raise exc
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise BadInputError("not a regular file")
                data = fh.read(limit + 1)
        else:
            with self.fs.open(f"{self.root}/{rel}", "rb") as fh:
                data = fh.read(limit + 1)
        if len(data) > limit:
            raise BadInputError(f"file is over the {limit}-byte limit")
        return data
