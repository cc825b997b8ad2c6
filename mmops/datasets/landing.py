"""How a bundled pack writes its landing folder: its files as a site would drop them, and labels.csv (one
module owns that file's format). Unchanged files are not rewritten, so a re-pull keeps mtimes and hashes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mmops.atomic import write_atomic


def write_bytes(path: Path, data: bytes) -> bool:
    """Write atomically, only when the content differs (keeps mtimes stable for re-pulls)."""
    if path.exists() and path.read_bytes() == data:
        return False
    write_atomic(path, data)
    return True


def labels_csv_bytes(labels: dict[str, str], splits: dict[str, str] | None = None) -> bytes:
    """sample_id,label (and split, when the data set has its own)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sample_id", "label", *(["split"] if splits else [])])
    for key in sorted(labels):
        writer.writerow([key, labels[key], *([splits[key]] if splits else [])])
    return buf.getvalue().encode("utf-8")


def finish(root: Path, files: dict[str, bytes], labels: dict[str, str],
           splits: dict[str, str] | None = None) -> dict[str, int]:
    files["labels.csv"] = labels_csv_bytes(labels, splits)
    written = sum(write_bytes(root / rel, data) for rel, data in sorted(files.items()))
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {"records": len(labels), "files_written": written, **{f"class:{k}": v for k, v in counts.items()}}
