"""The SQL catalog: engine and session helpers. SQLite under var/ by default; MMOPS_DATABASE_URL for any other.

The schema is created and upgraded only through Alembic migrations (`upgrade()`), never by create_all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mmops.catalog.models import (
    Base,
    DatasetVersion,
    DriftReport,
    Label,
    ModelAlias,
    ModelVersion,
    ReviewItem,
    Sample,
    SampleFile,
    TrainingRun,
    ValidationRun,
)
from mmops.config import get_settings

__all__ = [
    "Base", "DatasetVersion", "DriftReport", "Label", "ModelAlias", "ModelVersion", "ReviewItem", "Sample", "SampleFile",
    "TrainingRun", "ValidationRun", "get_engine", "session_scope", "upgrade",
]

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")  # readers (the status screen, Airflow) never block writers
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


_upgraded: set[str] = set()


def upgrade(url: str | None = None) -> None:
    """Bring the catalog schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    url = url or get_settings().catalog_url
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = _engine_for(url)
    command.upgrade(cfg, "head")
    _upgraded.add(url)


def get_engine(url: str | None = None) -> Engine:
    """The engine for the configured catalog, migrated to head on first use in this process."""
    url = url or get_settings().catalog_url
    if url not in _upgraded:
        upgrade(url)
    return _engine_for(url)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: commits on success, rolls back on any error."""
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
