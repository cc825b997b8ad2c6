"""Model registry: versions with lineage (training run -> dataset version, params hash, git commit, metrics,
checkpoint hash), the aliases champion and challenger, a store of every registered version's weights, and an
audit log of every champion decision.

A challenger is promoted only when it beats the champion by ``promote.margin`` on ``promote.metric``, both
scored on the same holdout (the current dataset version's test split: `mmops evaluate` re-scores the champion
from the store), and the paired bootstrap interval of the difference lies above 0 (mmops/promotion.py): ties
and wins the holdout cannot tell from chance keep the champion. A champion that cannot be re-scored there
(different classes, a model-card format this version cannot read, weights gone) is compared on its stored
metrics, without an interval, and the audit entry says so.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mmops import faults
from mmops.catalog import ModelAlias, ModelVersion, PromotionEvent, TrainingRun, session_scope
from mmops.errors import NotFoundError
from mmops.promotion import Comparison

log = logging.getLogger(__name__)

PROMOTION_METRIC = "macro_f1"
MADE_CHAMPION = ("promoted", "manual", "released")  # the decisions that make a version champion


@dataclass(frozen=True)
class Registration:
    version: int
    model_version_id: int
    promoted: bool
    reason: str
    release: bool = False  # passed the gate in a staged domain: the release DAG decides (shadow, approval, canary)


def get_alias(session: Session, domain: str, alias: str) -> ModelVersion | None:
    row = session.scalar(select(ModelAlias).where(ModelAlias.domain == domain, ModelAlias.alias == alias))
    return session.get(ModelVersion, row.model_version_id) if row else None


def champion_model_tag(catalog_url: str, domain: str) -> str | None:
    """The BentoML model tag of the domain's champion, if it was packaged (None: no champion packaged yet)."""
    with session_scope(catalog_url) as session:
        mv = get_alias(session, domain, "champion")
        return mv.bento_model_tag if mv is not None else None


def set_alias(session: Session, domain: str, alias: str, mv: ModelVersion) -> None:
    row = session.scalar(select(ModelAlias).where(ModelAlias.domain == domain, ModelAlias.alias == alias))
    if row is None:
        session.add(ModelAlias(domain=domain, alias=alias, model_version_id=mv.id))
    else:
        row.model_version_id = mv.id


def store_path(var_dir: Path, domain: str, checkpoint_sha256: str) -> Path:
    """Where a registered version's weights and model card are kept (content-addressed)."""
    return var_dir / "registry" / domain / checkpoint_sha256[:16]


def store_model(model_dir: Path, var_dir: Path, domain: str, checkpoint_sha256: str) -> Path:
    dest = store_path(var_dir, domain, checkpoint_sha256)
    if not (dest / "model_card.json").exists():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(model_dir, tmp)
        tmp.replace(dest) if not dest.exists() else shutil.rmtree(tmp)
    return dest


def register(session: Session, run: TrainingRun, metrics: dict[str, Any], margin: float = 0.0,
             metric: str = PROMOTION_METRIC, champion_metrics: dict[str, Any] | None = None,
             holdout: str | None = None, actor: str = "mmops evaluate",
             comparison: Comparison | None = None, staged: bool = False) -> Registration:
    """Register the run's checkpoint as a model version (once per checkpoint hash), make it the challenger,
    and promote it when it beats the champion by `margin` (and by more than 0). champion_metrics: the champion
    re-scored on the same holdout (None: compare with its stored metrics); comparison: both models' paired
    bootstrap on it, which then decides. staged (params.yaml release.staged): a challenger that passes the gate
    is not made champion here but left to the release DAG (`passed_gate`; Registration.release)."""
    mv = session.scalar(
        select(ModelVersion).where(ModelVersion.domain == run.domain,
                                   ModelVersion.checkpoint_sha256 == run.checkpoint_sha256)
    )
    if mv is None:
        last = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.domain == run.domain))
        faults.point("registry.next_version")
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
    score = _score(metrics, metric)
    best: float | None = None
    if champion is None:
        promoted, reason = True, "no champion yet"
    else:
        same = champion_metrics is not None
        best = _score(champion_metrics if champion_metrics is not None else champion.metrics, metric)
        basis = f"both on the test split of {holdout}" if same else "champion's stored metrics: not re-scorable here"
        if comparison is not None:
            promoted, why = comparison.decide(margin)
            reason = f"vs champion v{champion.version}, {basis}: {why}"
        else:
            promoted = score > best and score >= best + margin  # a tie never replaces the champion
            reason = (f"{metric} {score:.4f} vs champion v{champion.version} {best:.4f}, margin {margin} "
                      f"({basis})")
    release = promoted and staged and champion is not None
    if release:
        promoted, reason = False, f"{reason}; passed the gate: the release DAG decides (shadow, approval, canary)"
    if promoted:
        set_alias(session, run.domain, "champion", mv)
    session.add(PromotionEvent(domain=run.domain, model_version_id=mv.id,
                               previous_champion_id=champion.id if champion else None,
                               action="promoted" if promoted else "passed_gate" if release else "rejected", metric=metric,
                               challenger_score=score, champion_score=best, margin=margin, holdout=holdout,
                               ci_low=comparison.low if comparison else None,
                               ci_high=comparison.high if comparison else None, reason=reason, actor=actor))
    log.info("model %s v%d: %s (%s)", run.domain, mv.version, "promoted" if promoted else "kept challenger",
             reason)
    return Registration(mv.version, mv.id, promoted, reason, release)


def _score(metrics: dict[str, Any], metric: str) -> float:
    value = metrics.get(metric)
    return float(value) if value is not None else 0.0


def promote(session: Session, domain: str, version: int, actor: str, reason: str,
            action: Literal["manual", "released"] = "manual") -> ModelVersion:
    """Make a version champion by hand (`manual`: a rollback, or an override of the automatic gate) or at the
    end of the release path (`released`: a staged challenger approved and through its canary); audited."""
    mv = session.scalar(select(ModelVersion).where(ModelVersion.domain == domain, ModelVersion.version == version))
    if mv is None:
        raise NotFoundError(f"{domain} has no model version {version}; see `mmops registry --domain {domain}`")
    champion = get_alias(session, domain, "champion")
    set_alias(session, domain, "champion", mv)
    session.add(PromotionEvent(domain=domain, model_version_id=mv.id,
                               previous_champion_id=champion.id if champion else None, action=action,
                               metric="", reason=reason or f"{action} promotion", actor=actor, margin=0.0))
    return mv


def reject(session: Session, domain: str, version: int, actor: str, reason: str) -> ModelVersion:
    """A challenger turned down after the gate (by a person, or by its canary): the champion stays; audited
    as `rejected` with who and why."""
    mv = session.scalar(select(ModelVersion).where(ModelVersion.domain == domain, ModelVersion.version == version))
    if mv is None:
        raise NotFoundError(f"{domain} has no model version {version}; see `mmops registry --domain {domain}`")
    champion = get_alias(session, domain, "champion")
    session.add(PromotionEvent(domain=domain, model_version_id=mv.id,
                               previous_champion_id=champion.id if champion else None, action="rejected",
                               metric="", margin=0.0, reason=reason, actor=actor))
    return mv


def rollback(session: Session, domain: str, actor: str, reason: str) -> tuple[ModelVersion, ModelVersion]:
    """(restored, replaced): the champion before the current one is champion again. The one before is what the
    decision that made the current champion replaced (a rollback's own events are skipped, so that rolling
    back twice steps back twice); audited as `rollback`."""
    champion = get_alias(session, domain, "champion")
    if champion is None:
        raise NotFoundError(f"{domain} has no champion to roll back")
    made = session.scalar(select(PromotionEvent).where(
        PromotionEvent.model_version_id == champion.id, PromotionEvent.action.in_(MADE_CHAMPION))
        .order_by(PromotionEvent.id.desc()))
    previous = session.get(ModelVersion, made.previous_champion_id) if made and made.previous_champion_id else None
    if previous is None:
        raise NotFoundError(f"{domain}'s champion v{champion.version} replaced no earlier champion: nothing to roll "
                            "back to (`mmops promote --version N` makes any registered version champion)")
    set_alias(session, domain, "champion", previous)
    session.add(PromotionEvent(domain=domain, model_version_id=previous.id, previous_champion_id=champion.id,
                               action="rollback", metric="", margin=0.0, actor=actor,
                               reason=f"rollback from v{champion.version}" + (f": {reason}" if reason else "")))
    return previous, champion


def describe(session: Session, domain: str) -> dict[str, Any]:
    """Versions with lineage and aliases, and the audit log, newest first."""
    aliases: dict[int, list[str]] = {}
    for row in session.scalars(select(ModelAlias).where(ModelAlias.domain == domain)):
        aliases.setdefault(row.model_version_id, []).append(row.alias)
    versions = []
    for mv in session.scalars(select(ModelVersion).where(ModelVersion.domain == domain)
                              .order_by(ModelVersion.version.desc())):
        run = session.get(TrainingRun, mv.training_run_id)
        versions.append({
            "version": mv.version, "aliases": sorted(aliases.get(mv.id, [])), "metrics": mv.metrics,
            "checkpoint_sha256": mv.checkpoint_sha256, "created_at": mv.created_at.isoformat(),
            "dataset_version": run.dataset_version_id if run else None,
            "params_hash": run.params_hash if run else None, "git_commit": run.git_commit if run else None,
            "device": run.device if run else None, "bento": mv.bento_tag})
    by_id = {mv.id: mv.version for mv in session.scalars(select(ModelVersion).where(ModelVersion.domain == domain))}
    events = [{"at": e.at.isoformat(), "version": by_id.get(e.model_version_id), "action": e.action,
               "previous_champion": by_id.get(e.previous_champion_id) if e.previous_champion_id else None,
               "metric": e.metric, "challenger": e.challenger_score, "champion": e.champion_score,
               "margin": e.margin, "interval": [e.ci_low, e.ci_high] if e.ci_low is not None else None,
               "holdout": e.holdout, "reason": e.reason, "actor": e.actor}
              for e in session.scalars(select(PromotionEvent).where(PromotionEvent.domain == domain)
                                       .order_by(PromotionEvent.id.desc()))]
    return {"domain": domain, "versions": versions, "audit_log": events}


def champion_or_latest(session: Session, domain: str) -> ModelVersion:
    mv = get_alias(session, domain, "champion") or session.scalar(
        select(ModelVersion).where(ModelVersion.domain == domain).order_by(ModelVersion.version.desc())
    )
    if mv is None:
        raise NotFoundError(f"no model registered for {domain}; run `mmops train` and `mmops evaluate`")
    return mv


def approval(session: Session, domain: str, model_version_id: int) -> dict[str, str] | None:
    """Who made this version what it is, for its model card: the champion's latest promotion (by the gate or
    by hand), or a challenger's latest decision; None for a version never decided on."""
    champion = get_alias(session, domain, "champion")
    is_champion = champion is not None and champion.id == model_version_id
    query = select(PromotionEvent).where(PromotionEvent.model_version_id == model_version_id)
    if is_champion:
        query = query.where(PromotionEvent.action.in_((*MADE_CHAMPION, "rollback")))
    event = session.scalar(query.order_by(PromotionEvent.id.desc()))
    if event is None:
        return None
    decision = event.action if is_champion else "challenger"
    return {"decision": decision, "by": event.actor, "at": event.at.isoformat(timespec="seconds"),
            "reason": event.reason}
