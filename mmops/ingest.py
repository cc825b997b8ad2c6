"""Ingest: landed files -> content-addressed raw data + catalog rows; bad files -> quarantine with a reason.

Layout of a landing folder: `<landing>/<domain>/<modality>/<sample_key>.<ext>` plus `<landing>/<domain>/
labels.csv`. Files of one sample key across modality folders form one multimodal record; a record may lack
a modality. Re-running on the same folder changes nothing (rows are keyed by path + content hash).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import Sample, SampleFile
from mmops.domains import DomainPack
from mmops.errors import BadInputError, NotFoundError
from mmops.modalities import MAX_FILE_BYTES, decode
from mmops.quarantine import copy_path

log = logging.getLogger(__name__)

SAMPLE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
BATCH = 500


@dataclass
class IngestSummary:
    domain: str
    seen: int = 0
    ingested: int = 0
    skipped: int = 0  # already processed by an earlier run (ingested or quarantined)
    duplicates: int = 0  # ingested files whose content another sample already had (stored once)
    quarantined: int = 0
    reasons: dict[str, str] = field(default_factory=dict)  # source path -> reason

    @property
    def records(self) -> int:
        return self.ingested


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _walk(root: Path) -> Iterator[Path]:
    """Every entry under root, symlinks included but never followed; sorted for a deterministic order."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
            yield base / name


def _read_checked(path: Path, root: Path) -> bytes:
    if path.is_symlink():
        raise BadInputError("symbolic link: refused (it could point outside the landing folder)")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BadInputError("path escapes the landing folder")
    if not path.is_file():
        raise BadInputError("not a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BadInputError(f"file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    return path.read_bytes()


def quarantine_file(
    session: Session, domain: str, rel: str, data: bytes, reason: str, quarantine_root: Path,
    modality: str | None = None,
) -> None:
    """Copy a rejected file to quarantine/<domain>/ and record why. The landing copy is left untouched."""
    digest = sha256_bytes(data)
    exists = session.scalar(
        select(SampleFile).where(
            SampleFile.domain == domain, SampleFile.source_path == rel, SampleFile.sha256 == digest
        )
    )
    if exists is not None:
        return
    target = copy_path(quarantine_root, domain, digest, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    session.add(
        SampleFile(
            domain=domain, modality=modality, source_path=rel, sha256=digest, size_bytes=len(data),
            blob_path=None, status="quarantined", reason=reason, stats={},
        )
    )
    log.warning("quarantined %s/%s: %s", domain, rel, reason)


def _get_sample(session: Session, cache: dict[str, Sample], domain: str, key: str) -> Sample:
    if key not in cache:
        sample = session.scalar(select(Sample).where(Sample.domain == domain, Sample.sample_key == key))
        if sample is None:
            sample = Sample(domain=domain, sample_key=key)
            session.add(sample)
            session.flush()
        cache[key] = sample
    return cache[key]


def ingest_domain(
    session_factory: Callable[[], Session],
    pack: DomainPack,
    landing_root: Path,
    data_root: Path,
    quarantine_root: Path,
    progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Ingest every new file under landing_root/<domain>. Commits in batches: a crash loses at most the
    uncommitted batch, whose files the rerun picks up again (blobs are written before rows, atomically)."""
    src = landing_root / pack.name
    if not src.is_dir():
        raise NotFoundError(f"no landing folder {src}; land files there or run `mmops data pull`")
    summary = IngestSummary(domain=pack.name)
    entries = [p for p in _walk(src) if not p.name.startswith(".")]
    session = session_factory()
    known = {
        (row.source_path, row.sha256)
        for row in session.execute(
            select(SampleFile.source_path, SampleFile.sha256).where(SampleFile.domain == pack.name)
        )
    }
    samples: dict[str, Sample] = {}
    try:
        for n, path in enumerate(entries, 1):
            rel = path.relative_to(src).as_posix()
            if rel == pack.labels_file:
                continue
            summary.seen += 1
            try:
                data = _read_checked(path, src)
            except BadInputError as exc:
                # keep the evidence, never follow a link or read an oversized file whole
                data = b"" if path.is_symlink() or not path.is_file() else path.read_bytes()[:MAX_FILE_BYTES]
                if (rel, sha256_bytes(data)) in known:
                    summary.skipped += 1
                    continue
                known.add((rel, sha256_bytes(data)))
                summary.quarantined += 1
                summary.reasons[rel] = str(exc)
                quarantine_file(session, pack.name, rel, data, str(exc), quarantine_root)
                continue
            digest = sha256_bytes(data)
            if (rel, digest) in known:
                summary.skipped += 1
                continue
            known.add((rel, digest))
            status = _ingest_one(session, samples, pack, rel, data, digest, data_root, quarantine_root)
            if status in ("ok", "duplicate"):
                summary.ingested += 1
                summary.duplicates += status == "duplicate"
            else:
                summary.quarantined += 1
                summary.reasons[rel] = status
            if n % BATCH == 0:
                session.commit()
            if progress:
                progress(n, len(entries))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    log.info("ingest %s: %s", pack.name, summary)
    return summary


def _ingest_one(
    session: Session, samples: dict[str, Sample], pack: DomainPack, rel: str, data: bytes, digest: str,
    data_root: Path, quarantine_root: Path,
) -> str:
    """Returns 'ok', 'duplicate', or the quarantine reason."""
    parts = rel.split("/")
    reason: str | None = None
    modality = parts[0] if len(parts) == 2 else None
    if modality is None or modality not in pack.modality_names:
        reason = f"not under a modality folder ({', '.join(pack.modality_names)}/<sample>.<ext>)"
    else:
        spec = pack.modality(modality)
        key, ext = Path(parts[1]).stem, Path(parts[1]).suffix.lower()
        if ext not in spec.extensions:
            reason = f"extension {ext or '(none)'} not accepted for {modality} ({', '.join(spec.extensions)})"
        elif not SAMPLE_KEY.match(key):
            reason = f"sample key {key!r} has characters outside [A-Za-z0-9_.-]"
    if reason is None:
        try:
            decoded = decode(data, spec)
        except BadInputError as exc:
            reason = str(exc)
    if reason is not None:
        quarantine_file(session, pack.name, rel, data, reason, quarantine_root, modality)
        return reason

    sample = _get_sample(session, samples, pack.name, key)
    same_slot = session.scalar(
        select(SampleFile).where(
            SampleFile.sample_id == sample.id, SampleFile.modality == modality, SampleFile.status == "ok"
        )
    )
    if same_slot is not None:
        reason = f"sample {key} already has a different {modality} file ({same_slot.source_path})"
        quarantine_file(session, pack.name, rel, data, reason, quarantine_root, modality)
        return reason
    twin = session.scalar(
        select(SampleFile).where(
            SampleFile.domain == pack.name, SampleFile.modality == modality, SampleFile.sha256 == digest,
            SampleFile.status == "ok", SampleFile.duplicate_of.is_(None),
        )
    )
    blob = twin.blob_path if twin is not None and twin.blob_path else f"raw/{pack.name}/{modality}/{digest[:2]}/{digest}{ext}"
    if twin is None:
        target = data_root / blob
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
    # Same content under another sample (a template report, a re-used frame) is stored once and linked to
    # both samples; the link is recorded so that validation and audits can see it.
    session.add(
        SampleFile(
            sample_id=sample.id, domain=pack.name, modality=modality, source_path=rel, sha256=digest,
            size_bytes=len(data), blob_path=blob, status="ok", duplicate_of=twin.id if twin else None,
            reason=f"same content as {twin.source_path}" if twin else None, stats=decoded.stats,
        )
    )
    return "ok" if twin is None else "duplicate"
