"""Label files: CSV (`sample_id,label[,annotator][,split]`, or what the pack's label_columns name; common
names such as `file,label` are taken as they are) or JSON (`[{"sample_id": ..., "label": ...}]` or
`{"<sample_id>": "<label>"}`), imported as kind `file`, source `file:<name>`. A split column records a data
set's own split of each record, which `mmops build` honours."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import Label, Sample
from mmops.domains import (
    ID_COLUMNS,
    LABEL_COLUMNS,
    SPLIT_COLUMNS,
    SPLIT_NAMES,
    DomainPack,
    LabelColumns,
    split_name,
)
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
    splits: dict[str, int] = field(default_factory=dict)  # records given a split by the file's split column


def _column(found: list[str], chosen: str | None, common: tuple[str, ...], what: str, path: Path,
            required: bool = True) -> str | None:
    """The file's column for `what`: the pack's choice, else the first common name it has (any case)."""
    by_lower = {f.strip().lower(): f for f in found}
    if chosen is not None:
        if chosen.lower() not in by_lower:
            raise BadInputError(f"{path}: no {what} column {chosen!r} (the domain pack's label_columns."
                                f"{'id' if what == 'record id' else what}); the file has {found}")
        return by_lower[chosen.lower()]
    for name in common:
        if name in by_lower:
            return by_lower[name]
    if required:
        raise BadInputError(f"{path}: no {what} column; expected one of {list(common)} (or name yours in "
                            f"the domain pack's label_columns); the file has {found}")
    return None


def read_label_file(path: Path, columns: LabelColumns | None = None) -> list[dict[str, str]]:
    """Rows of {sample_id, label[, annotator][, split]} from a CSV or JSON file, whatever the file calls those
    columns (`columns`, else the common names: file,label and id,class,split work as sample_id,label do);
    BadInputError if it is neither format or lacks the columns."""
    columns = columns or LabelColumns()
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
        raw = [{str(k): str(v) for k, v in r.items() if v is not None} for r in data]
        found = list(dict.fromkeys(k for r in raw for k in r))
    else:
        header = text.split("\n", 1)[0]
        # a spreadsheet's export in a comma-decimal locale separates with ';' (or a tab): taken as it is
        delimiter = next((d for d in (",", ";", "\t") if d in header), ",")
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        found = list(reader.fieldnames or [])
        raw = [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]
    id_col = _column(found, columns.id, ID_COLUMNS, "record id", path)
    label_col = _column(found, columns.label, LABEL_COLUMNS, "label", path)
    split_col = _column(found, columns.split, SPLIT_COLUMNS, "split", path, required=False)
    picked = {"sample_id": id_col, "label": label_col, "annotator": "annotator", "split": split_col}
    return [{ours: row[theirs] for ours, theirs in picked.items() if theirs is not None and theirs in row}
            for row in raw]


def record_key(value: str, keys: Mapping[str, int], pattern: re.Pattern[str]) -> str:
    """A labels file's id -> the record key it names: the key itself, or a landed file's path (matched by the
    domain's record_pattern) or name (its stem), as `file,label` files list them."""
    value = value.strip()
    if value in keys:
        return value
    m = pattern.fullmatch(value.removeprefix("./"))
    if m is not None and m["key"] in keys:
        return str(m["key"])
    stem = PurePosixPath(value.replace("\\", "/")).name.rsplit(".", 1)[0]
    return stem if stem in keys else value


def import_labels(session: Session, pack: DomainPack, labels_path: Path, ground_truth: bool = False) -> LabelSummary:
    """Import a labels file. Unknown records or classes are rejected per row (reported), never dropped.
    ground_truth: a file of labels for served records (landing/<domain>/ground_truth/): rows for records that
    were never landed are counted (`not_landed`), not rejected; monitoring joins them with the prediction log."""
    rows = read_label_file(labels_path, pack.label_columns)
    source = f"file:ground_truth/{labels_path.name}" if ground_truth else f"file:{labels_path.name}"
    summary = LabelSummary(domain=pack.name, source=source)
    by_key = {s.sample_key: s for s in session.scalars(select(Sample).where(Sample.domain == pack.name))}
    samples = {k: s.id for k, s in by_key.items()}
    pattern = re.compile(pack.record_pattern)
    listed: set[int] = set()
    for row in rows:
        key, label = record_key(row.get("sample_id", ""), samples, pattern), row.get("label", "").strip()
        if key not in samples and ground_truth and key:
            summary.not_landed += 1
            continue
        if key not in samples:
            summary.rejected[key] = "no such record in the catalog (not ingested, or quarantined)"
            continue
        if label not in pack.classes:
            summary.rejected[key] = f"label {label!r} is not a class of {pack.name} {list(pack.classes)}"
            continue
        given = row.get("split", "").strip()
        if given and not ground_truth:
            split = split_name(given)
            if split is None:
                summary.rejected[key] = f"split {given.lower()!r} is none of {sorted(SPLIT_NAMES)}"
                continue
            if by_key[key].split not in (None, split):
                summary.rejected[key] = (f"split {split!r}, but the record was landed in the "
                                         f"{by_key[key].split!r} split's folder")
                continue
            by_key[key].split = split
            summary.splits[split] = summary.splits.get(split, 0) + 1
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

