"""What is new in a landing area: its entries, minus those the catalog already holds at the same size and
version (no file is read to decide), in batches of bounded files and bytes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import SampleFile
from mmops.domains import DomainPack
from mmops.ingest.sources import Entry, Landing

BATCH_FILES = 256
BATCH_BYTES = 256 * 1024 * 1024
_ANNOTATIONS = "annotations/"  # Label Studio exports dropped for import (see mmops.labeling)
GROUND_TRUTH = "ground_truth/"  # labels that arrive after serving, by record id (mmops.monitoring, labeling)


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
