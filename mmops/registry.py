"""Model registry: versions with lineage (training run -> dataset version), and champion/challenger aliases."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mmops.catalog import ModelAlias, ModelVersion, TrainingRun
from mmops.errors import NotFoundError

log = logging.getLogger(__name__)

PROMOTION_METRIC = "macro_f1"


@dataclass(frozen=True)
class Registration:
    version: int
    model_version_id: int
    promoted: bool
    reason: str


def get_alias(session: Session, domain: str, alias: str) -> ModelVersion | None:
    row = session.scalar(select(ModelAlias).where(ModelAlias.domain == domain, ModelAlias.alias == alias))
    return session.get(ModelVersion, row.model_version_id) if row else None


def set_alias(session: Session, domain: str, alias: str, mv: ModelVersion) -> None:
    row = session.scalar(select(ModelAlias).where(ModelAlias.domain == domain, ModelAlias.alias == alias))
    if row is None:
        session.add(ModelAlias(domain=domain, alias=alias, model_version_id=mv.id))
    else:
        row.model_version_id = mv.id


def register(session: Session, run: TrainingRun, metrics: dict[str, Any], margin: float = 0.0) -> Registration:
    """Register the run's checkpoint as a model version (once per checkpoint hash), make it the challenger,
    and promote it to champion when it is at least `margin` better than the champion on the test split."""
    mv = session.scalar(
        select(ModelVersion).where(ModelVersion.domain == run.domain,
                                   ModelVersion.checkpoint_sha256 == run.checkpoint_sha256)
    )
    if mv is None:
        last = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.domain == run.domain))
        mv = ModelVersion(domain=run.domain, version=(last or 0) + 1, training_run_id=run.id,
                          checkpoint_sha256=run.checkpoint_sha256 or "", metrics=metrics)
        session.add(mv)
        session.flush()
    else:
        mv.metrics = metrics
    champion = get_alias(session, run.domain, "champion")
    if champion is not None and champion.id == mv.id:
        return Registration(mv.version, mv.id, False, "already champion")
    set_alias(session, run.domain, "challenger", mv)
    score = float(metrics.get(PROMOTION_METRIC, 0.0))
    if champion is None:
        promoted, reason = True, "no champion yet"
    else:
        best = float(champion.metrics.get(PROMOTION_METRIC, 0.0))
        promoted = score >= best + margin
        reason = f"{PROMOTION_METRIC} {score:.4f} vs champion v{champion.version} {best:.4f} (margin {margin})"
    if promoted:
        set_alias(session, run.domain, "champion", mv)
    log.info("model %s v%d: %s (%s)", run.domain, mv.version, "promoted" if promoted else "kept challenger",
             reason)
    return Registration(mv.version, mv.id, promoted, reason)


def champion_or_latest(session: Session, domain: str) -> ModelVersion:
    mv = get_alias(session, domain, "champion") or session.scalar(
        select(ModelVersion).where(ModelVersion.domain == domain).order_by(ModelVersion.version.desc())
    )
    if mv is None:
        raise NotFoundError(f"no model registered for {domain}; run `mmops train` and `mmops evaluate`")
    return mv
