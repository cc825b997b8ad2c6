"""The things a person opens: the demo, the drift demo, the dashboard, and a local Airflow."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from mmops.cli.common import (
    Domain,
    app,
    console,
    guarded,
    listed_domains,
    out,
)
from mmops.errors import MmopsError


@app.command("airflow")
def airflow_standalone(
    port: Annotated[int, typer.Option(help="the UI and REST API")] = 8080,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    training_slots: Annotated[int, typer.Option(min=1, help="trainings at once (one per GPU)")] = 1,
) -> None:
    """Start Airflow 3 locally with the project's DAGs (scheduler, DAG processor, API server and UI); prints
    the URL and the login. Ctrl-C stops it."""
    from mmops.airflow_local import standalone
    from mmops.config import get_settings

    raise typer.Exit(guarded(lambda: standalone(get_settings(), port, host, console, training_slots)))


@app.command()
def demo(
    domain: Annotated[list[str] | None, typer.Option("--domain", "-d")] = None,
    port: Annotated[int | None, typer.Option(help="default: params.yaml serve.port; 0: any free port, per domain")] = None,
    requests: Annotated[int, typer.Option(help="held-out records sent to each service")] = 60,
) -> None:
    """The whole path on real data: pull, every stage, serve, real requests, drift report."""
    from mmops.config import load_params
    from mmops.demo import run_demo

    try:
        run_demo(list(domain or listed_domains()), load_params().serve.port if port is None else port, requests, out)
    except MmopsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="port of the dashboard on localhost")] = 8000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
) -> None:
    """Serve the monitoring dashboards (Evidently UI on monitoring/workspace/: one project per domain, a
    snapshot per monitoring check); Ctrl-C stops."""
    from mmops.config import get_settings
    from mmops.dashboards import open_workspace, ui_command

    open_workspace()  # an empty workspace before the first check, rather than an error
    console.print(f"dashboards on http://{host}:{port} (workspace monitoring/workspace); Ctrl-C stops",
                  highlight=False)
    raise typer.Exit(subprocess.call(ui_command(port, host), cwd=get_settings().root))


@app.command("drift-demo")
def drift_demo(
    domain: Domain,
    url: Annotated[str | None, typer.Option(help="a running service of the domain (default: start its champion)")] = None,
    port: Annotated[int | None, typer.Option(help="port of the service it starts (default: a free one)")] = None,
) -> None:
    """The monitoring loop on a served model: normal traffic (no drift, nothing triggered), then shifted
    traffic (sensor gain and offset, darker blurred images, another site's vocabulary): drift report, asset
    event, the training DAG it triggers (`airflow dags test`), the registry's decision. Run `mmops demo` (or
    `dvc repro`) first: it needs a packaged champion."""
    from mmops.drift_demo import run_drift_demo

    try:
        run_drift_demo(domain, out, url, port)
    except MmopsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
