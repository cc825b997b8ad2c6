"""Label files: CSV (`sample_id,label[,annotator]`) or JSON (`[{"sample_id": ..., "label": ...}]` or
`{"<sample_id>": "<label>"}`), imported as kind `file`, source `file:<name>`."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import Label, Sample
from mmops.domains import DomainPack
from mmops.errors import BadInputError, NotFoundError
from mmops.labeling.store import put_label

log = logging.getLogger(__name__)

MAX_LABEL_FILE_BYTES = 256 * 1024 * 1024


@dataclass
class LabelSummary:
    domain: str
    source: str
    imported: int = 0
    unchanged: int = 0
    updated: int = 0  # the file now says something else for a record: the old label is superseded, kept
    absent: int = 0  # records this file labeled before but no longer lists (their labels are kept)
    rejected: dict[str, str] = field(default_factory=dict)  # sample key -> reason
    not_landed: int = 0  # ground truth for records the service saw but nobody landed: for monitoring only


def read_label_file(path: Path) -> list[dict[str, str]]:
    """Rows of {sample_id, label[, annotator]} from a CSV or JSON file; BadInputError if it is neither."""
    if not path.is_file():
        raise NotFoundError(f"no labels file at {path}")
    if path.stat().st_size > MAX_LABEL_FILE_BYTES:
        raise BadInputError(f"{path} is over {MAX_LABEL_FILE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{path} is not UTF-8") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = [{"sample_id": k, "label": v} for k, v in data.items()]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise BadInputError(f"{path}: expected a list of {{sample_id, label}} objects or a key->label map")
        return [{k: str(v) for k, v in r.items() if v is not None} for r in data]
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"sample_id", "label"} <= set(reader.fieldnames):
        raise BadInputError(f"{path} needs the columns sample_id,label; found {reader.fieldnames}")
    return [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]


def import_labels(session: Session, pack: DomainPack, labels_path: Path, ground_truth: bool = False) -> LabelSummary:
    """Import a labels file. Unknown records or classes are rejected per row (reported), never dropped.
    ground_truth: a file of labels for served records (landing/<domain>/ground_truth/): rows for records that
    were never landed are counted (`not_landed`), not rejected; monitoring joins them with the prediction log."""
    rows = read_label_file(labels_path)
    source = f"file:ground_truth/{labels_path.name}" if ground_truth else f"file:{labels_path.name}"
    summary = LabelSummary(domain=pack.name, source=source)
    samples = {s.sample_key: s.id for s in session.scalars(select(Sample).where(Sample.domain == pack.name))}
    listed: set[int] = set()
    for row in rows:
        key, label = row.get("sample_id", "").strip(), row.get("label", "").strip()
        if key not in samples and ground_truth and key:
            summary.not_landed += 1
            continue
        if key not in samples:
            summary.rejected[key] = "no such record in the catalog (not ingested, or quarantined)"
            continue
        if label not in pack.classes:
            summary.rejected[key] = f"label {label!r} is not a class of {pack.name} {list(pack.classes)}"
            continue
        listed.add(samples[key])
        outcome = put_label(session, samples[key], label, "file", source,
                            annotator=row.get("annotator", "").strip() or None)
        setattr(summary, outcome, getattr(summary, outcome) + 1)
    summary.absent = len(set(session.scalars(
        select(Label.sample_id).join(Sample).where(Sample.domain == pack.name, Label.source == source,
                                                   Label.superseded_at.is_(None)))) - listed)
    if summary.rejected:
        log.warning("labels %s: %d rows rejected, e.g. %s", pack.name, len(summary.rejected),
                    next(iter(summary.rejected.items())))
    return summary
