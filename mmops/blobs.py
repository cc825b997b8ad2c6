"""The content-addressed store of ingested files: `data/raw/<domain>/<modality>/<sha[:2]>/<sha><.ext>`.

Every reader of a blob goes through `read_blob`: a reference taken from a manifest or the catalog (files
that travel: `dvc pull`, a restored backup, a shared database) must name a blob of this layout, inside
`data/`, and not a symlink, or it is refused with BadInputError. A tampered `"blob": "../../etc/shadow"` or
a symlink planted in the store reads nothing.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from mmops.errors import BadInputError, NotFoundError

BLOB_REF = re.compile(r"^raw/[a-z][a-z0-9_]{0,63}/[a-z][a-z0-9_]{0,63}/([0-9a-f]{2})/\1[0-9a-f]{62}(\.[a-z0-9]{1,16})?$")


def blob_path(data_root: Path, ref: str) -> Path:
    """The path of a blob reference under `data_root`; BadInputError if `ref` is not one."""
    if not isinstance(ref, str) or not BLOB_REF.fullmatch(ref):
        raise BadInputError(f"{ref!r} is not a blob of the data store (raw/<domain>/<modality>/<sha>...): refused")
    return data_root / ref


def read_blob(data_root: Path, ref: str) -> bytes:
    """The bytes of a blob, read without following a symlink at any level of the store."""
    path = blob_path(data_root, ref)
    root = data_root.resolve()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise NotFoundError(f"blob {ref} is missing from {data_root} (run `dvc pull` or `mmops ingest`)") from None
    except OSError:
        if path.is_symlink():
            raise BadInputError(f"blob {ref} is a symlink: refused") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        # a symlinked folder on the way (data/raw/<domain> -> elsewhere) is caught by where the open file is
        real = Path(os.readlink(f"/proc/self/fd/{fh.fileno()}")) if os.path.exists("/proc/self/fd") \
            else path.resolve()
        if not real.is_relative_to(root) or not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise BadInputError(f"blob {ref} resolves outside {data_root} or is not a regular file: refused")
        return fh.read()
