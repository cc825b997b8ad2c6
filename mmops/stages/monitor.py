"""Monitoring as a stage: drift of what the served model sees against its reference sketch, served
performance on late ground truth, the verdict in the catalog and the dashboard."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmops.card import ModelCard
from mmops.catalog import DriftReport, session_scope
from mmops.config import Settings
from mmops.context import artifacts, load_manifest
from mmops.datasets.build import Manifest
from mmops.domains import DomainPack
from mmops.errors import NotFoundError
from mmops.serving.predlog import log_files
from mmops.stages.common import Progress, jsonable, model_version, resolve
from mmops.stages.data import ground_truth_files
from mmops.stages.results import Monitored
from mmops.tasks import task_of

log = logging.getLogger(__name__)


def _counted(chunks: Iterator[tuple[Any, Any, int]], progress: Callable[..., None]) -> Iterator[tuple[Any, Any, int]]:
    """The chunks as they are, telling `progress` how many records went by (and when they are all in)."""
    rows = 0
    for chunk in chunks:
        rows += len(chunk[0])
        progress(rows, False)
        yield chunk
    progress(rows, True)


def _tallied(chunks: Iterator[tuple[Any, Any, int]], tally: Callable[[Any], dict[str, int]],
             counts: dict[str, int]) -> Iterator[tuple[Any, Any, int]]:
    """The chunks as they are, adding each one's task-kind tally (mmops.tasks: `tally`) into counts."""
    for chunk in chunks:
        for k, v in tally(chunk[0]).items():
            counts[k] = counts.get(k, 0) + v
        yield chunk


def monitor(domain: str, current: str = "log", since: float | None = None, progress: Progress = None,
            ) -> Monitored:
    """Drift of what the served model sees against what it learnt from: the model's reference sketch (its
    training and validation splits) vs the service's prediction log (`log`) or the held-out test split run
    through the model (`test`, a no-drift baseline). The log is streamed, from `since` (epoch seconds;
    default: the last `monitor.window_hours`); the verdict goes to the catalog. The reference is the dataset
    version the model was trained on (its card says which), whatever was built since. progress(rows, done)
    after each streamed chunk, and once more (done=True) before the report is written."""
    from mmops.card import read_card
    from mmops.monitoring import (
        check_drift,
        iter_prediction_log,
        observe_split,
        read_ground_truth,
        served_performance,
    )

    settings, params, pack = resolve(domain)
    manifest = load_manifest(domain, settings)  # the current version: the test split, and a sketch's rebuild
    logs = log_files(settings.prediction_log_dir, domain)  # one file, or one per replica
    model_dir, sketch_path = _checked_model(domain, current, logs, settings)
    card = read_card(model_dir)
    sketch = _reference_sketch(pack, manifest, card, model_dir, sketch_path, settings)
    if current == "test":
        frame, embeddings = observe_split(pack, manifest, settings.data_dir, model_dir, "test")
        chunks = iter([(frame, embeddings, 0)])
    else:
        dims = {g: len(e.mean) for g, e in sketch.embeddings.items()}
        if since is None and params.monitor.window_hours > 0:
            since = time.time() - params.monitor.window_hours * 3600
        chunks = iter_prediction_log(logs, card.checkpoint_sha256, dims, since)
    window = "" if since is None or current != "log" else f" since {datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M} UTC"
    task = task_of(pack.task)
    counts: dict[str, int] = {}
    chunks = _tallied(chunks, task.tally, counts)
    if progress is not None:
        chunks = _counted(chunks, progress)
    result = check_drift(sketch, chunks, params.monitor.drift_share_threshold,
                         artifacts(domain, settings) / "drift", f"mmops {domain}: {current}{window} vs reference")
    verdict = result.verdict
    if verdict.n_current == 0:
        raise NotFoundError(f"nothing to compare: no {current} records for {domain}{window}")
    truth, truth_problems = read_ground_truth(ground_truth_files(domain, settings))
    performance: dict[str, Any] = {"n_labeled": 0, "accuracy": None, "macro_f1": None, "estimated_accuracy": None}
    if current == "log":
        performance = served_performance(logs, card.checkpoint_sha256, since, truth)
    performance["unreadable_files"] = truth_problems
    # the estimate holds while the answers are calibrated for what comes in: not on drifted inputs, where a
    # model is as sure as ever and wrong more often (benchmarks/bench_estimation.py)
    performance["estimate_holds"] = None if performance.get("estimated_accuracy") is None else not verdict.drifted
    alerts = task.alerts(counts, card, params.monitor)  # beyond drift: a detector's flagged share
    for name, alert in alerts.items():
        if alert.get("alert"):
            log.warning("%s: %s alert: %s", domain, name, alert)
    report = _record(domain, current, card, result, performance, alerts, params.monitor, settings)
    dashboard = _add_to_dashboard(domain, pack, report, result.snapshots, settings)
    return Monitored(
        drift_share=verdict.drift_share, drifted=verdict.drifted, drifted_groups=verdict.drifted_groups,
        drifted_columns=verdict.drifted_columns, drifted_embeddings=verdict.drifted_embeddings,
        prediction_drifted=bool(verdict.columns.get("prediction") and verdict.columns["prediction"].drifted),
        n_reference=result.n_reference, n_current=verdict.n_current, skipped_lines=result.skipped_lines,
        performance=jsonable(performance), alerts=jsonable(alerts), dashboard=jsonable(dashboard), reference_dataset_version=card.dataset_version,
        html=str(result.html_path), json_path=str(result.json_path),
        embedding_html={g: r["html"] for g, r in report.get("evidently_embeddings", {}).items() if "html" in r})


def _checked_model(domain: str, current: str, logs: list[Path], settings: Settings) -> tuple[Path, Path]:
    """(model directory, reference sketch path) of the model to check: the pipeline's (`test`), or the one
    that answered the log's latest line, the one the service runs now (`log`)."""
    from mmops.monitoring import SKETCH, last_logged_model

    if current == "test":
        return artifacts(domain, settings) / "model", artifacts(domain, settings) / SKETCH
    if current != "log":
        raise NotFoundError(f"unknown current data {current!r} (log or test)")
    sha = last_logged_model(logs)
    if sha is None:
        raise NotFoundError(f"no logged predictions in {settings.prediction_log_dir / domain}.jsonl (or "
                            f"{domain}@<replica>.jsonl); send the service traffic, or use --current test")
    return _model_dir(domain, sha, settings)


def _reference_sketch(pack: DomainPack, manifest: Manifest, card: ModelCard, model_dir: Path,
                      sketch_path: Path, settings: Settings) -> Any:
    """The model's reference sketch; a missing one (or one of another model) is rebuilt from the dataset
    version the model was trained on, which must still be the current one: never from other data."""
    from mmops.drift import ReferenceSketch
    from mmops.monitoring import build_reference_sketch

    sketch = ReferenceSketch.load(sketch_path) if sketch_path.exists() else None
    if sketch is not None and sketch.meta.get("checkpoint_sha256") == card.checkpoint_sha256:
        return sketch
    if manifest.id != card.dataset_version:
        raise NotFoundError(f"{sketch_path} is missing or of another model, and the model's dataset version "
                            f"{card.dataset_version} is no longer the current one ({manifest.id}): rebuild "
                            "the sketch from that version (`dvc checkout` it, then `mmops evaluate`)")
    log.warning("%s is missing or of another model; building it from dataset version %s", sketch_path, manifest.id)
    return build_reference_sketch(pack, manifest, settings.data_dir, model_dir, sketch_path)


def _record(domain: str, current: str, card: ModelCard, result: Any, performance: dict[str, Any],
            alerts: dict[str, Any], limits: Any, settings: Settings) -> dict[str, Any]:
    """The verdict, the served performance (against the model's tested accuracy) and the task's alerts into
    the report file and the catalog; the report as written."""
    with session_scope(settings.catalog_url) as session:
        mv = model_version(session, domain, card.checkpoint_sha256)
        tested = (mv.metrics or {}).get("accuracy") if mv else None
        performance["test_accuracy"] = tested
        performance["degraded"] = bool(
            performance["accuracy"] is not None and tested is not None
            and performance["n_labeled"] >= limits.min_labeled
            and performance["accuracy"] < tested - limits.accuracy_drop)
        report = _add_performance(result.json_path, performance, alerts)
        verdict = result.verdict
        session.add(DriftReport(domain=domain, model_version_id=mv.id if mv else None,
                                reference_dataset_version_id=card.dataset_version, current_source=current,
                                n_reference=result.n_reference, n_current=verdict.n_current,
                                drift_share=verdict.drift_share, drifted=verdict.drifted,
                                drifted_columns=verdict.drifted_columns + [
                                    f"embedding:{g}" for g in verdict.drifted_embeddings],
                                html_path=str(result.html_path), json_path=str(result.json_path)))
    return report


def _add_performance(json_path: Path, performance: dict[str, Any], alerts: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    report["performance"], report["alerts"] = performance, alerts
    json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report


def _add_to_dashboard(domain: str, pack: DomainPack, report: dict[str, Any], samples: dict[str, Any],
                      settings: Settings) -> dict[str, Any]:
    """The check's snapshots into the domain's dashboard project. The verdict is already recorded (JSON,
    catalog): a dashboard that cannot be written is reported, loudly, without failing the check."""
    from mmops.dashboards import add_check

    try:
        return add_check(domain, pack, report, samples, settings=settings)
    except Exception as exc:  # noqa: BLE001 - Evidently's workspace errors have no common base class
        log.error("%s: the check could not be added to the dashboard workspace: %s", domain, exc)
        return {"error": str(exc)}


def _model_dir(domain: str, sha: str, settings: Settings) -> tuple[Path, Path]:
    """(model directory, reference sketch path) of a checkpoint: the pipeline's model, or the registry's copy."""
    from mmops.card import read_card
    from mmops.monitoring import SKETCH
    from mmops.registry import store_path

    here = artifacts(domain, settings)
    if (here / "model" / "model_card.json").exists() and read_card(here / "model").checkpoint_sha256 == sha:
        return here / "model", here / SKETCH
    stored = store_path(settings.var_dir, domain, sha)
    if (stored / "model_card.json").exists():
        return stored, stored / SKETCH
    raise NotFoundError(f"the {domain} service's log comes from checkpoint {sha[:12]}, which is not in this "
                        "project's registry: monitor from the project that trained it")
