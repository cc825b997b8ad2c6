"""Drift monitoring: Evidently data-drift reports (HTML + JSON) of what the service saw against the training
data of the model that served it. Features are the per-modality summary statistics recorded at ingest."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmops.datasets.build import Manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftResult:
    n_reference: int
    n_current: int
    drift_share: float
    drifted: bool
    drifted_columns: list[str]
    columns: dict[str, dict[str, Any]]  # column -> {method, score, drifted}
    html_path: Path
    json_path: Path


def flatten_features(per_modality: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{m}.{k}": float(v) for m, stats in sorted(per_modality.items()) for k, v in sorted(stats.items())}


def reference_frame(manifest: Manifest, split: str = "train") -> Any:
    import pandas as pd

    return pd.DataFrame([flatten_features({m: f.get("stats", {}) for m, f in r["files"].items()})
                         for r in manifest.split(split)])


def read_prediction_log(path: Path, model_sha: str | None = None) -> Any:
    """Rows of the service's prediction log (JSON lines); corrupt lines are counted and skipped, not fatal."""
    import pandas as pd

    rows, bad = [], 0
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if model_sha and entry.get("checkpoint_sha256") != model_sha:
                continue
            rows.append({**entry.get("features", {}), "prediction": entry.get("prediction")})
    if bad:
        log.warning("%s: %d unreadable lines skipped", path, bad)
    return pd.DataFrame(rows)


def drift_report(reference: Any, current: Any, drift_share: float, out_dir: Path, title: str) -> DriftResult:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    cols = sorted(set(reference.columns) & set(current.columns) - {"prediction"})
    # Drift on a constant column is undefined; report it but let the others decide.
    cols = [c for c in cols if reference[c].nunique() > 1 or current[c].nunique() > 1]
    ref, cur = reference[cols].astype(float), current[cols].astype(float)
    snapshot = Report([DataDriftPreset(drift_share=drift_share)],
                      metadata={"title": title}).run(current_data=cur, reference_data=ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift_report.html", out_dir / "drift_report.json"
    snapshot.save_html(str(html_path))
    raw = snapshot.dict()
    share, columns = 0.0, {}
    for metric in raw["metrics"]:
        cfg = metric.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            method, score, thr = cfg.get("method", ""), float(metric["value"]), float(cfg.get("threshold", 0.05))
            drifted = score < thr if "p_value" in method else score > thr
            columns[cfg["column"]] = {"method": method, "score": score, "threshold": thr, "drifted": drifted}
    drifted_cols = sorted(c for c, v in columns.items() if v["drifted"])
    result = DriftResult(len(ref), len(cur), share, share >= drift_share, drifted_cols, columns, html_path,
                         json_path)
    json_path.write_text(json.dumps({"title": title, "n_reference": len(ref), "n_current": len(cur),
                                     "drift_share": share, "drift_share_threshold": drift_share,
                                     "drifted": result.drifted, "drifted_columns": drifted_cols,
                                     "columns": columns, "evidently": raw}, indent=2, default=str))
    return result
