"""The audit log: who ingested, labeled, built, trained, registered, promoted, packaged and deployed what.

Each stage appends one `AuditEvent` in the transaction of what it records (a dataset version and its
"dataset_built" event commit together, or neither does). Events are never updated or deleted by mmops.

Who: `MMOPS_ACTOR` when set (a CI job, a service account, the person behind a shared login), else the
Airflow task that runs the stage (`airflow:<dag_id>/<run_id>`, from the task's context variables), else the
operating-system user at the host. `mmops audit` lists them.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mmops.catalog import AuditEvent

ACTIONS = ("ingested", "labeled", "annotations_imported", "dataset_built", "trained", "training_failed",
           "registered", "promoted", "packaged", "deployed", "deploy_failed", "quarantine_released",
           "quarantine_purged")


def current_actor() -> str:
    """Who is acting now (see the module docstring); at most 128 characters."""
    actor = os.environ.get("MMOPS_ACTOR", "").strip()
    if not actor and os.environ.get("AIRFLOW_CTX_DAG_ID"):
        actor = f"airflow:{os.environ['AIRFLOW_CTX_DAG_ID']}/{os.environ.get('AIRFLOW_CTX_DAG_RUN_ID', '?')}"
    if not actor:
        import getpass
        import socket

        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # a container user without a passwd entry
            user = f"uid{os.getuid()}"
        actor = f"{user}@{socket.gethostname()}"
    return actor[:128]


def record(session: Session, action: str, domain: str, subject: str, actor: str | None = None,
           **detail: Any) -> AuditEvent:
    """Append one event to the session's transaction (committed with it)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(action=action, domain=domain, subject=subject[:255], actor=(actor or current_actor())[:128],
                       detail=detail)
    session.add(event)
    return event


def events(session: Session, domain: str | None = None, limit: int = 100,
           since: datetime | None = None) -> list[dict[str, Any]]:
    """The newest `limit` events (of one domain, after `since`), oldest first."""
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if domain is not None:
        q = q.where(AuditEvent.domain == domain)
    if since is not None:
        q = q.where(AuditEvent.at >= since)
    return [{"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action, "domain": e.domain,
             "subject": e.subject, "detail": e.detail} for e in reversed(list(session.scalars(q)))]
