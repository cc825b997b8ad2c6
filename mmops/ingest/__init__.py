"""Ingest: landed files -> content-addressed raw data + catalog rows; bad files -> quarantine with a reason.

A domain's landing area (a local folder or an fsspec URL, see `sources`) holds files whose path relative to
it matches the domain pack's `record_pattern` (by default `<modality>/<record key>.<ext>`); files with the
same key form one multimodal record, which may lack modalities. The labels file sits at its top.

How a run goes:

1. list the entries (no reads) and skip, without reading, every path whose size and version (mtime, ETag)
   the catalog already holds: re-ingesting an unchanged landing area costs one listing and one query;
2. in batches, read, hash, decode and check files on a thread pool (pure work, no catalog access);
3. per batch, blobs are written by the same workers (atomically, by content hash: `data/raw/<domain>/
   <modality>/<sha[:2]>/<sha>.<ext>`); then, holding the domain's writer lock (concurrent ingests of a domain
   are safe), quarantine copies, the catalog rows and one commit.

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
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops import faults
from mmops.atomic import temp_path
from mmops.catalog import Sample, SampleFile, writer_lock
from mmops.domains import SPLIT_NAMES, DomainPack, split_name
from mmops.errors import BadInputError
from mmops.ingest.sources import Entry, Landing, unsafe_path
from mmops.modalities import MAX_FILE_BYTES, Decoded, decode
from mmops.quarantine import copy_path

__all__ = ["IngestSummary", "Landing", "ingest_domain", "plan_batches", "sha256_bytes"]

log = logging.getLogger(__name__)

SAMPLE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
BATCH_FILES = 256
BATCH_BYTES = 256 * 1024 * 1024


@dataclass
class IngestSummary:
    domain: str
    seen: int = 0
    ingested: int = 0  # new files stored (duplicates included)
    skipped: int = 0  # already processed by an earlier run (ingested, quarantined or purged)
    duplicates: int = 0  # ingested files whose content another file already had (stored once, linked)
    quarantined: int = 0
    new_records: int = 0  # records that got their first file in this run
    batches: int = 0
    reasons: dict[str, str] = field(default_factory=dict)  # source path -> reason
    seconds: dict[str, float] = field(default_factory=dict)  # wall time: list, process (read..store), commit

    def _tick(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - since, 4)
        return now


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- planning: what is new ------------------------------------------------------------------------------


def _seen(session: Session, domain: str) -> dict[str, tuple[int, str | None]]:
    """source path -> (size, version) of its latest catalog row."""
    seen: dict[str, tuple[int, str | None]] = {}
    for rel, size, version in session.execute(
        select(SampleFile.source_path, SampleFile.size_bytes, SampleFile.source_version)
        .where(SampleFile.domain == domain).order_by(SampleFile.id)
    ):
        seen[rel] = (size, version)
    return seen


def pending(session: Session, pack: DomainPack, landing: Landing) -> tuple[list[Entry], int]:
    """-> (entries to process, number skipped because the catalog has them at this size and version)."""
    seen = _seen(session, pack.name)
    todo, skipped = [], 0
    for entry in landing.entries():
        if entry.rel == pack.labels_file or entry.rel.startswith((_ANNOTATIONS, GROUND_TRUTH)):
            continue
        if seen.get(entry.rel) == (entry.size, entry.version) and entry.version:
            skipped += 1
        else:
            todo.append(entry)
    return todo, skipped


_ANNOTATIONS = "annotations/"  # Label Studio exports dropped for import (see mmops.labeling)
GROUND_TRUTH = "ground_truth/"  # labels that arrive after serving, by record id (mmops.monitoring, labeling)


def batches(entries: Sequence[Entry], max_files: int = BATCH_FILES, max_bytes: int = BATCH_BYTES) -> list[list[Entry]]:
    out: list[list[Entry]] = []
    size = 0
    for entry in entries:
        if not out or len(out[-1]) >= max_files or size + entry.size > max_bytes:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += entry.size
    return out


def plan_batches(session: Session, pack: DomainPack, landing: Landing, max_files: int = BATCH_FILES) -> list[list[str]]:
    """The new or changed paths, in batches: what the Airflow DAG maps over (paths, never bytes)."""
    todo, _ = pending(session, pack, landing)
    return [[e.rel for e in batch] for batch in batches(todo, max_files)]


# --- preparing: pure work on a thread pool --------------------------------------------------------------


@dataclass
class Prepared:
    entry: Entry
    data: bytes = b""  # the landed bytes (kept for a quarantine copy)
    sha256: str = ""
    modality: str | None = None
    key: str | None = None
    ext: str = ""
    split: str | None = None  # the data set's own split, from the path
    decoded: Decoded | None = None
    reason: str | None = None
    read: bool = False  # False: refused unread (a link, an oversized file), so there is no copy to keep
    content: str = ""  # sha256 of the stored bytes
    blob: str = ""  # where they are stored, relative to data/
    wrote_blob: bool = False  # this ingest created the blob (and removes it if the file ends in quarantine)

    @property
    def stored(self) -> bytes:
        return self.decoded.stored if self.decoded and self.decoded.stored is not None else self.data


def _route(pack: DomainPack, pattern: re.Pattern[str], rel: str) -> tuple[str, str, str, str | None]:
    """-> (modality, record key, extension, split) of a landed path, or BadInputError saying why not. The
    split is the data set's own, when the record pattern names one (a folder per split)."""
    match = pattern.match(rel)
    if match is None:
        raise BadInputError(f"path does not match the domain's record pattern {pattern.pattern}")
    key, modality = pack.route(match)
    given = match.groupdict().get("split")
    split = split_name(given) if given else None
    if given and split is None:
        raise BadInputError(f"split folder {given!r} is none of {sorted(SPLIT_NAMES)}")
    if modality not in pack.modality_names:
        raise BadInputError(f"unknown modality {modality!r}; {pack.name} has {', '.join(pack.modality_names)}")
    ext = Path(rel).suffix.lower()
    spec = pack.modality(modality)
    if ext not in spec.extensions:
        raise BadInputError(f"extension {ext or '(none)'} not accepted for {modality} ({', '.join(spec.extensions)})")
    if not SAMPLE_KEY.fullmatch(key):
        raise BadInputError(f"record key {key!r} has characters outside [A-Za-z0-9_.-] or is too long")
    return modality, key, ext, split


def _prepare(pack: DomainPack, pattern: re.Pattern[str], landing: Landing, entry: Entry,
             phi_key: bytes | None, data_root: Path) -> Prepared:
    prep = Prepared(entry)
    try:
        if entry.problem:
            raise BadInputError(entry.problem)
        if entry.size > MAX_FILE_BYTES:
            raise BadInputError(f"file is {entry.size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        prep.data = landing.read(entry.rel, MAX_FILE_BYTES)
        prep.read = True
        prep.sha256 = sha256_bytes(prep.data)
        prep.modality, prep.key, prep.ext, prep.split = _route(pack, pattern, entry.rel)
        prep.decoded = decode(prep.data, pack.modality(prep.modality), phi_key=phi_key)
        stored = prep.stored
        prep.content = sha256_bytes(stored) if stored is not prep.data else prep.sha256
        prep.blob = f"raw/{pack.name}/{prep.modality}/{prep.content[:2]}/{prep.content}{prep.ext}"
        # Content-addressed, so writing before the catalog knows is safe: a crash leaves at most a blob that
        # the rerun writes again, byte for byte. Writing (and fsync) here spreads the I/O over the workers.
        prep.wrote_blob = _write_atomic(data_root / prep.blob, stored)
        # the decoded value is not needed any more (and would be pickled back from a worker process)
        prep.decoded = Decoded("", prep.decoded.stats, prep.decoded.stored, prep.decoded.notes)
    except BadInputError as exc:
        prep.reason = str(exc)
        prep.decoded = None
    if not prep.read:  # refused unread (a link, an oversized file): identify it by what was listed
        prep.sha256 = sha256_bytes(f"unread:{entry.rel}:{entry.size}:{entry.version}".encode())
    return prep


# --- applying: one transaction per batch ----------------------------------------------------------------


class _DomainState:
    """What the catalog knows about a domain, loaded once per run, kept current as rows are added and
    refreshed with what other writers committed (incrementally, by id)."""

    def __init__(self, session: Session, domain: str):
        self.domain = domain
        self.samples: dict[str, Sample] = {}
        self.pairs: dict[tuple[str, str], SampleFile] = {}
        self.slots: dict[tuple[str, str], str] = {}  # (record key, modality) -> source path of its file
        self.twins: dict[tuple[str, str], SampleFile] = {}  # (modality, content hash) -> first file stored
        self.last_file = self.last_sample = 0
        self.added: list[SampleFile | Sample] = []
        self.refresh(session)

    def refresh(self, session: Session) -> None:
        """Take in rows committed since the last look (call it under the domain's writer lock)."""
        for sample in session.scalars(select(Sample).where(Sample.domain == self.domain,
                                                           Sample.id > self.last_sample)):
            self.samples.setdefault(sample.sample_key, sample)
            self.last_sample = max(self.last_sample, sample.id)
        rows = session.execute(
            select(SampleFile, Sample.sample_key).outerjoin(Sample, SampleFile.sample_id == Sample.id)
            .where(SampleFile.domain == self.domain, SampleFile.id > self.last_file).order_by(SampleFile.id)
        )
        for row, key in rows:
            self.note(row, key)
            self.last_file = max(self.last_file, row.id)

    def note(self, row: SampleFile, key: str | None) -> None:
        self.pairs[(row.source_path, row.sha256)] = row
        if row.status == "ok" and key is not None and row.modality is not None:
            self.slots[(key, row.modality)] = row.source_path
            if row.duplicate_of is None and row.content_sha256:
                self.twins.setdefault((row.modality, row.content_sha256), row)

    def committed(self) -> None:
        """After a commit: our own new rows have ids now; no writer committed between our refresh and it."""
        for obj in self.added:
            if isinstance(obj, Sample):
                self.last_sample = max(self.last_sample, obj.id)
            else:
                self.last_file = max(self.last_file, obj.id)
        self.added.clear()


_made_dirs: set[Path] = set()


def _write_atomic(target: Path, data: bytes) -> bool:
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


def _sweep_partial_writes(root: Path) -> int:
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


def _quarantine(session: Session, state: _DomainState, prep: Prepared, reason: str, quarantine_root: Path,
                summary: IngestSummary) -> None:
    rel = prep.entry.rel
    copy = None
    if prep.read:
        copy = copy_path(quarantine_root, state.domain, prep.sha256, rel)
        _write_atomic(copy, prep.data)
    row = SampleFile(
        domain=state.domain, modality=prep.modality, source_path=rel, sha256=prep.sha256,
        size_bytes=prep.entry.size, source_version=prep.entry.version, blob_path=None, status="quarantined",
        reason=reason if copy is not None else f"{reason} (not read, so not copied; the original stays in the "
        "landing area)", stats={},
    )
    session.add(row)
    state.added.append(row)
    state.note(row, None)
    summary.quarantined += 1
    summary.reasons[rel] = reason
    log.warning("quarantined %s/%s: %s", state.domain, rel, reason)


def _apply(session: Session, pack: DomainPack, state: _DomainState, prep: Prepared, data_root: Path,
           quarantine_root: Path, summary: IngestSummary) -> None:
    rel = prep.entry.rel
    known = state.pairs.get((rel, prep.sha256))
    if known is not None:  # same path, same bytes, new mtime (touched, copied again): nothing to do
        if prep.wrote_blob and (prep.modality, prep.content) not in state.twins:
            (data_root / prep.blob).unlink(missing_ok=True)  # it was quarantined before: keep data/ clean
        known.source_version = prep.entry.version
        summary.skipped += 1
        return
    if prep.reason is not None or prep.decoded is None or prep.key is None or prep.modality is None:
        _quarantine(session, state, prep, prep.reason or "could not be decoded", quarantine_root, summary)
        return
    content = prep.content
    holder = state.slots.get((prep.key, prep.modality))
    sample = state.samples.get(prep.key)
    conflict = None
    if holder is not None:
        conflict = f"record {prep.key} already has a {prep.modality} file ({holder}); release or purge one of them"
    elif sample is not None and prep.split is not None and sample.split not in (None, prep.split):
        conflict = (f"record {prep.key} is in the {sample.split!r} split; this file sits in the {prep.split!r} "
                    "split's folder")
    if conflict is not None:
        if prep.wrote_blob and (prep.modality, content) not in state.twins:
            (data_root / prep.blob).unlink(missing_ok=True)  # nothing refers to it: no orphan left in data/
        _quarantine(session, state, prep, conflict, quarantine_root, summary)
        return
    twin = state.twins.get((prep.modality, content))
    if twin is not None and twin.blob_path:
        blob = twin.blob_path
        if twin.id is None:
            session.flush()
    else:
        blob = prep.blob
        if not prep.wrote_blob and not (data_root / blob).exists():
            # another ingest wrote these bytes, then dropped them when its file went to quarantine
            _write_atomic(data_root / blob, prep.stored)
    if sample is None:
        sample = state.samples[prep.key] = Sample(domain=pack.name, sample_key=prep.key, split=prep.split)
        session.add(sample)
        state.added.append(sample)
        summary.new_records += 1
    notes = prep.decoded.notes
    # Same content under another record (a template report, a re-used frame) is stored once and linked to
    # both; the link is recorded so that validation and audits can see it.
    row = SampleFile(
        sample=sample, domain=pack.name, modality=prep.modality, source_path=rel, sha256=prep.sha256,
        content_sha256=content, size_bytes=prep.entry.size, source_version=prep.entry.version, blob_path=blob,
        status="ok", duplicate_of=twin.id if twin is not None else None,
        reason=f"same content as {twin.source_path}" if twin is not None else None,
        stats=prep.decoded.stats, notes=notes or None,
    )
    session.add(row)
    state.added.append(row)
    state.note(row, prep.key)
    summary.ingested += 1
    summary.duplicates += twin is not None


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
        state = _DomainState(session, pack.name)
        session.commit()  # end the read transaction: each batch below is its own
        for root in (data_root / "raw" / pack.name, quarantine_root / pack.name):
            if (n := _sweep_partial_writes(root)):
                log.warning("removed %d partial files an interrupted ingest left in %s", n, root)
        done = 0
        prepare = functools.partial(_prepare, pack, pattern, landing, phi_key=phi_key, data_root=data_root)
        with _executor(executor, workers, len(todo), landing) as pool:
            for batch in batches(todo, batch_files):
                # reading, decoding and storing blobs run in parallel with other ingests; the catalog part
                # (duplicate and slot checks against what is committed, rows, commit) holds the domain's lock
                prepared = list(pool.map(prepare, batch, chunksize=16))
                clock = summary._tick("process", clock)
                with writer_lock(session, f"ingest-{pack.name}"):
                    clock = summary._tick("wait", clock)
                    state.refresh(session)
                    for prep in prepared:
                        _apply(session, pack, state, prep, data_root, quarantine_root, summary)
                    session.flush()
                    faults.point("ingest.before_commit")
                    session.commit()
                state.committed()
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


