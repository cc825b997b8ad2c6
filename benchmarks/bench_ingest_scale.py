"""Ingest at scale: the per-file cost and the peak memory of one ingest of 10,000 and of 100,000 small files.

Data (composed, and said so): the medical pack's real files (medical-cxr: Indiana University chest X-ray
reports, CC BY-NC-ND 4.0; an MIT-BIH ECG record, ODC-By 1.0; scikit-image retina patches, BSD-3), copied
under new record keys until the landing area holds the asked number of files, each copy made distinct so
that every file is stored (not linked as a duplicate): a report gets a line naming its copy, an ECG strip its
timestamps shifted by the copy's number of seconds, a fundus PNG a text chunk naming its copy (its pixels
unchanged). Each size is ingested into a fresh project by a process of its own (its peak RSS is the
ingest's), with params.yaml's ingest settings.

Targets (issue 25): the per-file cost at 100,000 files within 1.5x of its cost at 10,000 (the catalog's
writes batched, the decoding spread over processes), and memory bounded: the peak RSS at 100,000 files
within 1.5x of that at 10,000.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_ingest_scale.py [--files 10000 100000]`).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import make_project  # noqa: E402
from record import save  # noqa: E402

DOMAIN, PACK = "medical", "medical-cxr"
DATA = ("composed from medical-cxr's real files (Indiana University chest X-ray reports, CC BY-NC-ND 4.0; an "
        "MIT-BIH ECG record, ODC-By 1.0; scikit-image retina patches, BSD-3), each copy made distinct")

RUN = """
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[2])  # benchmarks/, for record.peak_rss_mb
from record import peak_rss_mb
from mmops import pipeline
from mmops.catalog import get_engine
get_engine()
start = time.perf_counter()
summary = pipeline.ingest(sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "ingested": summary.ingested, "quarantined": summary.quarantined,
                  "duplicates": summary.duplicates, "phases": summary.seconds,
                  "peak_rss_mb": peak_rss_mb(),
                  "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _png_with_text(data: bytes, text: str) -> bytes:
    """The PNG with a tEXt chunk inserted before IEND (the pixels are unchanged)."""
    body = b"Comment\0" + text.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunk + data[end:]


def _shifted_csv(data: bytes, seconds: int) -> bytes:
    lines = data.decode("utf-8").splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        t, rest = line.split(",", 1)
        out.append(f"{float(t) + seconds:.6f},{rest}")
    return ("\n".join(out) + "\n").encode("utf-8")


def distinct_copy(rel: str, data: bytes, copy: int) -> tuple[str, bytes]:
    """A copy of a landed file under a new record key, with distinct bytes (see the module docstring)."""
    folder, name = rel.rsplit("/", 1)
    stem, ext = name.rsplit(".", 1)
    if ext == "png":
        data = _png_with_text(data, f"mmops composed copy {copy}")
    elif ext == "csv":
        data = _shifted_csv(data, copy)
    else:
        data = data + f"\nComposed copy {copy} of {stem} (mmops benchmark).\n".encode()
    return f"{folder}/{stem}-c{copy}.{ext}", data


def compose(source: Path, target: Path, files: int) -> int:
    """Land `files` distinct files made from the pack's files in `source` into `target`. -> bytes landed."""
    originals = sorted((p.relative_to(source).as_posix(), p.read_bytes()) for p in source.rglob("*")
                       if p.is_file() and p.name != "labels.csv")
    size, made, copy = 0, 0, 0
    while made < files:
        for rel, data in originals[: files - made]:
            name, body = distinct_copy(rel, data, copy)
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(body)
            size += len(body)
            made += 1
        copy += 1
    return size


def ingest_in_own_process(project: Path) -> dict[str, Any]:
    env = {**os.environ, "MMOPS_HOME": str(project)}
    out = subprocess.run([sys.executable, "-c", RUN, DOMAIN, str(Path(__file__).resolve().parent)], env=env, cwd=project, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs=2, type=int, default=[10_000, 100_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--executor", choices=["auto", "thread", "process"], default="auto")
    args = parser.parse_args()
    os.environ.setdefault("MMOPS_PSEUDONYM_KEY", "benchmark")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmops-bench-scale-") as tmp:
        src = Path(tmp) / "pack"
        src.mkdir()
        os.environ["MMOPS_HOME"] = str(src)
        from mmops.datasets.packs import pull

        pull(PACK, src / "landing")
        for n in args.files:
            landed = Path(tmp) / f"landed-{n}"
            size = compose(src / "landing" / DOMAIN, landed / DOMAIN, n)
            project = make_project(Path(tmp) / f"run-{n}", landed, args.executor, {DOMAIN: PACK}, move=True)
            got = ingest_in_own_process(project)
            row = {"files": n, "mbytes": round(size / 1e6, 1), "ingest_s": round(got["seconds"], 2),
                   "per_file_ms": round(1000 * got["seconds"] / n, 3), "peak_rss_mb": round(got["peak_rss_mb"]),
                   "workers_peak_rss_mb": round(got["workers_peak_rss_mb"]),
                   "ingested": got["ingested"], "quarantined": got["quarantined"],
                   "duplicates": got["duplicates"], "phases_s": {k: round(v, 2) for k, v in got["phases"].items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            subprocess.run(["rm", "-rf", str(project)], check=True)  # the next size needs the disk
    small, large = rows
    verdicts = {
        "every composed file ingested (none quarantined, none a duplicate)": all(
            r["ingested"] == r["files"] and not r["quarantined"] and not r["duplicates"] for r in rows),
        f"per-file cost at {large['files']:,} files within 1.5x of its cost at {small['files']:,}": (
            large["per_file_ms"] <= 1.5 * small["per_file_ms"]),
        f"peak RSS at {large['files']:,} files within 1.5x of that at {small['files']:,}": (
            large["peak_rss_mb"] <= 1.5 * small["peak_rss_mb"]),
    }
    print(json.dumps(verdicts, indent=2))
    save("ingest-scale", {"data": DATA, "sizes": rows}, verdicts)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
