"""Applying prepared files to the catalog, one transaction per batch under the domain's writer lock: new
records and files, links between identical contents, and quarantine (a copy of the bytes and the reason)
for every file that cannot be taken, never a silent drop."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mmops.catalog import Sample, SampleFile
from mmops.domains import DomainPack
from mmops.ingest.prepare import Prepared
from mmops.ingest.store import write_atomic
from mmops.quarantine import copy_path

log = logging.getLogger(__name__)


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


class Known(NamedTuple):
    """A committed file row, as much of it as ingest needs to decide (a few hundred bytes, not an ORM object:
    a domain's state holds one per file it ever ingested)."""

    id: int
    source_path: str
    blob_path: str | None


class KnownSample(NamedTuple):
    id: int
    split: str | None


class DomainState:
    """What the catalog holds about one batch's paths, records and file contents: loaded under the domain's
    writer lock before the batch is applied (committed rows of every writer, as `Known` tuples), then kept
    current as the batch adds rows (ORM objects until the commit). Per batch, never the whole domain: an
    ingest's memory does not grow with what the catalog already holds."""

    def __init__(self, domain: str):
        self.domain = domain
        self.samples: dict[str, Sample | KnownSample] = {}
        self.pairs: dict[tuple[str, str], SampleFile | Known] = {}  # (source path, landed hash) -> its row
        self.slots: dict[tuple[str, str], str] = {}  # (record key, modality) -> source path of its file
        self.twins: dict[tuple[str, str], SampleFile | Known] = {}  # (modality, content hash) -> first file stored
        self.touched: list[dict[str, object]] = []  # versions to update on known rows (a touched, unchanged file)

    def load(self, session: Session, batch: list[Prepared]) -> None:
        """Take in what is committed about this batch (call it under the domain's writer lock)."""
        for table in (self.samples, self.pairs, self.slots, self.twins):
            table.clear()
        paths = sorted({p.entry.rel for p in batch})
        keys = sorted({p.key for p in batch if p.key})
        contents = sorted({p.content for p in batch if p.content})
        for part in _parts(keys):
            for sid, key, split in session.execute(select(Sample.id, Sample.sample_key, Sample.split).where(
                    Sample.domain == self.domain, Sample.sample_key.in_(part))):
                self.samples[key] = KnownSample(sid, split)
        columns = (SampleFile.id, SampleFile.source_path, SampleFile.sha256, SampleFile.blob_path, SampleFile.status,
                   SampleFile.modality, SampleFile.duplicate_of, SampleFile.content_sha256, SampleFile.domain,
                   Sample.sample_key)
        # Each lookup driven by its index, so that a batch costs the same at any catalog size: files by (domain,
        # path, hash); a record's files from the record (a LEFT JOIN from files scans the domain's files); files
        # by content hash alone, their domain and status checked here (SQLite would pick the domain's or the
        # status's index for those terms, and scan)
        by_file = select(*columns).outerjoin(Sample, SampleFile.sample_id == Sample.id)
        by_record = (select(*columns).select_from(Sample).join(SampleFile, SampleFile.sample_id == Sample.id)
                     .where(Sample.domain == self.domain, SampleFile.status == "ok"))
        rows: dict[int, Any] = {}
        for query, column, values in ((by_file.where(SampleFile.domain == self.domain), SampleFile.source_path, paths),
                                      (by_record, Sample.sample_key, keys),
                                      (by_file, SampleFile.content_sha256, contents)):
            for part in _parts(values):
                rows.update((row.id, row) for row in session.execute(query.where(column.in_(part)))
                            if row.domain == self.domain)
        for _, row in sorted(rows.items()):  # in id order: the first stored file of a content is its twin
            self.note(row, row.sample_key, Known(row.id, row.source_path, row.blob_path))

    def note(self, row: Any, key: str | None, ref: SampleFile | Known) -> None:
        """Take in one file row (an ORM row, or a selected one with its columns)."""
        self.pairs[(row.source_path, row.sha256)] = ref
        if row.status == "ok" and key is not None and row.modality is not None:
            self.slots[(key, row.modality)] = row.source_path
            if row.duplicate_of is None and row.content_sha256:
                self.twins.setdefault((row.modality, row.content_sha256), ref)

    def add(self, session: Session, obj: SampleFile | Sample, key: str | None = None) -> None:
        session.add(obj)
        if isinstance(obj, SampleFile):
            self.note(obj, key, obj)

    def write_touched(self, session: Session) -> None:
        """Update the versions of known rows whose files were touched, not changed (one statement)."""
        if self.touched:
            session.execute(update(SampleFile), self.touched)
            self.touched.clear()


def _parts(values: list[str], size: int = 500) -> list[list[str]]:
    """IN lists of bounded length (SQLite caps the parameters of one statement)."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def _quarantine(session: Session, state: DomainState, prep: Prepared, reason: str, quarantine_root: Path,
                summary: IngestSummary) -> None:
    rel = prep.entry.rel
    copy = None
    if prep.read:
        copy = copy_path(quarantine_root, state.domain, prep.sha256, rel)
        write_atomic(copy, prep.data)
    row = SampleFile(
        domain=state.domain, modality=prep.modality, source_path=rel, sha256=prep.sha256,
        size_bytes=prep.entry.size, source_version=prep.entry.version, blob_path=None, status="quarantined",
        reason=reason if copy is not None else f"{reason} (not read, so not copied; the original stays in the "
        "landing area)", stats={},
    )
    state.add(session, row)
    summary.quarantined += 1
    summary.reasons[rel] = reason
    log.warning("quarantined %s/%s: %s", state.domain, rel, reason)


def apply(session: Session, pack: DomainPack, state: DomainState, prep: Prepared, data_root: Path,
           quarantine_root: Path, summary: IngestSummary) -> None:
    rel = prep.entry.rel
    known = state.pairs.get((rel, prep.sha256))
    if known is not None:  # same path, same bytes, new mtime (touched, copied again): nothing to do
        if prep.wrote_blob and (prep.modality, prep.content) not in state.twins:
            (data_root / prep.blob).unlink(missing_ok=True)  # it was quarantined before: keep data/ clean
        if isinstance(known, Known):
            state.touched.append({"id": known.id, "source_version": prep.entry.version})
        else:
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
            write_atomic(data_root / blob, prep.stored)
    if sample is None:
        sample = state.samples[prep.key] = Sample(domain=pack.name, sample_key=prep.key, split=prep.split)
        state.add(session, sample)
        summary.new_records += 1
    notes = prep.decoded.notes
    # Same content under another record (a template report, a re-used frame) is stored once and linked to
    # both; the link is recorded so that validation and audits can see it.
    row = SampleFile(
        **({"sample_id": sample.id} if isinstance(sample, KnownSample) else {"sample": sample}), domain=pack.name, modality=prep.modality, source_path=rel, sha256=prep.sha256,
        content_sha256=content, size_bytes=prep.entry.size, source_version=prep.entry.version, blob_path=blob,
        status="ok", duplicate_of=twin.id if twin is not None else None,
        reason=f"same content as {twin.source_path}" if twin is not None else None,
        stats=prep.decoded.stats, notes=notes or None,
    )
    state.add(session, row, prep.key)
    summary.ingested += 1
    summary.duplicates += twin is not None
