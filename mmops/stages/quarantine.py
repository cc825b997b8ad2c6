"""The quarantine as the faces see it: the quarantined files with their reasons, and a person's decision on
some of them (release them for another ingest, or purge their copies), each in one catalog transaction."""

from __future__ import annotations

from mmops.catalog import session_scope
from mmops.config import get_settings
from mmops.quarantine import QuarantinedFile, list_quarantined, purge, release


def quarantined(domain: str | None = None) -> list[QuarantinedFile]:
    with session_scope(get_settings().catalog_url) as session:
        return list_quarantined(session, domain)


def release_files(ids: list[int], domain: str | None = None) -> list[str]:
    """Give files another ingest: back into a local landing area, or (a remote one) re-checked as they are."""
    settings = get_settings()
    with session_scope(settings.catalog_url) as session:
        return release(session, ids, None if settings.landing_url else settings.landing_dir,
                       settings.quarantine_dir, domain)


def purge_files(ids: list[int] | None, domain: str | None = None) -> int:
    """Delete quarantined copies for good (every one in scope when `ids` is None); the decision stays on record."""
    settings = get_settings()
    with session_scope(settings.catalog_url) as session:
        return purge(session, ids, settings.quarantine_dir, domain)
