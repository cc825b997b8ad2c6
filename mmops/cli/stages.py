"""One command per pipeline stage: ingest, label, validate, build, train, evaluate, package, monitor,
the review queue and Label Studio imports, and `run` (every stage of a domain in order)."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any

import typer

from mmops.cli.common import (
    AsJson,
    Domain,
    ProgressLine,
    app,
    guarded,
    listed_domains,
    out,
    progress_ingest,
    progress_train,
    stage_command,
)


@app.command()
def ingest(domain: Domain, as_json: AsJson = False) -> None:
    """Decode, hash, dedupe and catalog landed files; quarantine bad ones with a reason."""
    guarded(lambda: progress_ingest(domain), as_json, f"ingest {domain}:")


stage_command("label", "Labels from files (labels.csv/.json), Label Studio exports in landing/<domain>/annotations/ and "
       "the domain's rules; reports conflicts.")
stage_command("prelabel", "Champion-model pre-labels, the review queue by uncertainty, Label Studio tasks in "
       "artifacts/<domain>/labelstudio/.")


@app.command()
def validate(
    domain: Domain,
    profile: Annotated[bool, typer.Option(
        "--profile", help="write expectations/<domain>.yaml from the current dataset version, for review")] = False,
    as_json: AsJson = False,
) -> None:
    """Run the Great Expectations gate (exits 2 when it fails; Data Docs in artifacts/<domain>/data_docs)."""
    from mmops import pipeline

    guarded(lambda: pipeline.validate(domain, profile=profile), as_json,
         f"{'profile' if profile else 'validate'} {domain}:")


stage_command("build", "Build a dataset version (manifest + stratified splits) from gated, labeled records.")


@app.command()
def package(
    domain: Domain,
    runtime: Annotated[str | None, typer.Option(
        help="what answers in the service: torch, onnx or int8 (default: params.yaml serve.runtime, else torch); "
             "checked against eager torch on the test split")] = None,
    as_json: AsJson = False,
) -> None:
    """Save the model to the BentoML model store and build its bento."""
    from mmops import pipeline

    guarded(lambda: pipeline.package(domain, runtime=runtime), as_json, f"package {domain}:")


@app.command("annotations")
def import_annotations(
    export: Annotated[str, typer.Argument(help="a Label Studio JSON export (Export -> JSON)")],
    domain: Domain,
    as_json: AsJson = False,
) -> None:
    """Import a Label Studio export as human labels (with annotator and time)."""
    from mmops import pipeline

    guarded(lambda: pipeline.import_annotations(domain, export), as_json, f"annotations {domain}:")


@app.command("queue")
def queue(domain: Domain, limit: Annotated[int, typer.Option(help="rows to show")] = 20,
          as_json: AsJson = False) -> None:
    """The review queue: records waiting for a human label, the least sure (or the most anomalous) first."""
    from mmops.stages.labels import review_queue

    result = guarded(lambda: review_queue(domain, limit))
    if as_json:
        out.print_json(json.dumps(result))
        return
    from rich.table import Table

    if not result:
        out.print(f"the {domain} review queue is empty: every record has a human or file label, or "
                  f"`mmops prelabel --domain {domain}` has not run yet", highlight=False)
        return
    table = Table("record", "priority", "method", "suggested", "status", title=f"{domain} review queue")
    for r in result:
        table.add_row(r["key"], f"{r['score']:.3f}", r["method"], r["prediction"] or "-", r["status"])
    out.print(table)


@app.command()
def train(
    domain: Domain,
    resume: Annotated[bool, typer.Option(help="continue from the last epoch checkpoint of the same run")] = False,
    nproc: Annotated[int, typer.Option(min=1, help="distributed data parallel over N torchrun workers (per node)")] = 1,
    nnodes: Annotated[int, typer.Option(min=1, help="machines taking part (each runs this command)")] = 1,
    node_rank: Annotated[int, typer.Option(min=0, help="this machine's place: 0 records the run, others join")] = 0,
    master: Annotated[str | None, typer.Option(help="host:port of node 0, the same on every node")] = None,
    dataset: Annotated[str | None, typer.Option(help="the dataset version id `build` printed; default: the latest")]
    = None,
    as_json: AsJson = False,
) -> None:
    """Train the fusion model on a dataset version (CUDA when present; DDP with --nproc, across machines with
    --nnodes/--node-rank/--master)."""
    from mmops.pipeline import Nodes

    guarded(lambda: progress_train(domain, resume, Nodes(nproc, nnodes, node_rank, master), dataset), as_json,
            f"train {domain}:")


@app.command()
def evaluate(
    domain: Domain,
    run: Annotated[int | None, typer.Option(help="the training run `train` printed; default: the latest model")]
    = None,
    as_json: AsJson = False,
) -> None:
    """Test-split metrics, confusion matrix, registry (champion/challenger)."""
    from mmops import pipeline

    guarded(lambda: pipeline.evaluate(domain, training_run=run), as_json, f"evaluate {domain}:")


@app.command()
def monitor(
    domain: Domain,
    current: Annotated[str, typer.Option(help="log: the service's prediction log; test: held-out split")] = "log",
    hours: Annotated[float | None, typer.Option(
        help="read the log's last N hours (default: params.yaml monitor.window_hours; 0: all of it)")] = None,
    as_json: AsJson = False,
) -> None:
    """Drift of what the service saw against the served model's reference sketch (JSON verdict, Evidently
    report, catalog row); exits 0 either way: the verdict says whether it drifted."""
    import time

    since = None if hours is None else (time.time() - hours * 3600 if hours > 0 else 0.0)
    guarded(lambda: _progress_monitor(domain, current, since), as_json, f"monitor {domain}:")


def _progress_monitor(domain: str, current: str, since: float | None) -> Any:
    from mmops import pipeline

    with ProgressLine(f"monitor {domain}") as bar:

        def step(rows: int, done: bool) -> None:
            what = "writing the Evidently report" if done else "records checked against the reference"
            bar.update(f"monitor {domain}: {rows:,} {what}", force=done)

        return pipeline.monitor(domain, current, since, progress=step)


@app.command()
def run(
    domain: Annotated[list[str] | None, typer.Option("--domain", "-d")] = None,
    package: Annotated[bool, typer.Option(help="also package into BentoML")] = True,
) -> None:
    """Every stage from pull to package, for each domain."""
    from mmops import pipeline

    for d in domain or listed_domains():
        guarded(partial(pipeline.pull_domain, d), title=f"pull {d}:")
        guarded(partial(progress_ingest, d), title=f"ingest {d}:")
        for stage in ("label", "validate", "build"):
            guarded(partial(pipeline.STAGES[stage], d), title=f"{stage} {d}:")
        guarded(partial(progress_train, d), title=f"train {d}:")
        guarded(partial(pipeline.evaluate, d), title=f"evaluate {d}:")
        if package:
            guarded(partial(pipeline.package, d), title=f"package {d}:")
