"""Ingest: landed files -> content-addressed raw data + catalog rows; bad files -> quarantine with a reason.

A domain's landing area (a local folder or an fsspec URL, see `sources`) holds files whose path relative to
it matches the domain pack's `record_pattern` (by default `<modality>/<record key>.<ext>`); files with the
same key form one multimodal record, which may lack modalities. The labels file sits at its top.

How a run goes:

1. list the entries (no reads) and skip, without reading, every path whose size and version (mtime, ETag)
   the catalog already holds: re-ingesting an unchanged landing area costs one listing and one query;
2. in batches, read, hash, decode and check files on a thread pool (pure work, no catalog access);
3. per batch, blobs are written by the same workers under temporary names, then made durable together and
   renamed into place (by content hash: `data/raw/<domain>/<modality>/<sha[:2]>/<sha>.<ext>`; see `store`);
   then, holding the domain's writer lock (concurrent ingests of a domain are safe), quarantine copies, the
   catalog rows and one commit.

A crash at any point (kill -9 included) loses at most the uncommitted batch: its blobs may exist without rows,
and the rerun, seeing no rows, processes the same files again and writes the same rows. Reruns never
duplicate (rows are unique on path + landed hash) and never miss (a path is skipped only when its row
exists).

Bad input never stops a batch and is never dropped: each bad file's bytes are copied to
`quarantine/<domain>/` and its reason recorded (`mmops quarantine list`). Quarantine keeps the landed bytes
unchanged, PHI included: restrict it as you restrict landing/.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.orm import Session

from mmops import faults
from mmops.catalog import writer_lock
from mmops.domains import DomainPack
from mmops.ingest.apply import DomainState, IngestSummary, apply
from mmops.ingest.plan import BATCH_FILES, batches, pending, plan_batches
from mmops.ingest.prepare import prepare as prepare_file
from mmops.ingest.prepare import sha256_bytes
from mmops.ingest.sources import Entry, Landing, unsafe_path
from mmops.ingest.store import publish, sweep_partial_writes

__all__ = ["IngestSummary", "Landing", "ingest_domain", "plan_batches", "sha256_bytes"]

log = logging.getLogger(__name__)

PROCESS_THRESHOLD = 2000  # `auto` decodes in worker processes from this many new files on (start-up ~0.6 s)


def _executor(kind: str, workers: int | None, n_files: int, landing: Landing) -> Executor:
    """Threads overlap I/O; processes also spread the decoding (Python-bound for CSV and text) over the
    cores, at ~0.6 s of start-up. `auto` picks processes for large runs from a local landing folder."""
    n = workers or min(8, os.cpu_count() or 1)
    use_processes = kind == "process" or (kind == "auto" and n > 1 and n_files >= PROCESS_THRESHOLD
                                          and landing.local is not None)
    protocols = () if landing.fs is None else (landing.fs.protocol if isinstance(landing.fs.protocol, tuple)
                                               else (landing.fs.protocol,))
    if use_processes and "memory" in protocols:
        use_processes = False  # an in-memory filesystem is not shared with other processes
    if use_processes:
        import multiprocessing

        # forkserver: never fork a process that holds threads and database connections
        return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver"))
    return ThreadPoolExecutor(n)


def ingest_domain(
    session_factory: Callable[[], Session],
    pack: DomainPack,
    landing: Landing,
    data_root: Path,
    quarantine_root: Path,
    *,
    phi_key: bytes | None = None,
    paths: Iterable[str] | None = None,
    workers: int | None = None,
    executor: str = "auto",
    batch_files: int = BATCH_FILES,
    progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Ingest what is new under the landing area (or exactly `paths`, a planned batch). One transaction per
    batch; see the module docstring for what a crash leaves behind."""
    pattern = re.compile(pack.record_pattern)
    summary = IngestSummary(domain=pack.name)
    session = session_factory()
    clock = time.perf_counter()
    try:
        if paths is None:
            todo, summary.skipped = pending(session, pack, landing)
            summary.seen = len(todo) + summary.skipped
        else:
            todo = [landing.stat(rel) if not unsafe_path(rel) else Entry(rel, 0, "", unsafe_path(rel))
                    for rel in paths]
            summary.seen = len(todo)
        # In landing order (then by path), so that of two files with the same content the one landed first is
        # the original and the later copy is marked the duplicate, whatever their names
        todo.sort(key=lambda e: (e.landed_at if e.landed_at is not None else float("inf"), e.rel))
        clock = summary._tick("list", clock)
        if not todo:  # the common case of a scheduled run: nothing new, and nothing more to load
            session.commit()
            return summary
        state = DomainState(pack.name)
        session.commit()  # end the read transaction: each batch below is its own
        for root in (data_root / "raw" / pack.name, quarantine_root / pack.name):
            if (n := sweep_partial_writes(root)):
                log.warning("removed %d partial files an interrupted ingest left in %s", n, root)
        done = 0
        prepare = functools.partial(prepare_file, pack, pattern, landing, phi_key=phi_key, data_root=data_root)
        with _executor(executor, workers, len(todo), landing) as pool:
            for batch in batches(todo, batch_files):
                # reading, decoding and storing blobs run in parallel with other ingests; the catalog part
                # (duplicate and slot checks against what is committed, rows, commit) holds the domain's lock
                prepared = list(pool.map(prepare, batch, chunksize=16))
                clock = summary._tick("process", clock)
                publish([(p.staged, data_root / p.blob) for p in prepared if p.staged is not None], data_root)
                clock = summary._tick("sync", clock)
                with writer_lock(session, f"ingest-{pack.name}"):
                    clock = summary._tick("wait", clock)
                    state.load(session, prepared)
                    for prep in prepared:
                        apply(session, pack, state, prep, data_root, quarantine_root, summary)
                    state.write_touched(session)
                    session.flush()
                    faults.point("ingest.before_commit")
                    session.commit()
                clock = summary._tick("commit", clock)
                summary.batches += 1
                done += len(batch)
                if progress:
                    progress(done, len(todo))
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    log.info("ingest %s: %d seen, %d ingested (%d duplicates), %d quarantined, %d skipped", pack.name,
             summary.seen, summary.ingested, summary.duplicates, summary.quarantined, summary.skipped)
    return summary


