"""The audit log: who ingested, labeled, built, trained, registered, promoted, packaged and deployed what.

Each stage appends one `AuditEvent` in the transaction of what it records (a dataset version and its
"dataset_built" event commit together, or neither does). Events are never updated or deleted by mmops.

The log is a ledger: each event carries the sha256 of its own fields and of the previous event's hash, and
one head row holds the newest hash. `verify()` (`mmops audit verify`) recomputes the chain and names any
edited, inserted or deleted event, including deleted newest ones (the head no longer matches). Appends take
the head's row lock in their transaction, so concurrent writers (Airflow tasks, the CLI) queue rather than
fork the chain. Someone who can rewrite the whole table and the head can rewrite history consistently:
keep the head hash that verify prints somewhere they cannot write (a release note, a git tag) to catch that.

Who: `MMOPS_ACTOR` when set (a CI job, a service account, the person behind a shared login), else the
Airflow task that runs the stage (`airflow:<dag_id>/<run_id>`, from the task's context variables), else the
operating-system user at the host. `mmops audit` lists them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mmops.catalog import AuditEvent, AuditHead

LEDGER = "mmops-audit-v1"  # what an event's hash covers and how; another layout gets another name

ACTIONS = ("ingested", "labeled", "annotations_imported", "dataset_built", "trained", "training_failed",
           "registered", "promoted", "rolled_back", "packaged", "deployed", "deploy_failed", "quarantine_released",
           "quarantine_purged", "shadow_started", "shadow_stopped",
           "canary_started", "canary_stopped", "canary_rolled_back", "approved", "release_rejected")


# Set by the DAGs' task wrapper (mmops.orchestration.stage_task): the id of the DAG version Airflow 3 recorded
# for the running task instance (GET /api/v2/dags/{dag_id}/dagVersions names its number and bundle version)
DAG_VERSION_ENV = "MMOPS_AIRFLOW_DAG_VERSION"


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
    # the head's row lock first: held to the end of this transaction, so no other append reads the same head
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(events=AuditHead.events + 1))
    head = session.get(AuditHead, 1, populate_existing=True)
    if head is None:
        raise RuntimeError("the catalog has no audit head row: run its migrations (mmops.catalog.upgrade)")
    stored = json.loads(json.dumps(detail, default=str))  # what is stored is what is hashed
    if os.environ.get("AIRFLOW_CTX_DAG_ID") and os.environ.get(DAG_VERSION_ENV):  # which DAG code ran it
        stored.setdefault("dag_version", os.environ[DAG_VERSION_ENV])
    event = AuditEvent(action=action, domain=domain, subject=subject[:255], actor=(actor or current_actor())[:128],
                       detail=stored, at=datetime.now(UTC),
                       prev_hash=head.last_hash)
    session.add(event)
    session.flush()  # its id
    event.hash = event_hash(_fields(event))
    head.last_id, head.last_hash = event.id, event.hash
    return event


def _fields(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "domain": e.domain,
            "subject": e.subject, "detail": e.detail, "prev_hash": e.prev_hash}


def event_hash(event: Mapping[str, Any]) -> str:
    """sha256 of an event's fields and its predecessor's hash, in one canonical JSON text (sorted keys, the
    time in UTC to the microsecond: a database that drops the zone reads it back as UTC)."""
    at = event["at"]
    at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    body = {"ledger": LEDGER, "id": int(event["id"]), "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": event["actor"], "action": event["action"], "domain": event["domain"],
            "subject": event["subject"], "detail": event["detail"], "prev_hash": event["prev_hash"]}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify(session: Session) -> dict[str, Any]:
    """Recompute the chain from the first event: `problems` names each event whose fields no longer give its
    hash (edited), whose link is not the event before it (an event deleted or inserted before it), and a
    head that is not the last event (the newest events deleted). `ok` when there is none."""
    problems: list[dict[str, Any]] = []
    prev: str | None = None
    n, last = 0, None
    for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id)).yield_per(1000):
        n, last = n + 1, e
        if e.hash is None:
            problems.append({"id": e.id, "problem": "not sealed: written around the ledger"})
        elif event_hash(_fields(e)) != e.hash:
            problems.append({"id": e.id, "problem": "edited: its fields no longer give its hash"})
        if e.prev_hash != prev:
            problems.append({"id": e.id, "problem": "broken link: the event before it was deleted, or it was "
                                                    "inserted"})
        prev = e.hash
    head = session.get(AuditHead, 1)
    if head is None:
        problems.append({"id": None, "problem": "no head row"})
    elif head.last_hash != prev or head.events != n or head.last_id != (last.id if last else None):
        problems.append({"id": head.last_id, "problem": f"the head names event {head.last_id} of {head.events}, "
                                                        f"the chain ends at {last.id if last else None} of {n}: "
                                                        "the newest events were deleted, or the head edited"})
    return {"ok": not problems, "events": n, "head": prev, "problems": problems}


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
