"""Alembic environment: runs against the engine mmops.catalog hands over (or MMOPS_DATABASE_URL)."""

from alembic import context
from sqlalchemy import create_engine

from mmops.catalog.models import Base
from mmops.config import get_settings

engine = context.config.attributes.get("engine") or create_engine(get_settings().catalog_url)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
