"""`mmops demo`: every stage for every domain on the bundled real data, then the service under real requests
from held-out data, then drift reports; prints where to look."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from mmops import pipeline
from mmops.config import get_settings
from mmops.domains import load_domain
from mmops.processes import stop_group
from mmops.serving.client import (
    predict,
    record_payload,
    serve_command,
    service_env,
    wait_logged,
    wait_ready,
)
from mmops.stages.results import Validated
from mmops.tasks import task_of


def figures(metrics: dict[str, Any], names: tuple[str, ...]) -> str:
    """`macro_f1 0.912, auroc n/a`: the named figures of a metrics dict, as the task kind headlines them."""
    return ", ".join(f"{k} {metrics[k]:.3f}" if isinstance(metrics.get(k), float | int) else f"{k} n/a"
                     for k in names)


@contextmanager
def serving(domain: str, port: int) -> Iterator[str]:
    """`bentoml serve` of the domain's champion on localhost for the duration of the block (its log in
    var/logs/serve-<domain>.log); yields its URL. Port 0: one the system has free now."""
    settings = get_settings()
    port = port or _free_port()
    log_path = settings.var_dir / "logs" / f"serve-{domain}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(serve_command(port), env=service_env(domain), cwd=settings.root, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(url, proc, log=log_path)
            yield url
        finally:
            stop_group(proc)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_send(domain: str, port: int, n_requests: int, batch: int = 8) -> dict[str, Any]:
    """Start `bentoml serve` for the domain, send held-out test records, stop it. Returns counts."""
    settings = get_settings()
    manifest = pipeline.load_manifest(domain, settings)
    pack = load_domain(domain)
    rows = manifest.split("test")[:n_requests]
    with serving(domain, port) as url:
        answers = predict(url, [record_payload(pack, settings.data_dir, r) for r in rows], batch=batch)
        logged = wait_logged(url, len(rows))  # the log is written off the request path
    task = task_of(pack.task)
    correct = sum(task.agrees(pack, a["label"], r["label"]) for a, r in zip(answers, rows, strict=True))
    return {"sent": len(rows), "served_accuracy": correct / max(len(rows), 1), "logged": logged,
            "log": str(settings.var_dir / "logs" / f"serve-{domain}.log")}


def run_demo(domains: list[str], port: int, n_requests: int, console: Console) -> None:
    settings = get_settings()
    start = time.monotonic()
    rows = []
    for d in domains:
        console.rule(f"[bold]{d}")
        pull = pipeline.pull_domain(d)
        console.print(f"landed {pull['records']} records of {pull['pack']} in {pull['landing']}")
        ing = pipeline.ingest(d)
        console.print(f"ingested {ing.ingested} files, {ing.duplicates} shared content, {ing.quarantined} quarantined")
        lab = pipeline.label(d)
        rejected = sum(len(f["rejected"]) for f in lab.files)
        rules = lab.rules or {}
        console.print(f"labels: {lab.by_kind} chosen by kind, {rejected} rows rejected, {lab.conflicts} "
                      f"conflicts" + (f"; rules voted on {rules['voted']} of {rules['records']}" if rules.get("rules")
                                      else ""))
        gate = pipeline.validate(d)
        assert isinstance(gate, Validated)
        console.print(f"validation gate: passed {gate.n_expectations} expectations, {len(gate.warnings)} warnings")
        ds = pipeline.build(d)
        console.print(f"dataset {ds.dataset_version}: {ds.split_counts}")
        task = task_of(load_domain(d).task)
        tr = pipeline.train(d)
        console.print(f"trained on {tr.device} (task {task.name}, {tr.epochs_run} epochs); validation "
                      f"{figures(tr.val_metrics, (task.promote_metric,))}")
        ev = pipeline.evaluate(d)
        verdict = "promoted to champion" if ev.promoted else ev.reason
        console.print(f"test {figures(ev.headline, task.headline_metrics)}; model v{ev.model_version}: {verdict}")
        pre = pipeline.prelabel(d)
        model = pre.model or {}
        console.print(f"pre-labeled {model.get('records', 0)} records with {model.get('model_version')}; "
                      f"on {pre.disagreements} the model or the rules contradict the label (candidates for "
                      f"review: artifacts/{d}/label_conflicts.json); review queue {pre.queue['queued']}")
        pk = pipeline.package(d)
        console.print(f"packaged {pk.model_tag} -> bento {pk.bento_tag}")
        served = serve_and_send(d, port, n_requests)
        console.print(f"served {served['sent']} held-out records over HTTP, {served['served_accuracy']:.3f} of the "
                      "answers right")
        mon = pipeline.monitor(d, "log")
        console.print(f"drift: share {mon.drift_share:.2f} ({'DRIFT' if mon.drifted else 'no drift'}) -> {mon.html}")
        rows.append((d, task.name, ds.dataset_version, figures(ev.headline, task.headline_metrics[:2]),
                     str(pk.bento_tag), f"{mon.drift_share:.2f}"))
    table = Table(title=f"mmops demo ({time.monotonic() - start:.0f} s)")
    for col in ("domain", "task", "dataset version", "test", "bento", "drift share"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    root = settings.root
    console.print(f"""
[bold]Where to look[/bold]
  metrics and plots   {root}/artifacts/<domain>/metrics.json, confusion_matrix.png (anomaly_scores.png), roc.png
  drift reports       {root}/artifacts/<domain>/drift/drift_report.html, embedding_drift_<modality>.html
  dashboards          make dashboard   (Evidently UI on http://127.0.0.1:8000, a project per domain)
  the drift loop      make drift-demo DOMAIN=industrial   (shifted traffic -> drift -> asset -> retraining)
  catalog (SQLite)    {settings.catalog_url}
  quarantine          mmops quarantine list   (copies in {root}/quarantine/<domain>/)
  labeling            mmops queue --domain medical (or cardiac: flagged first); Label Studio tasks in {root}/artifacts/<domain>/labelstudio/
  serve a model       mmops serve --domain security   then POST http://127.0.0.1:3000/predict
  Airflow UI          make airflow   (AIRFLOW_HOME={root}/var/airflow; login printed there)
  reproduce           .venv/bin/dvc repro
""", highlight=False)
