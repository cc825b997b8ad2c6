"""A release's lineage, link by link, from the catalog alone: the raw files (their digest, as the model card
states it) -> the gate that passed them -> where each training label came from -> the code and settings that
trained on them (git commit, params hash, the Airflow run or person who trained) -> the registered version and
its BentoML tags -> every decision that made it champion (who, when, why, the promotion interval) -> where it
was deployed; and whether the audit ledger that holds these events is intact (mmops/audit.py).

`mmops release --domain D [--version N]` shows it; the default is the champion.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mmops import audit
from mmops.catalog import AuditEvent, DatasetVersion, ModelVersion, PromotionEvent, TrainingRun, ValidationRun
from mmops.errors import NotFoundError
from mmops.registry import champion_or_latest


def lineage(session: Session, domain: str, version: int | None = None) -> dict[str, Any]:
    from mmops.card.complete import raw_files_digest
    from mmops.labeling.store import resolve

    mv = champion_or_latest(session, domain) if version is None else session.scalar(
        select(ModelVersion).where(ModelVersion.domain == domain, ModelVersion.version == version))
    if mv is None:
        raise NotFoundError(f"{domain} has no model version {version}; see `mmops registry --domain {domain}`")
    run = session.get(TrainingRun, mv.training_run_id)
    if run is None:
        raise NotFoundError(f"the training run of {domain} v{mv.version} is not in the catalog")
    ds = session.get(DatasetVersion, run.dataset_version_id)
    gate = session.get(ValidationRun, ds.validation_run_id) if ds and ds.validation_run_id else None
    records = _records(Path(ds.manifest_path)) if ds else []
    n_files, digest = raw_files_digest(records) if records else (0, None)
    labels = {r.key: r for r in resolve(session, domain).values()}
    chosen = [labels.get(r["key"]) for r in records]
    decisions = session.scalars(select(PromotionEvent).where(or_(
        PromotionEvent.model_version_id == mv.id, PromotionEvent.previous_champion_id == mv.id))
        .order_by(PromotionEvent.id))
    subjects = [f"training_run:{run.id}", f"model:v{mv.version}", f"dataset:{run.dataset_version_id}"] + [
        f"bento_model:{t}" for t in (mv.bento_model_tag,) if t]
    events = list(session.scalars(select(AuditEvent).where(AuditEvent.domain == domain,
                                                           AuditEvent.subject.in_(subjects)).order_by(AuditEvent.id)))
    return {
        "domain": domain, "version": mv.version, "checkpoint_sha256": mv.checkpoint_sha256,
        "raw_files": {"dataset_version": run.dataset_version_id, "files": n_files, "sha256": digest,
                      "records": len(records), "split_counts": ds.split_counts if ds else None},
        "gate": None if gate is None else {"validation_run": gate.id, "success": gate.success,
                                           "expectations": gate.n_expectations, "failed": len(gate.failed),
                                           "at": gate.created_at.isoformat(), "report": gate.report_path},
        "labels": {"by_kind": dict(Counter(c.kind for c in chosen if c is not None)),
                   "unlabeled_now": sum(c is None for c in chosen),
                   "changed_since": sum(c is not None and c.label != r["label"] for c, r in zip(chosen, records,
                                                                                               strict=True))},
        "code": {"git_commit": run.git_commit, "params_hash": run.params_hash, "device": run.device,
                 "training_run": run.id, **_trained_by(events)},
        "package": {"model_tag": mv.bento_model_tag, "bento_tag": mv.bento_tag},
        "decisions": [{"action": e.action, "made_champion": e.model_version_id == mv.id, "by": e.actor,
                       "at": e.at.isoformat(), "reason": e.reason,
                       "interval": [e.ci_low, e.ci_high] if e.ci_low is not None else None} for e in decisions],
        "events": [{"id": e.id, "action": e.action, "subject": e.subject, "by": e.actor, "at": e.at.isoformat(),
                    "hash": e.hash} for e in events],
        "ledger": {k: v for k, v in audit.verify(session).items() if k in ("ok", "events", "head")},
    }


def _trained_by(events: list[AuditEvent]) -> dict[str, Any]:
    """Who trained it (an Airflow run or a person) and, in Airflow, the DAG version that ran."""
    trained = next((e for e in events if e.action == "trained"), None)
    if trained is None:
        return {"trained_by": None, "dag_version": None}
    return {"trained_by": trained.actor, "dag_version": (trained.detail or {}).get("dag_version")}


def _records(manifest_path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(manifest_path.read_text())["records"])
    except (OSError, ValueError, KeyError):
        return []  # a manifest gone (a cleaned workspace): the catalog's links still stand
