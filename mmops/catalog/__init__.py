"""The SQL catalog: engine and session helpers. SQLite under var/ by default; MMOPS_DATABASE_URL for any other.

The schema is created and upgraded only through Alembic migrations (`upgrade()`), never by create_all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mmops.catalog.models import (
    AuditEvent,
    AuditHead,
    Base,
    DatasetVersion,
    DriftReport,
    Label,
    ModelAlias,
    ModelVersion,
    PromotionEvent,
    ReviewItem,
    Sample,
    SampleFile,
    TrainingRun,
    ValidationRun,
)
from mmops.config import get_settings
from mmops.locks import file_lock

__all__ = [
    "AuditEvent", "AuditHead", "Base", "DatasetVersion", "DriftReport", "Label", "ModelAlias", "ModelVersion", "PromotionEvent", "ReviewItem", "Sample",
    "SampleFile",
    "TrainingRun", "ValidationRun", "get_engine", "locked_session", "session_scope", "upgrade", "writer_lock",
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
    engine = _engine_for(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    # two processes starting on a fresh catalog (a DAG run and a CLI call) must not both create the tables
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            try:
                command.upgrade(cfg, "head")
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
    else:
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        with file_lock(Path(database).parent / "locks" / "migrate.lock") if database and database != ":memory:" \
                else nullcontext():
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


@contextmanager
def locked_session(name: str, url: str | None = None) -> Iterator[Session]:
    """A `session_scope` that holds `writer_lock(name)` from its start until after its commit: for writers
    that read, then write what they read decides (the next version number, a label that is not there yet)."""
    with session_scope(url) as session, writer_lock(session, name):
        yield session
        session.commit()


@contextmanager
def writer_lock(session: Session, name: str) -> Iterator[None]:
    """Serialise writers of one kind of data (an ingest of one domain) across processes.

    PostgreSQL: a transaction-level advisory lock, released when the session commits or rolls back (so take
    it at the start of the transaction it protects). SQLite: an exclusive lock on a file beside the database
    (SQLite allows one writer anyway; the lock turns "database is locked" into a wait). Other databases: none.
    """
    bind = session.get_bind()
    dialect = bind.dialect.name
    if dialect == "postgresql":
        import zlib

        from sqlalchemy import text

        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(name.encode())})
        yield
        return
    database = bind.engine.url.database if dialect == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with file_lock(Path(database).parent / "locks" / f"{name}.lock"):
        yield


_MIGRATION_LOCK = 0x6D6D6F7073  # "mmops"
