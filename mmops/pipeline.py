"""One function per stage: the single entry point that the CLI, dvc.yaml, the Airflow DAGs and tests call.

The stages live in mmops/stages/, one module per group; this module names them, and STAGES maps the names
that the faces use (CLI commands, dvc stages, Airflow tasks) to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmops.context import artifacts, load_manifest, manifest_path
from mmops.stages.common import Progress
from mmops.stages.data import ground_truth_files, ingest, plan_ingest, pull_data, pull_domain
from mmops.stages.dataset import build, profile_suites, validate
from mmops.stages.deploy import audit_log, audit_verify, package, record_deploy, reload_service
from mmops.stages.evaluate import evaluate, promote, registry, release, rollback
from mmops.stages.labels import export_tasks, import_annotations, label, prelabel
from mmops.stages.monitor import monitor
from mmops.stages.results import StageResult
from mmops.stages.train import Nodes, join_training, train
from mmops.stages.trials import (
    canary_conclude,
    canary_start,
    canary_status,
    canary_stop,
    shadow_report,
    shadow_start,
    shadow_stop,
)

if TYPE_CHECKING:
    from mmops.datasets.build import Manifest

__all__ = [
    "STAGES", "Nodes", "canary_conclude", "canary_start", "canary_status", "canary_stop", "Progress", "StageResult", "artifacts", "audit_log", "audit_verify", "build", "evaluate", "export_tasks",
    "ground_truth_files", "import_annotations", "ingest", "join_training", "label", "load_manifest",
    "manifest_path", "monitor", "package", "plan_ingest", "prelabel", "profile_suites", "promote", "release", "rollback",
    "built_manifest", "pull_data", "pull_domain", "record_deploy", "registry", "reload_service", "shadow_report", "shadow_start", "shadow_stop", "train",
    "validate",
]

STAGES: dict[str, Callable[..., StageResult]] = {
    "ingest": ingest, "plan_ingest": plan_ingest, "label": label, "prelabel": prelabel, "export_tasks": export_tasks,
    "validate": validate, "build": build, "train": train,
    "evaluate": evaluate, "package": package, "monitor": monitor,
}


def built_manifest(domain: str) -> Manifest:
    """The domain's current dataset version (its Manifest). When it has none yet: its data landed (the pack
    params.yaml assigns, or the bundled pack of a domain params.yaml does not list yet), ingested, labeled,
    validated and built first."""
    from mmops.config import get_settings, load_params
    from mmops.datasets.packs import PACKS
    from mmops.errors import NotFoundError

    settings = get_settings()
    try:
        return load_manifest(domain, settings)
    except NotFoundError:
        pass
    bundled = next((p.name for p in PACKS.values() if p.domain == domain), None)
    if domain in load_params(settings.params_path).packs or bundled is None:
        pull_domain(domain)  # says so when params.yaml does not list the domain
    else:
        pull_data(bundled)
    for stage in ("ingest", "label", "validate", "build"):
        STAGES[stage](domain)
    return load_manifest(domain, settings)
