"""Labeled multimodal records as the catalog knows them: the unit that validation, datasets and monitoring
work on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import Sample, SampleFile
from mmops.labeling.store import TRUSTED_KINDS, resolve


@dataclass(frozen=True)
class FileRef:
    blob_path: str
    sha256: str
    stats: dict[str, float]


@dataclass(frozen=True)
class Record:
    key: str
    label: str | None
    files: dict[str, FileRef] = field(default_factory=dict)  # modality -> file
    split: str | None = None  # the data set's own split (train / val / test), None: the platform splits

    def to_manifest(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "files": {m: {"blob": f.blob_path, "sha256": f.sha256, "stats": f.stats}
                      for m, f in sorted(self.files.items())},
        }


def load_records(session: Session, domain: str, trusted: Sequence[str] = TRUSTED_KINDS) -> list[Record]:
    """Every record of the domain with at least one ingested file, with its chosen label when that label's
    kind is trusted for training (None otherwise: unlabeled)."""
    labels = {sid: r.label for sid, r in resolve(session, domain).items() if r.kind in trusted}
    files: dict[int, dict[str, FileRef]] = {}
    keys: dict[int, tuple[str, str | None]] = {}
    for sample_id, key, split, modality, blob, sha, stats in session.execute(
        select(Sample.id, Sample.sample_key, Sample.split, SampleFile.modality, SampleFile.blob_path,
               SampleFile.content_sha256, SampleFile.stats)
        .join(SampleFile, SampleFile.sample_id == Sample.id)
        .where(Sample.domain == domain, SampleFile.status == "ok")
    ):
        keys[sample_id] = (key, split)
        files.setdefault(sample_id, {})[modality] = FileRef(blob, sha, stats or {})
    return sorted((Record(keys[i][0], labels.get(i), files[i], keys[i][1]) for i in files), key=lambda r: r.key)


def fingerprint(records: list[Record]) -> str:
    """Content hash of a set of labeled records: same files and labels <=> same fingerprint."""
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.key):
        # a record's own split is part of what a gate passed (only when it has one: fingerprints of data
        # without splits stay what they were)
        h.update(f"{r.key}\t{r.label}".encode() + (f"\tsplit={r.split}".encode() if r.split else b""))
        for m, f in sorted(r.files.items()):
            h.update(f"\t{m}:{f.sha256}".encode())
        h.update(b"\n")
    return h.hexdigest()
