"""Drift monitoring: what the service saw against what its model learnt from.

The decision streams the current data (the service's prediction log, or a held-out split) through the
model's reference sketch (`mmops.drift`; built when the model is trained and shipped inside it), so the
reference set is never re-read and the cost grows linearly with the log. What is checked: the per-modality
summary statistics recorded at ingest, the predicted class, and each modality's embedding. Evidently renders
the reports people read (data drift, and embedding drift per modality) on uniform samples of both sides (each
report says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmops.datasets.build import Manifest
from mmops.domains import DomainPack
from mmops.drift import EMBEDDING_SAMPLE, DriftCheck, DriftVerdict, ReferenceSketch
from mmops.serving.predlog import flatten_features, read_line

log = logging.getLogger(__name__)

SKETCH = "reference_sketch.json"  # artifacts/<domain>/ (evaluate writes it) and inside a packaged model
SAMPLE_ROWS = 2000  # rows of each side that Evidently renders
LOG_CHUNK = 10_000  # prediction-log lines per streamed chunk


@dataclass(frozen=True)
class DriftResult:
    verdict: DriftVerdict
    n_reference: int
    sample_reference: int
    sample_current: int
    skipped_lines: int
    html_path: Path
    json_path: Path
    snapshots: dict[str, Any]  # Evidently's reports of the samples (for the dashboard): "sample", "embedding:<m>"

    @property
    def drifted(self) -> bool:
        return self.verdict.drifted


def reference_frame(manifest: Manifest, split: str = "train") -> Any:
    import pandas as pd

    return pd.DataFrame([flatten_features({m: f.get("stats", {}) for m, f in r["files"].items()})
                         for r in manifest.split(split)])


# what task kinds' `observe` adds beside the ingest statistics: the prediction, and the numbers the service logs
# as a record's `outputs` (an anomaly detector's score, and of a multimodal one each modality's score,
# `<modality>.anomaly_score`, which joins that modality's group of columns)
LOGGED_OUTPUTS = ("anomaly_score",)


def is_answer_column(column: str) -> bool:
    """A column of the model's answers (not an input statistic)."""
    return column == "prediction" or is_logged_output(column)


def is_logged_output(name: str) -> bool:
    """An output the service logs: one of LOGGED_OUTPUTS, or `<modality>.` one of them."""
    return name.rsplit(".", 1)[-1] in LOGGED_OUTPUTS


def observe_split(pack: DomainPack, manifest: Manifest, data_dir: Path, model_dir: Path,
                  split: str) -> tuple[Any, dict[str, np.ndarray]]:
    """A split as the service would log it: ingest statistics, the model's predicted class, and each
    modality's embedding (NaN rows where a record lacks the modality)."""
    from mmops.datasets.tensors import load_split
    from mmops.tasks import task_of

    task = task_of(pack.task)
    predictor = task.load(model_dir)
    rows = manifest.split(split)
    outputs, embeddings = task.observe(predictor, load_split(pack, data_dir, rows), list(pack.classes))
    frame = reference_frame(manifest, split)
    for column, values in outputs.items():
        frame[column] = values
    return frame, embeddings


def build_reference_sketch(pack: DomainPack, manifest: Manifest, data_dir: Path, model_dir: Path,
                           path: Path) -> ReferenceSketch:
    """What the model in model_dir learnt from, written to `path` (packaging ships it with the model). The ingest
    statistics come from the training and validation splits; the model's own outputs (predicted class,
    embeddings) from the validation split only: on records it was fitted to, a model's embeddings and answers
    are tighter than on anything new, and a check against them would call every new day drift."""
    import pandas as pd

    from mmops.card import read_card

    val_frame, embeddings = observe_split(pack, manifest, data_dir, model_dir, "val")
    answers = [c for c in val_frame.columns if is_answer_column(c)]
    features = pd.concat([reference_frame(manifest, "train"), val_frame.drop(columns=answers)], ignore_index=True)
    card = read_card(model_dir)
    sketch = ReferenceSketch.build(features, meta={
        "features": "train + val splits", "outputs": "val split", "dataset_version": manifest.id,
        "checkpoint_sha256": card.checkpoint_sha256}, sample_rows=SAMPLE_ROWS)
    outputs = ReferenceSketch.build(val_frame[answers], categorical=["prediction"], embeddings=embeddings)
    sketch.columns.update(outputs.columns)
    sketch.embeddings.update(outputs.embeddings)
    sketch.save(path)
    return sketch


def _lines(paths: Path | list[Path]) -> Iterator[str]:
    for path in [paths] if isinstance(paths, Path) else paths:
        if path.exists():
            with path.open(encoding="utf-8", errors="replace") as fh:
                yield from fh


def iter_prediction_log(paths: Path | list[Path], model_sha: str | None, dims: dict[str, int],
                        since: float | None = None,
                        chunk_rows: int = LOG_CHUNK) -> Iterator[tuple[Any, dict[str, np.ndarray], int]]:
    """The service's prediction log (JSON lines; one file, or one per replica) in chunks: (features +
    prediction frame, embeddings, lines skipped). Lines of other models, or older than `since` (epoch
    seconds), are left out; corrupt lines are counted and skipped, not fatal."""
    import pandas as pd

    def chunk(rows: list[dict], embs: list[dict]) -> tuple[Any, dict[str, np.ndarray]]:
        out = {}
        for m, dim in dims.items():
            arr = np.full((len(embs), dim), np.nan)
            for i, e in enumerate(embs):
                v = e.get(m)
                if isinstance(v, list) and len(v) == dim:
                    arr[i] = v
            out[m] = arr
        return pd.DataFrame(rows), out

    rows: list[dict] = []
    embs: list[dict] = []
    bad = 0
    for line in _lines(paths):
        entry = read_line(line)
        if entry is None:
            bad += 1
            continue
        if model_sha and entry.checkpoint_sha256 != model_sha:
            continue
        if since is not None and not (entry.ts is not None and entry.ts >= since):
            continue
        rows.append({**entry.features, "prediction": entry.prediction,
                     **{k: v for k, v in entry.outputs.items() if is_logged_output(k)}})
        embs.append(entry.embeddings)
        if len(rows) >= chunk_rows:
            yield (*chunk(rows, embs), bad)
            rows, embs, bad = [], [], 0
    if rows or bad:
        yield (*chunk(rows, embs), bad)


def read_ground_truth(paths: list[Path]) -> tuple[dict[str, str], list[str]]:
    """Labels that arrived after serving, by record id (a later file overrides an earlier one), and the files
    that could not be read (named, never silently dropped)."""
    from mmops.errors import MmopsError
    from mmops.labeling.files import read_label_file

    truth: dict[str, str] = {}
    problems: list[str] = []
    for path in paths:
        try:
            rows = read_label_file(path)
        except MmopsError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        truth.update({r["sample_id"].strip(): r["label"].strip() for r in rows if r.get("sample_id", "").strip()})
    return truth, problems


def served_performance(paths: Path | list[Path], model_sha: str | None, since: float | None,
                       truth: dict[str, str]) -> dict[str, Any]:
    """The served model's performance in the window: on the logged predictions whose ground truth has come in
    (joined by record id; the latest answer per id counts, across replicas by its timestamp), and estimated
    without labels on every answer (mmops.estimation: `estimated_accuracy` with its 95 % band), and on the
    labeled ones alone (`estimated_accuracy_labeled`, beside `accuracy`)."""
    from sklearn.metrics import accuracy_score, f1_score

    from mmops.estimation import estimate_accuracy

    answered: dict[str, tuple[float, str, float | None]] = {}
    unnamed: list[float] = []  # answers without a record id: each its own
    for line in _lines(paths):
        entry = read_line(line)
        if entry is None or (model_sha and entry.checkpoint_sha256 != model_sha):
            continue
        ts = entry.ts if entry.ts is not None else float("-inf")
        if since is not None and ts < since:
            continue
        rid = entry.record_id
        if rid is None:
            if entry.confidence is not None:
                unnamed.append(entry.confidence)
        elif rid not in answered or ts >= answered[rid][0]:
            answered[rid] = (ts, str(entry.prediction), entry.confidence)
    confident = [c for _, _, c in answered.values() if c is not None] + unnamed
    found: dict[str, Any] = {"n_labeled": 0, "accuracy": None, "macro_f1": None, "estimated_accuracy_labeled": None,
                             **estimate_accuracy(confident)}
    labeled = [r for r in answered if r in truth]
    if not labeled:
        return found
    y_true = [truth[r] for r in labeled]
    y_pred = [answered[r][1] for r in labeled]
    on_labeled = [c for r in labeled if (c := answered[r][2]) is not None]
    return {**found, "n_labeled": len(labeled), "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "estimated_accuracy_labeled": estimate_accuracy(on_labeled)["estimated_accuracy"]}


def last_logged_model(paths: Path | list[Path], tail_bytes: int = 1 << 20) -> str | None:
    """The checkpoint that answered the most recent readable line (of any replica's log): the model the
    service serves now."""
    newest: tuple[float, str] | None = None
    for path in [paths] if isinstance(paths, Path) else paths:
        if not path.exists():
            continue
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail_bytes))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
        for line in reversed(lines):
            entry = read_line(line)
            if entry is not None and entry.checkpoint_sha256 is not None:
                ts = entry.ts if entry.ts is not None else float("-inf")
                if newest is None or ts > newest[0]:
                    newest = (ts, entry.checkpoint_sha256)
                break
    return newest[1] if newest else None


class _Sample:
    """A uniform sample without replacement of a stream of frames (the k rows with the smallest random keys)."""

    def __init__(self, k: int, seed: int = 0) -> None:
        self.k, self.rng, self.kept, self.keys = k, np.random.default_rng(seed), None, np.zeros(0)

    def add(self, frame: Any) -> None:
        import pandas as pd

        keys = self.rng.random(len(frame))
        both = frame if self.kept is None else pd.concat([self.kept, frame], ignore_index=True)
        all_keys = np.concatenate([self.keys, keys])
        order = np.argsort(all_keys, kind="stable")[: self.k]
        self.kept, self.keys = both.iloc[order].reset_index(drop=True), all_keys[order]

    def frame(self) -> Any:
        import pandas as pd

        return self.kept if self.kept is not None else pd.DataFrame()


def check_drift(sketch: ReferenceSketch, chunks: Iterator[tuple[Any, dict[str, np.ndarray], int]],
                drift_share: float, out_dir: Path, title: str) -> DriftResult:
    """Stream `chunks` through the sketch; write the verdict (JSON) and Evidently's report on samples (HTML)."""
    from collections import Counter

    import pandas as pd

    check, sample, skipped, predicted = DriftCheck(sketch), _Sample(SAMPLE_ROWS), 0, Counter[str]()
    emb_samples = {g: _Sample(EMBEDDING_SAMPLE, seed=1 + i) for i, g in enumerate(sorted(sketch.embeddings))}
    for frame, embeddings, bad in chunks:
        skipped += bad
        if len(frame):
            check.update(frame, embeddings)
            sample.add(frame)
            if "prediction" in frame:
                predicted.update(str(p) for p in frame["prediction"].dropna())
            for g, emb in embeddings.items():
                if g in emb_samples:
                    emb_samples[g].add(pd.DataFrame(emb[np.all(np.isfinite(emb), axis=1)]))
    verdict = check.verdict(drift_share)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / "drift_report.html", out_dir / "drift_report.json"
    ref_sample, cur_sample = sketch.sample_frame(), sample.frame()
    rendered, snapshot = render_report(ref_sample, cur_sample, html_path,
                             f"{title}: Evidently on a sample of {len(ref_sample)} reference and {len(cur_sample)} "
                             f"current rows (of {sketch.n_rows} and {verdict.n_current}); the verdict in "
                             f"drift_report.json is the streaming check on all rows")
    snapshots = {"sample": snapshot} if snapshot is not None else {}
    rendered_embeddings = {}
    for g, cur in emb_samples.items():
        n_current = verdict.embeddings[g].n_current  # the verdict has an entry for every sketch embedding
        rendered_embeddings[g], emb_snapshot = render_embedding_report(
            g, sketch.embeddings[g].sample, cur.frame().to_numpy(dtype=np.float64),
            out_dir / f"embedding_drift_{g}.html",
            f"{title}: Evidently's embedding drift for {g}, on samples of {sketch.embeddings[g].n} reference and "
            f"{n_current} current embeddings in all; the verdict in drift_report.json is the streaming check on all")
        if emb_snapshot is not None:
            snapshots[f"embedding:{g}"] = emb_snapshot
    json_path.write_text(json.dumps({"title": title, "n_reference": sketch.n_rows, "skipped_lines": skipped,
                                     "reference": sketch.meta, **verdict.to_json(),
                                     "prediction_counts": dict(sorted(predicted.items())),
                                     "evidently_sample": rendered,
                                     "evidently_embeddings": rendered_embeddings}, indent=2, default=str),
                         encoding="utf-8")
    if skipped:
        log.warning("%s: %d unreadable prediction-log lines skipped", title, skipped)
    return DriftResult(verdict, sketch.n_rows, len(ref_sample), len(cur_sample), skipped, html_path, json_path,
                       snapshots)


def evidently_verdicts(raw: dict[str, Any]) -> tuple[float, dict[str, dict[str, Any]]]:
    """(share of drifted columns, column -> {method, score, threshold, drifted}) from an Evidently snapshot's
    dict (DataDriftPreset)."""
    share, columns = 0.0, {}
    for metric in raw["metrics"]:
        cfg = metric.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            method, score, thr = cfg.get("method", ""), float(metric["value"]), float(cfg.get("threshold", 0.05))
            drifted = score <= thr if "K-S" in method else score < thr if "p_value" in method else score >= thr
            columns[cfg["column"]] = {"method": method, "score": score, "threshold": thr, "drifted": drifted}
    return share, columns


def _with_banner(html_path: Path, title: str) -> None:
    """Evidently keeps a report's title in the snapshot's metadata but does not render it: say it at the top."""
    import html

    page = html_path.read_text(encoding="utf-8")
    banner = (f'<div style="font-family:sans-serif;padding:12px 16px;background:#f4f4f4;border-bottom:1px solid #ccc">'
              f"<b>{html.escape(title)}</b></div>")
    html_path.write_text(page.replace("<body>", "<body>" + banner, 1), encoding="utf-8")


TSNE_PERPLEXITY = 30  # scikit-learn's default, which Evidently's embedding plot uses: it needs more rows


def render_embedding_report(group: str, reference: np.ndarray, current: np.ndarray, html_path: Path,
                            title: str) -> tuple[dict[str, Any], Any]:
    """Evidently's embedding drift report of two uniform samples of a modality's embeddings (its `distance`
    method with bootstrap, and its t-SNE plot of both sides), as HTML; returns Evidently's verdict, for the
    record, and the snapshot (None, with the reason, when the samples are too small for Evidently).

    Evidently's bootstrap draws n_ref**2 // (n_ref + n_cur) reference rows (none: a NaN mean, then a crash), so
    a small reference takes a smaller current sample: its first rows, a uniform sample too."""
    n_ref = len(reference)
    current = current[: max(0, n_ref * n_ref // 2 - n_ref)]  # keeps n_ref**2 >= 2 (n_ref + n_cur)
    n_cur = len(current)
    if n_cur < 2 or n_ref + n_cur <= TSNE_PERPLEXITY:
        html_path.unlink(missing_ok=True)  # a previous check's report would pass for this one's
        return {"skipped": f"too few embeddings for Evidently ({n_ref} reference, {n_cur} current): its bootstrap "
                           "draws reference**2 / (reference + current) rows, which must be at least 2, and its "
                           f"t-SNE plot needs more than {TSNE_PERPLEXITY} rows together"}, None
    title = f"{title} (Evidently's samples: {n_ref} reference, {n_cur} current)"
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import DistanceDriftMethod

    cols = [f"{group}.embedding.{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(numerical_columns=cols, embeddings={group: cols})
    ref, cur = pd.DataFrame(reference, columns=cols), pd.DataFrame(current, columns=cols)
    method = DistanceDriftMethod(bootstrap=True)
    snapshot = Report([EmbeddingsDrift(embeddings_name=group, drift_method=method)], metadata={"title": title},
                      tags=["embedding-sample"]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition))
    snapshot.save_html(str(html_path))
    _with_banner(html_path, title)
    # the metric's value is the score; the same method says whether that is drift (it is deterministic)
    score, drifted, _ = method(cur, ref)
    return {"method": "distance (euclidean, bootstrap 95th pct)", "score": float(score), "drifted": bool(drifted),
            "n_reference": len(ref), "n_current": len(cur), "html": str(html_path)}, snapshot


def render_report(reference: Any, current: Any, html_path: Path, title: str) -> tuple[dict[str, Any], Any]:
    """Evidently's data-drift report of two frames (HTML); returns its own verdicts, for the record, and the
    snapshot (None when there was nothing to compare)."""
    cols = sorted(set(reference.columns) & set(current.columns) - {"prediction"})
    # Drift on a constant column is undefined: leave it to the streaming check.
    cols = [c for c in cols if reference[c].nunique() > 1 or current[c].nunique() > 1]
    if not cols or reference.empty or current.empty:
        html_path.write_text(f"<html><body><h1>{title}</h1><p>Nothing to compare.</p></body></html>",
                             encoding="utf-8")
        return {"columns": 0}, None
    import warnings

    from evidently import Report
    from evidently.presets import DataDriftPreset

    with warnings.catch_warnings():  # scipy's divide-by-zero inside Evidently's tests on small samples
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset()], metadata={"title": title}, tags=["sample"]).run(
            current_data=current[cols].astype(float), reference_data=reference[cols].astype(float))
    snapshot.save_html(str(html_path))
    _with_banner(html_path, title)
    share, columns = evidently_verdicts(snapshot.dict())
    return {"columns": len(columns), "drift_share": share,
            "drifted_columns": sorted(c for c, v in columns.items() if v["drifted"])}, snapshot
