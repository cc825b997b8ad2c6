"""Evaluation and the registry: test-split metrics, the champion re-scored on the same holdout, the
registration and promotion decisions."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mmops import audit
from mmops.catalog import TrainingRun, locked_session, session_scope
from mmops.config import Settings
from mmops.context import artifacts, load_manifest
from mmops.domains import DomainPack
from mmops.errors import MmopsError, NotFoundError, ValidationFailedError
from mmops.stages.common import one_at_a_time, resolve
from mmops.stages.results import Evaluated
from mmops.tasks import task_of

log = logging.getLogger(__name__)


@one_at_a_time
def evaluate(domain: str, training_run: int | None = None) -> Evaluated:
    """Test-split metrics (overall, per class, per single modality), confusion matrix, registry update.

    training_run: the run whose model to evaluate (the training DAG hands it on), on the dataset version it
    trained on; a model a later training replaced is refused. Default: the latest model, on the current
    dataset version."""
    from mmops.behaviour import measure
    from mmops.card.complete import CARD_DIR, CARD_HTML, Approval, build_card
    from mmops.card.render import write_card
    from mmops.datasets.tensors import load_split
    from mmops.evaluation import write_metrics
    from mmops.explain.report import write_page
    from mmops.monitoring import SKETCH, build_reference_sketch
    from mmops.registry import approval, get_alias, register, store_model, store_path

    settings, params, pack = resolve(domain)
    task = task_of(pack.task)
    out = artifacts(domain, settings)
    if training_run is None:
        manifest = load_manifest(domain, settings)  # no dataset is said before no model
        predictor = task.load(out / "model")
    else:
        predictor = task.load(out / "model")
        manifest = load_manifest(domain, settings, _trained_on(
            domain, training_run, predictor.card.checkpoint_sha256, out / "model", settings))
    if predictor.card.dataset_version != manifest.id:
        raise ValidationFailedError(f"the model in {out / 'model'} was trained on {predictor.card.dataset_version}"
                                    f", not on the current dataset {manifest.id}; run `mmops train`")
    rows = manifest.split("test")
    values = load_split(pack, settings.data_dir, rows)
    y = task.targets(pack, rows)
    outputs = task.outputs(predictor, values)
    metrics = task.metrics(y, outputs, list(pack.classes))
    calibration = task.calibration(predictor, values, y, outputs)
    metrics.update(calibration)
    subsets = _subset_metrics(task, predictor, values, y, {k: metrics.get(k) for k in task.modality_metrics})
    if len(pack.modalities) > 1:
        metrics["single_modality"] = {s[0]: m for s, m in subsets.items() if len(s) == 1}
        metrics["modality_subsets"] = {"+".join(s): m for s, m in subsets.items()}
    metrics["dataset_version"] = manifest.id
    behaviour = measure(task, predictor, pack, settings.data_dir, rows, manifest.split("train"))
    metrics["behaviour"] = behaviour.model_dump(mode="json")
    write_metrics(metrics, out / "metrics.json")
    plots = task.report(metrics, y, outputs, list(pack.classes), domain, out)
    page = write_page(task, predictor, rows, values, outputs, domain, out / "explanations",
                      params.explain.report_records)
    if page is not None:
        plots = {**plots, "explanations": str(page)}
    sha = predictor.card.checkpoint_sha256
    # what the model learnt from, summarised for drift checks (packaged with the model)
    build_reference_sketch(pack, manifest, settings.data_dir, out / "model", out / SKETCH)
    shutil.copy2(out / SKETCH, store_model(out / "model", settings.var_dir, domain, sha) / SKETCH)
    keep = task.registry_metrics
    # version numbers and aliases: one registration at a time per domain, across processes and machines
    with locked_session(f"registry-{domain}", settings.catalog_url) as session:
        run = session.scalar(select(TrainingRun).where(
            TrainingRun.domain == domain, TrainingRun.checkpoint_sha256 == sha).order_by(TrainingRun.id.desc()))
        if run is None:
            raise NotFoundError(f"no training run in the catalog produced {out / 'model'}")
        metric = params.promote.metric if params.promote.metric in keep else task.promote_metric
        champion = get_alias(session, domain, "champion")
        champion_metrics, comparison = (None, None) if champion is None or champion.checkpoint_sha256 == sha else \
            _against(store_path(settings.var_dir, domain, champion.checkpoint_sha256), pack, values, y, outputs,
                     metric, params)
        reg = register(session, run, {k: metrics[k] for k in keep}, margin=params.promote.margin, metric=metric,
                       champion_metrics=champion_metrics, holdout=manifest.id, comparison=comparison,
                       staged=domain in params.release.staged)
        audit.record(session, "registered", domain, f"model:v{reg.version}", training_run=run.id, checkpoint_sha256=sha,
                     promoted=reg.promoted, release=reg.release, reason=reg.reason, metrics={k: metrics[k] for k in keep},
                     comparison=comparison.to_json() if comparison else None)
        approved = approval(session, domain, reg.model_version_id)
    write_card(build_card(predictor.card, pack.card, pack.task, manifest, {k: metrics[k] for k in task.headline_metrics},
                          metrics.get("per_class", {}), subsets,
                          {**calibration, **{k: metrics.get(k) for k in task.calibration_keys}},
                          Approval(**approved) if approved else None, reg.version, behaviour), out / CARD_DIR)
    # and beside the version's weights in the registry's store, where `mmops status` links it
    shutil.copytree(out / CARD_DIR, store_path(settings.var_dir, domain, sha) / CARD_DIR, dirs_exist_ok=True)
    plots = {**plots, "card": str(out / CARD_DIR / CARD_HTML)}
    return Evaluated(headline={k: metrics[k] for k in task.headline_metrics}, model_version=reg.version, plots=plots,
                     promoted=reg.promoted, release=reg.release, reason=reg.reason, metrics=str(out / "metrics.json"))


def _subset_metrics(task: Any, predictor: Any, values: list[dict[str, Any]], y: Any,
                    overall: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The task's modality metrics for every non-empty subset of the modalities: the test records that hold
    all of a subset, shown only those (one modality: the overall figures)."""
    from mmops.card.complete import modality_subsets

    names = predictor.pack.modality_names
    if len(names) == 1:
        return {(names[0],): overall}
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    classes = list(predictor.pack.classes)
    for subset in modality_subsets(list(names)):
        idx = [i for i, v in enumerate(values) if all(m in v for m in subset)]
        if not idx:
            found[subset] = {k: 0 if k == "n" else None for k in task.modality_metrics}
            continue
        sm = task.metrics(y[idx], task.outputs(predictor, [{m: values[i][m] for m in subset} for i in idx]),
                          classes)
        found[subset] = {k: sm[k] for k in task.modality_metrics}
    return found


def _trained_on(domain: str, training_run: int, checkpoint_sha256: str, model_dir: Path,
               settings: Settings) -> str:
    """The dataset version training run `training_run` trained on, checking that its model is the one in
    model_dir."""
    with session_scope(settings.catalog_url) as session:
        run = session.get(TrainingRun, training_run)
        if run is None or run.domain != domain:
            raise NotFoundError(f"no training run {training_run} of {domain}")
        if run.checkpoint_sha256 != checkpoint_sha256:
            raise ValidationFailedError(f"the model of training run {training_run} is no longer the one in "
                                        f"{model_dir} (a later training replaced it); evaluate that one instead")
        return run.dataset_version_id


def registry(domain: str) -> dict[str, Any]:
    """Model versions with lineage and aliases, and the promotion audit log."""
    from mmops.registry import describe

    settings, _, _ = resolve(domain)
    with session_scope(settings.catalog_url) as session:
        return describe(session, domain)


def release(domain: str, version: int | None = None) -> dict[str, Any]:
    """A version's lineage from raw files to deployment (mmops/release.py); default: the champion."""
    from mmops.release import lineage

    settings, _, _ = resolve(domain)
    with session_scope(settings.catalog_url) as session:
        return lineage(session, domain, version)


def promote(domain: str, version: int, reason: str, actor: str | None = None) -> dict[str, Any]:
    """Make a registered version champion by hand (rollback or override); written to the audit log."""
    from mmops.registry import promote as do_promote

    settings, _, _ = resolve(domain)
    with locked_session(f"registry-{domain}", settings.catalog_url) as session:
        actor = actor or audit.current_actor()
        mv = do_promote(session, domain, version, actor, reason)
        audit.record(session, "promoted", domain, f"model:v{mv.version}", actor=actor, reason=reason,
                     checkpoint_sha256=mv.checkpoint_sha256)
        return {"domain": domain, "champion": mv.version, "checkpoint_sha256": mv.checkpoint_sha256}


def rollback(domain: str, reason: str, url: str | None = None, actor: str | None = None) -> dict[str, Any]:
    """The previous champion made champion again in the registry (registry.rollback) and, with `url`, swapped
    into the running service (POST /admin/reload: requests in flight finish on the one they started on).
    The registry changes first: a service that cannot be reached is said, and `mmops reload` finishes it."""
    from mmops.registry import rollback as do_rollback
    from mmops.stages.deploy import reload_service

    settings, _, _ = resolve(domain)
    started = time.perf_counter()
    with locked_session(f"registry-{domain}", settings.catalog_url) as session:
        actor = actor or audit.current_actor()
        restored, replaced = do_rollback(session, domain, actor, reason)
        audit.record(session, "rolled_back", domain, f"model:v{restored.version}", actor=actor, reason=reason,
                     replaced=f"model:v{replaced.version}", checkpoint_sha256=restored.checkpoint_sha256)
        tag = restored.bento_model_tag
    out = {"domain": domain, "champion": restored.version, "replaced": replaced.version, "model_tag": tag}
    if url is not None:
        if tag is None:
            raise NotFoundError(f"v{restored.version} of {domain} was never packaged: the registry rolled back, "
                                f"the service at {url} still serves v{replaced.version}")
        out["service"] = reload_service(domain, url, tag)
    return {**out, "seconds": round(time.perf_counter() - started, 3)}


def _against(model_dir: Path, pack: DomainPack, values: list[dict[str, Any]], y: Any, outputs: Any, metric: str,
             params: Any) -> tuple[dict[str, Any] | None, Any]:
    """The stored champion re-scored on this holdout (its metrics; None when it cannot be scored here) and
    the paired bootstrap of the challenger's outputs against its own (None when off or not re-scored)."""
    from mmops.promotion import paired_bootstrap

    rescored = _rescore(model_dir, pack, values)
    if rescored is None:
        return None, None
    task = task_of(pack.task)
    comparison = paired_bootstrap(metric, y, outputs, rescored, task.decisions, params.promote.resamples,
                                  params.promote.confidence, params.seed) if params.promote.resamples else None
    return task.metrics(y, rescored, list(pack.classes)), comparison


def _rescore(model_dir: Path, pack: DomainPack, values: list[dict[str, Any]]) -> Any:
    """A stored model's outputs on this holdout, or None when it cannot be scored here."""
    task = task_of(pack.task)
    try:
        old = task.load(model_dir)
    except (MmopsError, OSError, KeyError, RuntimeError) as exc:
        log.warning("champion at %s cannot be re-scored: %s", model_dir, exc)
        return None
    if (list(old.pack.classes) != list(pack.classes) or old.pack.task != pack.task
            or set(old.pack.modality_names) != set(pack.modality_names)):
        return None
    return task.outputs(old, values)
