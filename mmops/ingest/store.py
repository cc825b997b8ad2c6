"""Writing what ingest keeps: durable, atomic writes under content-addressed names, and the sweep of
temporary files a killed ingest left behind."""

from __future__ import annotations

import os
from pathlib import Path

from mmops import faults
from mmops.atomic import temp_path

_made_dirs: set[Path] = set()


def write_atomic(target: Path, data: bytes) -> bool:
    """Write bytes durably under their final name (tmp file, fsync, rename). False when the target exists:
    content-addressed, an existing blob already holds these bytes."""
    if target.exists():
        return False
    if target.parent not in _made_dirs:
        target.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(target.parent)
    tmp = temp_path(target)
    try:
        fh = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:  # the folder went away since it was cached (a cleanup): make it again
        target.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, "wb")  # noqa: SIM115
    with fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(target)
    faults.point("ingest.after_write")
    return True


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
