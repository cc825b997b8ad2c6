"""Monitoring dashboards: an Evidently UI workspace (monitoring/workspace/) with one project per domain
deployment. Every monitoring check adds two snapshots to its domain's project:

- `verdict`: the streaming check's numbers on every logged record (drift share overall and per modality,
  per-feature drift strength, embedding distances, the predicted-class distribution, served accuracy on
  ground truth that came in), as Evidently `MeanValue` metrics of a one-row table, so the dashboard's panels
  plot them over time;
- `sample`: Evidently's own DataDriftPreset on the report sample (per-feature plots, opened from the
  project's report list);
- `embedding-sample`: per modality, Evidently's embedding drift (its `distance` method with bootstrap, and a
  t-SNE plot of reference and current embeddings) on samples of both sides.

`mmops dashboard` serves the workspace (`evidently ui`) on localhost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mmops.config import Settings, get_settings
from mmops.domains import DomainPack

log = logging.getLogger(__name__)

def workspace_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).root / "monitoring" / "workspace"


def project_name(domain: str) -> str:
    return f"mmops {domain}"


def drift_strength(method: str, score: float, threshold: float) -> float:
    """A feature's drift on one scale, whatever its test: >= 1 is past the test's own threshold (before the
    per-modality Bonferroni correction). p-value tests: log(p) / log(threshold); distances: score / threshold."""
    if not (math.isfinite(score) and math.isfinite(threshold)) or threshold <= 0:
        return 0.0
    if method in ("ks", "chisquare", "z"):
        return math.log(max(score, 1e-300)) / math.log(threshold)
    return score / threshold


# the report's performance figures -> the dashboard's columns
PERFORMANCE_COLUMNS = {"accuracy": "served_accuracy", "macro_f1": "served_macro_f1", "test_accuracy": "test_accuracy",
                       "estimated_accuracy": "estimated_accuracy"}


def verdict_row(report: dict[str, Any], pack: DomainPack) -> dict[str, float]:
    """The numbers the dashboard plots, from a check's drift_report.json (with its performance)."""
    row: dict[str, float] = {"drift_share": float(report["drift_share"]), "drifted": float(report["drifted"]),
                             "n_current": float(report["n_current"])}
    groups = report.get("group_shares", {})
    for m in pack.modality_names:
        row[f"share:{m}"] = float(groups.get(m, 0.0))
        row[f"drifted_features:{m}"] = float(sum(
            1 for c, d in report["columns"].items() if c.startswith(f"{m}.") and d["drifted"]))
    for col, d in sorted(report["columns"].items()):
        row[f"feature:{col}"] = round(drift_strength(d["method"], d["score"], d["threshold"]), 4)
    for g, d in sorted(report.get("embeddings", {}).items()):
        row[f"embedding:{g}"] = round(drift_strength(d["method"], d["score"], d["threshold"]), 4)
    counts = report.get("prediction_counts") or {}
    total = sum(counts.values()) or 1
    for c in pack.classes:
        row[f"predicted:{c}"] = counts.get(c, 0) / total
    perf = report.get("performance") or {}
    row["n_labeled"] = float(perf.get("n_labeled") or 0)
    for key, column in PERFORMANCE_COLUMNS.items():
        if perf.get(key) is not None:
            row[column] = float(perf[key])
    return row


def _panels(pack: DomainPack, feature_columns: list[str]) -> list[Any]:
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel, text_panel

    def mean(column: str, legend: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric="MeanValue", metric_labels={"column": column}, tags=["verdict"])

    mods = pack.modality_names
    return [
        text_panel(f"{pack.name}: what the service sees vs what the served model learnt from",
                   "The streaming check on every logged record (mmops monitor); a modality drifts when "
                   "drift_share_threshold of its statistics drift, an embedding past its no-drift 95th percentile."),
        counter_panel("Drift share (latest check)", [mean("drift_share", "share of statistics drifted")],
                      size="half"),
        counter_panel("Labeled records (latest check)", [mean("n_labeled", "ground truth joined")], size="half"),
        line_plot_panel("Drift share over time", [mean("drift_share", "all statistics")]
                        + [mean(f"share:{m}", m) for m in mods]),
        bar_plot_panel("Drifted features per modality", [mean(f"drifted_features:{m}", m) for m in mods],
                       size="half"),
        line_plot_panel("Embedding drift (distance / no-drift 95th percentile)",
                        [mean(f"embedding:{m}", m) for m in mods], size="half"),
        bar_plot_panel("Per-feature drift (>= 1: past its test's threshold)",
                       [mean(f"feature:{c}", c) for c in feature_columns]),
        bar_plot_panel("Prediction distribution", [mean(f"predicted:{c}", c) for c in pack.classes], stacked=True),
        line_plot_panel("Performance: estimated without labels, and on delayed ground truth",
                        [mean("estimated_accuracy", "estimated accuracy (every answer, no labels: CBPE)"),
                         mean("served_accuracy", "served accuracy"), mean("served_macro_f1", "served macro-F1"),
                         mean("test_accuracy", "test accuracy at evaluation")]),
    ]


def _project(ws: Any, pack: DomainPack, feature_columns: list[str]) -> Any:
    """The domain's project, created with its panels on the first check (a project a user laid out
    differently is left as it is)."""
    name = project_name(pack.name)
    project = next((p for p in ws.list_projects() if p.name == name), None)
    if project is None:
        project = ws.create_project(name, description=pack.description)
        for panel in _panels(pack, feature_columns):
            project.dashboard.add_panel(panel)
        project.save()
    return project


def add_check(domain: str, pack: DomainPack, report: dict[str, Any], samples: Mapping[str, Any] | None = None,
              when: datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Add a monitoring check to the domain's dashboard project: its verdict snapshot and Evidently's reports
    on the samples (`samples`: name -> snapshot). Returns the project id and the snapshot ids."""
    import pandas as pd
    from evidently import Report
    from evidently.metrics import MeanValue

    ws = open_workspace(settings)
    features = sorted(report["columns"])
    project = _project(ws, pack, features)
    row = verdict_row(report, pack)
    stamp = pd.Timestamp(when) if when else pd.Timestamp.now()
    snapshot = Report([MeanValue(column=c) for c in row], tags=["verdict"],
                      metadata={"title": report.get("title", ""), "drifted": str(report["drifted"])}).run(
        current_data=pd.DataFrame([row]), timestamp=stamp)
    ids = {"verdict": str(ws.add_run(project.id, snapshot).id)}
    for name, sample in (samples or {}).items():
        ids[name] = str(ws.add_run(project.id, sample).id)
    return {"project": str(project.id), "snapshots": ids, "workspace": str(workspace_dir(settings))}


def open_workspace(settings: Settings | None = None) -> Any:
    from evidently.ui.workspace import Workspace

    path = workspace_dir(settings)
    path.mkdir(parents=True, exist_ok=True)
    return Workspace.create(str(path))


def ui_command(port: int, host: str = "127.0.0.1", settings: Settings | None = None) -> list[str]:
    """`evidently ui` on the project's workspace."""
    import sys

    evidently = Path(sys.executable).parent / "evidently"
    return [str(evidently), "ui", "--workspace", str(workspace_dir(settings)), "--host", host, "--port", str(port)]
