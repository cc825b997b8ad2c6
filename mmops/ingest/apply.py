"""Applying prepared files to the catalog, one transaction per batch under the domain's writer lock: new
records and files, links between identical contents, and quarantine (a copy of the bytes and the reason)
for every file that cannot be taken, never a silent drop."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from mmops.catalog import Sample, SampleFile
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


@dataclass(eq=False)
class NewSample:
    """A record this batch adds: its row, inserted when the batch is written."""

    row: dict[str, Any]
    id: int | None = None

    @property
    def split(self) -> str | None:
        return cast(str | None, self.row["split"])


@dataclass(eq=False)
class NewFile:
    """A file row this batch adds, inserted when the batch is written (with the ids of its record and, for a
    duplicate of another file of the batch, of that file)."""

    row: dict[str, Any]
    sample: NewSample | KnownSample | None = None
    twin: NewFile | None = None  # the batch's own file whose content this one repeats
    id: int | None = None

    @property
    def source_path(self) -> str:
        return cast(str, self.row["source_path"])

    @property
    def blob_path(self) -> str | None:
        return cast(str | None, self.row["blob_path"])


class DomainState:
    """What the catalog holds about one batch's paths, records and file contents: loaded under the domain's
    writer lock before the batch is applied (committed rows of every writer, as `Known` tuples), then kept
    current as the batch adds rows (`NewSample`, `NewFile`: plain rows, inserted in a few statements by
    `write`). Per batch, never the whole domain: an ingest's memory does not grow with what the catalog
    already holds."""

    def __init__(self, domain: str):
        self.domain = domain
        self.samples: dict[str, NewSample | KnownSample] = {}
        self.pairs: dict[tuple[str, str], NewFile | Known] = {}  # (source path, landed hash) -> its row
        self.slots: dict[tuple[str, str], str] = {}  # (record key, modality) -> source path of its file
        self.twins: dict[tuple[str, str], NewFile | Known] = {}  # (modality, content hash) -> first file stored
        self.touched: list[dict[str, object]] = []  # versions to update on known rows (a touched, unchanged file)
        self.new_samples: list[NewSample] = []
        self.new_files: list[NewFile] = []

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
            self.note(row._mapping, row.sample_key, Known(row.id, row.source_path, row.blob_path))

    def note(self, row: Mapping[str, Any], key: str | None, ref: NewFile | Known) -> None:
        """Take in one file row (a new one, or a selected one with its columns)."""
        self.pairs[(row["source_path"], row["sha256"])] = ref
        if row["status"] == "ok" and key is not None and row["modality"] is not None:
            self.slots[(key, row["modality"])] = row["source_path"]
            if row["duplicate_of"] is None and row["content_sha256"]:
                self.twins.setdefault((row["modality"], row["content_sha256"]), ref)

    def add_sample(self, row: dict[str, Any]) -> NewSample:
        sample = NewSample(row)
        self.new_samples.append(sample)
        self.samples[row["sample_key"]] = sample
        return sample

    def add_file(self, new: NewFile, key: str | None = None) -> None:
        self.new_files.append(new)
        self.note(new.row, key, new)

    def write(self, session: Session) -> None:
        """Insert the batch's new rows and update the versions of known rows whose files were touched, not
        changed. Each table's rows go in one executemany (the DB-API's own loop: no statement per row), then
        the ids the next rows need are read back by their unique keys: the new records' for their files, and
        the files' that other files of the batch duplicate, whose duplicates go in last."""
        if self.new_samples:
            session.execute(insert(Sample), [s.row for s in self.new_samples])
            ids: dict[str, int] = {}
            for part in _parts([s.row["sample_key"] for s in self.new_samples]):
                ids.update((key, sid) for sid, key in session.execute(select(Sample.id, Sample.sample_key).where(
                    Sample.domain == self.domain, Sample.sample_key.in_(part))))
            for sample in self.new_samples:
                sample.id = ids[sample.row["sample_key"]]
        originals = [f for f in self.new_files if f.twin is None]
        repeats = [f for f in self.new_files if f.twin is not None]
        for new in self.new_files:
            if new.sample is not None:
                new.row["sample_id"] = new.sample.id
        if originals:
            session.execute(insert(SampleFile), [f.row for f in originals])
        if repeats:
            twins = {f.twin.source_path: f.twin for f in repeats if f.twin is not None}
            for part in _parts(sorted(twins)):
                for fid, path, sha in session.execute(
                        select(SampleFile.id, SampleFile.source_path, SampleFile.sha256).where(
                            SampleFile.domain == self.domain, SampleFile.source_path.in_(part))):
                    if twins[path].row["sha256"] == sha:
                        twins[path].id = fid
            for new in repeats:
                assert new.twin is not None and new.twin.id is not None
                new.row["duplicate_of"] = new.twin.id
            session.execute(insert(SampleFile), [f.row for f in repeats])
        if self.touched:
            session.execute(update(SampleFile), self.touched)
        self.new_samples.clear()
        self.new_files.clear()
        self.touched.clear()


def _parts(values: list[str], size: int = 500) -> list[list[str]]:
    """IN lists of bounded length (SQLite caps the parameters of one statement)."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def _file_row(state: DomainState, prep: Prepared, **columns: Any) -> dict[str, Any]:
    """A files row: every column in every row (rows inserted together share their keys)."""
    return {"sample_id": None, "domain": state.domain, "modality": prep.modality, "source_path": prep.entry.rel,
            "sha256": prep.sha256, "content_sha256": None, "size_bytes": prep.entry.size,
            "source_version": prep.entry.version, "blob_path": None, "reason": None, "duplicate_of": None,
            "notes": None, **columns}


def _quarantine(state: DomainState, prep: Prepared, reason: str, quarantine_root: Path,
                summary: IngestSummary) -> None:
    rel = prep.entry.rel
    copy = None
    if prep.read:
        copy = copy_path(quarantine_root, state.domain, prep.sha256, rel)
        write_atomic(copy, prep.data)
    state.add_file(NewFile(_file_row(
        state, prep, status="quarantined", stats={},
        reason=reason if copy is not None else f"{reason} (not read, so not copied; the original stays in the "
        "landing area)")))
    summary.quarantined += 1
    summary.reasons[rel] = reason
    log.warning("quarantined %s/%s: %s", state.domain, rel, reason)


def apply(state: DomainState, prep: Prepared, data_root: Path, quarantine_root: Path,
          summary: IngestSummary) -> None:
    """Decide what one prepared file becomes (a new file row, a duplicate's link, a quarantine record, or
    nothing for a file the catalog has) and add it to the state; `DomainState.write` inserts the batch."""
    rel = prep.entry.rel
    known = state.pairs.get((rel, prep.sha256))
    if known is not None:  # same path, same bytes, new mtime (touched, copied again): nothing to do
        if prep.wrote_blob and (prep.modality, prep.content) not in state.twins:
            (data_root / prep.blob).unlink(missing_ok=True)  # it was quarantined before: keep data/ clean
        if isinstance(known, Known):
            state.touched.append({"id": known.id, "source_version": prep.entry.version})
        else:
            known.row["source_version"] = prep.entry.version
        summary.skipped += 1
        return
    if prep.reason is not None or prep.decoded is None or prep.key is None or prep.modality is None:
        _quarantine(state, prep, prep.reason or "could not be decoded", quarantine_root, summary)
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
        _quarantine(state, prep, conflict, quarantine_root, summary)
        return
    twin = state.twins.get((prep.modality, content))
    if twin is not None and twin.blob_path:
        blob = twin.blob_path
    else:
        blob = prep.blob
        if not prep.wrote_blob and not (data_root / blob).exists():
            # another ingest wrote these bytes, then dropped them when its file went to quarantine
            write_atomic(data_root / blob, prep.stored)
    if sample is None:
        sample = state.add_sample({"domain": state.domain, "sample_key": prep.key, "split": prep.split})
        summary.new_records += 1
    # Same content under another record (a template report, a re-used frame) is stored once and linked to
    # both; the link is recorded so that validation and audits can see it.
    new = NewFile(_file_row(
        state, prep, content_sha256=content, blob_path=blob, status="ok",
        duplicate_of=twin.id if isinstance(twin, Known) else None,
        reason=f"same content as {twin.source_path}" if twin is not None else None,
        stats=prep.decoded.stats, notes=prep.decoded.notes or None,
    ), sample=sample, twin=twin if isinstance(twin, NewFile) else None)
    state.add_file(new, prep.key)
    summary.ingested += 1
    summary.duplicates += twin is not None
