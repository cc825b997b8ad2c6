"""Labeling: import a labels file (`sample_id,label`) into the catalog, recording where each label came from."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import Label, Sample
from mmops.domains import DomainPack
from mmops.errors import BadInputError, NotFoundError

log = logging.getLogger(__name__)


@dataclass
class LabelSummary:
    domain: str
    source: str
    imported: int = 0
    unchanged: int = 0
    updated: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # sample key -> reason


def import_labels(session: Session, pack: DomainPack, labels_path: Path) -> LabelSummary:
    """Upsert labels from a CSV. Unknown samples or classes are rejected per row (reported), never dropped."""
    if not labels_path.is_file():
        raise NotFoundError(f"no labels file at {labels_path}")
    try:
        text = labels_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{labels_path} is not UTF-8") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"sample_id", "label"} <= set(reader.fieldnames):
        raise BadInputError(f"{labels_path} needs the columns sample_id,label; found {reader.fieldnames}")
    source = f"file:{labels_path.name}"
    summary = LabelSummary(domain=pack.name, source=source)
    samples = {s.sample_key: s for s in session.scalars(select(Sample).where(Sample.domain == pack.name))}
    existing = {
        lab.sample_id: lab
        for lab in session.scalars(
            select(Label).join(Sample).where(Sample.domain == pack.name, Label.source == source)
        )
    }
    for row in reader:
        key, label = (row.get("sample_id") or "").strip(), (row.get("label") or "").strip()
        if key not in samples:
            summary.rejected[key] = "no such sample in the catalog (not ingested, or quarantined)"
            continue
        if label not in pack.classes:
            summary.rejected[key] = f"label {label!r} is not a class of {pack.name} {list(pack.classes)}"
            continue
        sample = samples[key]
        current = existing.get(sample.id)
        if current is None:
            session.add(Label(sample_id=sample.id, label=label, source=source))
            summary.imported += 1
        elif current.label != label:
            current.label = label
            summary.updated += 1
        else:
            summary.unchanged += 1
    if summary.rejected:
        log.warning("labels %s: %d rows rejected, e.g. %s", pack.name, len(summary.rejected),
                    next(iter(summary.rejected.items())))
    return summary
