"""One screen per domain: where its data, dataset, models, monitoring and service stand (`mmops status`).

Everything comes from the catalog, the landing area's listing and, for the service, one short HTTP probe;
nothing is computed that a stage would compute (no label resolution, no drift check). A domain that has
never run shows zeros and `None`, not an error.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mmops.catalog import (
    AuditEvent,
    DatasetVersion,
    DriftReport,
    Label,
    ModelVersion,
    Sample,
    SampleFile,
    TrainingRun,
    ValidationRun,
)
from mmops.config import Settings

KEEP = ("accuracy", "macro_f1", "auroc", "ece")


def _landed(settings: Settings, domain: str) -> int | None:
    """Files in the landing area now (None: it cannot be listed)."""
    from mmops.errors import MmopsError
    from mmops.ingest import Landing

    try:
        return len(Landing(settings.landing(domain)).entries())
    except (MmopsError, OSError):
        return None


def _files(session: Session, domain: str) -> dict[str, int]:
    rows = session.execute(select(SampleFile.status, func.count()).where(SampleFile.domain == domain)
                           .group_by(SampleFile.status)).all()
    return {status: n for status, n in rows}


def _model(session: Session, settings: Settings, mv: ModelVersion | None) -> dict[str, Any] | None:
    from mmops.card.complete import CARD_DIR, CARD_HTML
    from mmops.registry import store_path

    if mv is None:
        return None
    run = session.get(TrainingRun, mv.training_run_id)
    card = store_path(settings.var_dir, mv.domain, mv.checkpoint_sha256) / CARD_DIR / CARD_HTML
    return {"version": mv.version, "metrics": {k: mv.metrics.get(k) for k in KEEP},
            "dataset_version": run.dataset_version_id if run else None, "bento_model_tag": mv.bento_model_tag,
            "created_at": mv.created_at.isoformat(), "card": str(card) if card.exists() else None}


def service_url(settings: Settings, domain: str, port: int) -> str:
    """Where the domain's service answers: MMOPS_SERVICE_URL_<DOMAIN> (as the retraining DAG uses), else
    `mmops serve`'s default address."""
    return os.environ.get(f"MMOPS_SERVICE_URL_{domain.upper()}") or f"http://127.0.0.1:{port}"


def probe_service(url: str, domain: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """The running service's model, if one serving this domain answers at `url` (None otherwise)."""
    import httpx

    from mmops.serving.client import auth_headers

    try:
        resp = httpx.get(f"{url.rstrip('/')}/metadata", headers=auth_headers(), timeout=timeout)
        meta = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("domain") != domain:
        return None
    return {"url": url, "model_version": meta.get("model_version"), "checkpoint_sha256": meta.get("checkpoint_sha256")}


def domain_status(session: Session, settings: Settings, domain: str, port: int) -> dict[str, Any]:
    from mmops.registry import get_alias

    files = _files(session, domain)
    records = session.scalar(select(func.count()).select_from(Sample).where(Sample.domain == domain)) or 0
    labeled = session.scalar(select(func.count(func.distinct(Label.sample_id))).join(Sample).where(
        Sample.domain == domain, Label.superseded_at.is_(None))) or 0
    gate = session.scalar(select(ValidationRun).where(ValidationRun.domain == domain)
                          .order_by(ValidationRun.id.desc()).limit(1))
    dv = session.scalar(select(DatasetVersion).where(DatasetVersion.domain == domain)
                        .order_by(DatasetVersion.created_at.desc(), DatasetVersion.id).limit(1))
    dv_gate = session.get(ValidationRun, dv.validation_run_id) if dv and dv.validation_run_id else None
    run = session.scalar(select(TrainingRun).where(TrainingRun.domain == domain).order_by(TrainingRun.id.desc())
                         .limit(1))
    drift = session.scalar(select(DriftReport).where(DriftReport.domain == domain).order_by(DriftReport.id.desc())
                           .limit(1))
    last = session.scalar(select(AuditEvent).where(AuditEvent.domain == domain).order_by(AuditEvent.id.desc())
                          .limit(1))
    champion, challenger = get_alias(session, domain, "champion"), get_alias(session, domain, "challenger")
    url = service_url(settings, domain, port)
    return {
        "domain": domain,
        "data": {"landed": _landed(settings, domain), "ingested": files.get("ok", 0),
                 "quarantined": files.get("quarantined", 0), "purged": files.get("purged", 0),
                 "records": records, "labeled": labeled},
        "gate": None if gate is None else {"success": gate.success, "n_expectations": gate.n_expectations,
                                           "failed": len(gate.failed), "at": gate.created_at.isoformat()},
        "dataset": None if dv is None else {
            "version": dv.id, "n_samples": dv.n_samples, "split_counts": dv.split_counts,
            "gate": None if dv_gate is None else ("passed" if dv_gate.success else "failed"),
            "at": dv.created_at.isoformat()},
        "training": None if run is None else {
            "id": run.id, "status": run.status, "device": run.device, "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at else None},
        "champion": _model(session, settings, champion),
        "challenger": _model(session, settings, challenger) if challenger is not None and challenger != champion else None,
        "drift": None if drift is None else {
            "drifted": drift.drifted, "drift_share": drift.drift_share, "current": drift.current_source,
            "n_current": drift.n_current, "drifted_columns": len(drift.drifted_columns),
            "report": drift.html_path, "at": drift.created_at.isoformat()},
        "service": probe_service(url, domain),
        "last_event": None if last is None else {"action": last.action, "subject": last.subject, "actor": last.actor,
                                                 "at": last.at.isoformat()},
    }


def status(domains: list[str], settings: Settings, port: int) -> list[dict[str, Any]]:
    from mmops.catalog import session_scope

    with session_scope(settings.catalog_url) as session:
        return [domain_status(session, settings, d, port) for d in domains]
