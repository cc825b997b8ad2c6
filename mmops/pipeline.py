"""One function per stage: the single entry point that the CLI, dvc.yaml, the Airflow DAGs and tests call.

The stages live in mmops/stages/, one module per group; this module names them, and STAGES maps the names
that the faces use (CLI commands, dvc stages, Airflow tasks) to them.
"""

from __future__ import annotations

from collections.abc import Callable

from mmops.context import artifacts, load_manifest, manifest_path
from mmops.stages.common import Progress
from mmops.stages.data import ground_truth_files, ingest, plan_ingest, pull_data, pull_domain
from mmops.stages.dataset import build, profile_suites, validate
from mmops.stages.deploy import audit_log, package, record_deploy, reload_service
from mmops.stages.evaluate import evaluate, promote, registry
from mmops.stages.labels import export_tasks, import_annotations, label, prelabel
from mmops.stages.monitor import monitor
from mmops.stages.results import StageResult
from mmops.stages.train import Nodes, join_training, train

__all__ = [
    "STAGES", "Nodes", "Progress", "StageResult", "artifacts", "audit_log", "build", "evaluate", "export_tasks",
    "ground_truth_files", "import_annotations", "ingest", "join_training", "label", "load_manifest",
    "manifest_path", "monitor", "package", "plan_ingest", "prelabel", "profile_suites", "promote",
    "pull_data", "pull_domain", "record_deploy", "registry", "reload_service", "train", "validate",
]

STAGES: dict[str, Callable[..., StageResult]] = {
    "ingest": ingest, "plan_ingest": plan_ingest, "label": label, "prelabel": prelabel, "export_tasks": export_tasks,
    "validate": validate, "build": build, "train": train,
    "evaluate": evaluate, "package": package, "monitor": monitor,
}
