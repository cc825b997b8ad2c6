"""Quarantine: what ingest rejected, why, and the operator's way out (release for a retry, or purge).

Rejected bytes are copied to quarantine/<domain>/<sha256[:12]>_<name>; the catalog row keeps the reason.
Nothing leaves quarantine silently: release and purge are explicit commands, logged and in the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops import audit
from mmops.catalog import SampleFile
from mmops.errors import BadInputError, NotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuarantinedFile:
    id: int
    domain: str
    source_path: str
    reason: str
    size_bytes: int
    sha256: str
    at: datetime


def copy_path(root: Path, domain: str, sha256: str, source_path: str) -> Path:
    """Where ingest keeps the rejected bytes of a landed file."""
    return root / domain / f"{sha256[:12]}_{Path(source_path).name}"


def list_quarantined(session: Session, domain: str | None = None) -> list[QuarantinedFile]:
    query = select(SampleFile).where(SampleFile.status == "quarantined").order_by(SampleFile.id)
    if domain:
        query = query.where(SampleFile.domain == domain)
    return [QuarantinedFile(r.id, r.domain, r.source_path, r.reason or "", r.size_bytes, r.sha256, r.ingested_at)
            for r in session.scalars(query)]


def _rows(session: Session, ids: list[int], domain: str | None) -> list[SampleFile]:
    rows = []
    for file_id in ids:
        row = session.get(SampleFile, file_id)
        if row is None or row.status != "quarantined" or (domain and row.domain != domain):
            raise NotFoundError(f"no quarantined file with id {file_id}" + (f" in {domain}" if domain else ""))
        rows.append(row)
    return rows


def release(session: Session, ids: list[int], landing_root: Path | None, quarantine_root: Path,
            domain: str | None = None) -> list[str]:
    """Give files another ingest: the quarantine record goes, and the quarantined bytes are put back at their
    landing path if nothing is there any more (a fixed file already landed there wins). The next ingest
    checks them again from scratch. With a remote landing area (`landing_root` None) nothing is restored:
    the next ingest reads the file from the source again. Returns the landing paths released."""
    released = []
    for row in _rows(session, ids, domain):
        if landing_root is None:
            copy_path(quarantine_root, row.domain, row.sha256, row.source_path).unlink(missing_ok=True)
            session.delete(row)
            released.append(f"{row.domain}/{row.source_path}")
            audit.record(session, "quarantine_released", row.domain, f"file:{row.sha256[:12]}",
                         source_path=row.source_path, reason=row.reason)
            continue
        target = (landing_root / row.domain / row.source_path).resolve()
        if not target.is_relative_to((landing_root / row.domain).resolve()):
            raise BadInputError(f"quarantined file {row.id} has a source path outside the landing folder")
        copy = copy_path(quarantine_root, row.domain, row.sha256, row.source_path)
        if not target.exists() and not target.is_symlink():
            if not copy.exists():
                raise NotFoundError(f"the quarantined copy {copy} is gone and nothing is at {target}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(copy.read_bytes())
        copy.unlink(missing_ok=True)
        session.delete(row)
        released.append(f"{row.domain}/{row.source_path}")
        audit.record(session, "quarantine_released", row.domain, f"file:{row.sha256[:12]}",
                     source_path=row.source_path, reason=row.reason)
        log.warning("released %s/%s from quarantine (was: %s)", row.domain, row.source_path, row.reason)
    return released


def purge(session: Session, ids: list[int] | None, quarantine_root: Path, domain: str | None = None) -> int:
    """Delete quarantined copies for good (all of a domain's when ids is None). The catalog rows stay, marked
    `purged`, so that the landing file is not ingested again and the decision remains on record."""
    rows = _rows(session, ids, domain) if ids else list(session.scalars(
        select(SampleFile).where(SampleFile.status == "quarantined",
                                 *([SampleFile.domain == domain] if domain else []))))
    for row in rows:
        copy_path(quarantine_root, row.domain, row.sha256, row.source_path).unlink(missing_ok=True)
        row.status = "purged"
        audit.record(session, "quarantine_purged", row.domain, f"file:{row.sha256[:12]}",
                     source_path=row.source_path, reason=row.reason)
        log.warning("purged %s/%s from quarantine (was: %s)", row.domain, row.source_path, row.reason)
    return len(rows)
