"""`ingest_domain`: one domain's new landed files through prepare (on the pool), publish (durable blobs) and
apply (catalog rows, one transaction per batch); the package docstring says how a run goes and what a crash
leaves behind."""

from __future__ import annotations

import functools
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path

from sqlalchemy.orm import Session

from mmops import faults
from mmops.catalog import writer_lock
from mmops.domains import DomainPack
from mmops.ingest import pool as ingest_pool
from mmops.ingest.apply import DomainState, IngestSummary, apply
from mmops.ingest.plan import BATCH_FILES, batches, pending
from mmops.ingest.prepare import Prepared
from mmops.ingest.prepare import prepare as prepare_file
from mmops.ingest.sources import Entry, Landing, unsafe_path
from mmops.ingest.store import publish, sweep_partial_writes

log = logging.getLogger(__name__)


def _store(session: Session, state: DomainState, prepared: list[Prepared], data_root: Path, quarantine_root: Path,
           summary: IngestSummary, clock: float) -> float:
    """One prepared batch made durable (its blobs published) and committed to the catalog. -> the clock."""
    publish([(p.staged, data_root / p.blob) for p in prepared if p.staged is not None], data_root)
    clock = summary._tick("sync", clock)
    # the catalog part (duplicate and slot checks against what is committed, rows, commit) holds the domain's
    # lock; reading, decoding and storing blobs run in parallel with other ingests
    with writer_lock(session, f"ingest-{state.domain}"):
        clock = summary._tick("wait", clock)
        state.load(session, prepared)
        for prep in prepared:
            apply(state, prep, data_root, quarantine_root, summary)
        state.write(session)
        faults.point("ingest.before_commit")
        session.commit()
    summary.batches += 1
    return summary._tick("commit", clock)


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
    batch; while a batch is applied to the catalog, the next one is being prepared (at most two batches of
    files held at once)."""
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
        pending_batches = iter(batches(todo, batch_files))
        ahead: deque[tuple[list[Entry], list[Future[list[Prepared]]]]] = deque()
        pool = ingest_pool.executor(executor, workers, len(todo), landing)
        try:
            if (first := next(pending_batches, None)) is not None:
                ahead.append((first, ingest_pool.submit(pool, prepare, first)))
            while ahead:
                batch, futures = ahead.popleft()
                prepared = [p for future in futures for p in future.result()]
                if (following := next(pending_batches, None)) is not None:  # prepared while this one commits
                    ahead.append((following, ingest_pool.submit(pool, prepare, following)))
                clock = _store(session, state, prepared, data_root, quarantine_root, summary,
                               summary._tick("process", clock))
                done += len(batch)
                if progress:
                    progress(done, len(todo))
        finally:  # a failed batch: what is still queued is dropped (a staged blob left is swept next time)
            pool.shutdown(wait=True, cancel_futures=True)
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    log.info("ingest %s: %d seen, %d ingested (%d duplicates), %d quarantined, %d skipped", pack.name,
             summary.seen, summary.ingested, summary.duplicates, summary.quarantined, summary.skipped)
    return summary
