"""Where ingest's per-file work (read, hash, decode, check, stage the blob: `prepare`) runs: on threads, or
on worker processes that spread the decoding, mostly Python-bound, over the cores.

Worker processes are forked from a forkserver that starts once per process with the worker's modules loaded
(`PRELOAD`: numpy, pydantic, the decoders' registry, the domain packs; ~0.3 s, paid by the first pool a
process opens). Later pools fork their workers from it in about 10 ms, so that each ingest of a few hundred
files can afford its own pool. Never plain `fork`: the ingesting process holds threads and database
connections. An in-memory fsspec filesystem is not shared with other processes, so it stays on threads.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

from mmops.ingest.prepare import Prepared
from mmops.ingest.sources import Entry, Landing

# `auto` decodes in worker processes from this many new files on: the first pool of a process waits for the
# forkserver's start (~0.3-0.8 s: worth it from ~1,000 files of ~0.5-1 ms each), later ones fork in ~10 ms
PROCESS_THRESHOLD = 1000
PROCESS_THRESHOLD_WARM = 64
_opened: list[bool] = []  # whether this process has opened a pool of processes (its forkserver runs)
CHUNK_FILES = 16  # files per task handed to a worker
# what the forkserver imports once for every worker; `__main__` first, so that workers do not each import the
# parent's main script again (the `mmops` CLI, a benchmark, Airflow's task runner)
PRELOAD = ("__main__", "mmops.ingest.prepare", "mmops.modalities.image", "mmops.modalities.sensor", "mmops.modalities.text",
           "PIL.Image")


def workers_for(workers: int | None) -> int:
    return workers or min(8, os.cpu_count() or 1)


def uses_processes(kind: str, workers: int | None, n_files: int, landing: Landing) -> bool:
    """Whether a run of `n_files` new files decodes in worker processes: `process` (from a landing area other
    processes can read), or `auto` with more than one worker and at least PROCESS_THRESHOLD files
    (PROCESS_THRESHOLD_WARM once the forkserver runs) from a local folder (a remote source's reads are I/O:
    threads overlap them)."""
    protocols = () if landing.fs is None else (landing.fs.protocol if isinstance(landing.fs.protocol, tuple)
                                               else (landing.fs.protocol,))
    if "memory" in protocols:
        return False  # an in-memory filesystem is not shared with other processes
    if not _main_importable():
        return False
    threshold = PROCESS_THRESHOLD_WARM if _opened else PROCESS_THRESHOLD
    return kind == "process" or (kind == "auto" and workers_for(workers) > 1 and n_files >= threshold
                                 and landing.local is not None)


def _main_importable() -> bool:
    """Whether worker processes can import the parent's `__main__` as multiprocessing requires: a module run
    with `-m`, a script file, or none (an interpreter prompt); not a script read from standard input."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def executor(kind: str, workers: int | None, n_files: int, landing: Landing) -> Executor:
    n = workers_for(workers)
    if uses_processes(kind, workers, n_files, landing):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))  # read when the server starts: once per process
        _opened.append(True)
        return ProcessPoolExecutor(n, mp_context=context)
    return ThreadPoolExecutor(n, thread_name_prefix="ingest")


def prepare_many(prepare: Callable[[Entry], Prepared], entries: Sequence[Entry]) -> list[Prepared]:
    """One worker task: a chunk of files (fewer hand-overs between processes than a file at a time)."""
    return [prepare(entry) for entry in entries]


def submit(pool: Executor, prepare: Callable[[Entry], Prepared], batch: Sequence[Entry]) -> list[Future[list[Prepared]]]:
    """A batch's files handed to the pool in chunks; their results, in order, are the futures' in order."""
    return [pool.submit(prepare_many, prepare, batch[i : i + CHUNK_FILES])
            for i in range(0, len(batch), CHUNK_FILES)]
