"""Serving: start a domain's service, reload a running one, and predict on landed files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mmops.cli.common import (
    AsJson,
    Domain,
    app,
    console,
    guarded,
    out,
)
from mmops.errors import NotFoundError


@app.command()
def reload(
    domain: Domain,
    url: Annotated[str | None, typer.Option(help="the running service; default: http://127.0.0.1:<serve.port>")] = None,
    tag: Annotated[str | None, typer.Option(help="a BentoML model tag; default: the packaged champion")] = None,
    as_json: AsJson = False,
) -> None:
    """Swap the champion into a running service without a restart (requests in flight finish on the old one)."""
    from mmops import pipeline
    from mmops.config import load_params

    target = url or f"http://127.0.0.1:{load_params().serve.port}"
    guarded(lambda: pipeline.reload_service(domain, target, tag), as_json, f"reload {domain}:")


@app.command()
def serve(
    domain: Domain,
    port: Annotated[int | None, typer.Option(help="default: params.yaml serve.port")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
) -> None:
    """Serve the domain's packaged model with BentoML (POST /predict)."""
    from mmops import pipeline
    from mmops.config import get_settings, load_params
    from mmops.serving.client import serve_command

    port = port or guarded(load_params).serve.port
    env, tag = guarded(lambda: _servable(domain))
    url = f"http://{host}:{port}"
    guarded(lambda: pipeline.record_deploy(get_settings(), domain, tag, url, how="serve"))
    console.print(f"serving {domain} on {url} (POST /predict); Ctrl-C stops", highlight=False)
    # this process becomes `bentoml serve`: a signal (Ctrl-C, `kill`, a supervisor's stop) reaches the server
    # itself, which stops its workers, instead of a parent that would leave them running
    cmd = serve_command(port, host)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(get_settings().root)
    os.execve(cmd[0], cmd, env)


def _servable(domain: str) -> tuple[dict[str, str], str]:
    """The environment `bentoml serve` needs for the domain and the model tag it will serve, once the
    domain's pack loads and that model is in the store (a server started without either would only fail in
    its log)."""
    from mmops.config import get_settings
    from mmops.domains import load_domain
    from mmops.serving import bentoml_env
    from mmops.serving.client import service_env

    load_domain(domain)
    bentoml_env(get_settings())  # before BentoML's import: the project's model store
    import bentoml
    from bentoml.exceptions import NotFound

    env = service_env(domain)
    tag = env.get("MMOPS_MODEL_TAG", f"mmops-{domain}:latest")
    try:
        bentoml.models.get(tag)
    except NotFound:
        raise NotFoundError(f"no packaged model {tag} to serve; run `mmops package --domain {domain}`") from None
    return env, tag


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(
        help="MODALITY=FILE (together: one record), or folders laid out like landing/<domain>/ (a record per key)")],
    domain: Domain,
    url: Annotated[str | None, typer.Option(help="the service; default: http://127.0.0.1:<serve.port>")] = None,
    as_json: AsJson = False,
) -> None:
    """Send files to a running service (`mmops serve`) and print what it predicts; with a folder's labels file,
    the accuracy too. Files are decoded and checked as ingest checks them."""
    from rich.table import Table

    from mmops.config import load_params
    from mmops.domains import load_domain
    from mmops.serving.client import predict as post
    from mmops.serving.client import records_from_paths

    pack = guarded(lambda: load_domain(domain))
    records, expected = guarded(lambda: records_from_paths(pack, inputs))
    url = url or f"http://127.0.0.1:{guarded(load_params).serve.port}"

    answers = guarded(lambda: post(url, records))
    scored = [a for a in answers if a["id"] in expected]
    correct = sum(a["label"] == expected[a["id"]] for a in scored)
    if as_json:
        out.print_json(json.dumps({"predictions": answers, "expected": len(scored), "correct": correct}))
        return
    table = Table("record", "label", "p", *(["expected"] if expected else []), "warnings")
    for a in answers:
        want = expected.get(a["id"] or "", "")
        mark = "" if not want else ("[green]" if want == a["label"] else "[red]") + want
        table.add_row(a["id"] or "-", a["label"], f"{a['probabilities'][a['label']]:.3f}",
                      *([mark] if expected else []), "; ".join(a["warnings"]))
    out.print(table)
    if scored:
        out.print(f"{correct} of {len(scored)} as labeled ({correct / len(scored):.1%}); model "
                  f"{answers[0]['model_version']}", highlight=False)


@app.command()
def explain(
    inputs: Annotated[list[str], typer.Argument(
        help="MODALITY=FILE (together: one record), or folders laid out like landing/<domain>/ (a record per key)")],
    domain: Domain,
    target: Annotated[str | None, typer.Option(help="a class to explain instead of the answer")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write a figure per record here")] = None,
    as_json: AsJson = False,
) -> None:
    """Why the domain's champion answers as it does for these files: each modality's share of the answer
    (exact Shapley values) and, with --out, its map over each input (integrated gradients, Grad-CAM, token
    occlusion; an anomaly detector's distances to normal). Runs here, on the registered model."""
    from rich.table import Table

    from mmops.stages.explain import explain_files

    result = guarded(lambda: explain_files(domain, inputs, target, out_dir))
    if as_json:
        out.print_json(json.dumps(result))
        return
    names = list(dict.fromkeys(m for e in result["explanations"] for m in e["modalities"]))
    table = Table("record", "explained", "value", "base", *names, *(["figure"] if out_dir else []))
    for e in result["explanations"]:
        table.add_row(e["id"] or "-", e["explained"], f"{e['value']:.3f}", f"{e['base']:.3f}",
                      *(f"{e['modalities'][m]['shapley']:+.3f}" if m in e["modalities"] else "" for m in names),
                      *([e.get("figure", "")] if out_dir else []))
    out.print(table)
    out.print(f"model v{result['model_version']}; per modality its Shapley value: its share of value - base",
              highlight=False)


shadow_app = typer.Typer(help="A challenger beside the champion on mirrored traffic: it never answers a client.",
                         no_args_is_help=True)
app.add_typer(shadow_app, name="shadow")
ServiceUrl = Annotated[str | None, typer.Option(help="the running service; default: http://127.0.0.1:<serve.port>")]


def _service(url: str | None) -> str:
    from mmops.config import load_params

    return url or f"http://127.0.0.1:{guarded(load_params).serve.port}"


@shadow_app.command("start")
def shadow_start(
    domain: Domain,
    url: ServiceUrl = None,
    version: Annotated[int | None, typer.Option(help="a registered, packaged version; default: the challenger")] = None,
    as_json: AsJson = False,
) -> None:
    """Run a challenger in shadow in a running service: it gets every record the champion answers (while it
    keeps up; batches it cannot take are dropped and counted), its answers are logged, never returned."""
    from mmops import pipeline

    guarded(lambda: pipeline.shadow_start(domain, _service(url), version), as_json, f"shadow {domain}:")


@shadow_app.command("stop")
def shadow_stop(domain: Domain, url: ServiceUrl = None, as_json: AsJson = False) -> None:
    """Stop the running service's shadow (its final counts go to the audit log)."""
    from mmops import pipeline

    guarded(lambda: pipeline.shadow_stop(domain, _service(url)), as_json, f"shadow {domain}:")


@shadow_app.command("report")
def shadow_report(
    domain: Domain,
    since: Annotated[float | None, typer.Option(help="epoch seconds; default: the whole log")] = None,
    tag: Annotated[str | None, typer.Option(help="the shadowed model tag; default: the latest shadowed")] = None,
    as_json: AsJson = False,
) -> None:
    """What the shadow log says: agreement with the champion, both models' time per record, failures and
    drops, and both accuracies on records whose ground truth came in."""
    from mmops import pipeline

    guarded(lambda: pipeline.shadow_report(domain, since, tag), as_json, f"shadow {domain}:")


canary_app = typer.Typer(help="A challenger answering a sticky share of the records; the service ends it when it "
                              "does worse than the champion.", no_args_is_help=True)
app.add_typer(canary_app, name="canary")


@canary_app.command("start")
def canary_start(
    domain: Domain,
    url: ServiceUrl = None,
    version: Annotated[int | None, typer.Option(help="a registered, packaged version; default: the challenger")] = None,
    share: Annotated[float | None, typer.Option(help="share of the records; default: release.canary_share")] = None,
    as_json: AsJson = False,
) -> None:
    """Let a challenger answer a share of the records, sticky by record id, within params.yaml's release bounds
    (error rate, p95 time per record, label distribution vs the champion's)."""
    from mmops import pipeline

    guarded(lambda: pipeline.canary_start(domain, _service(url), version, share), as_json, f"canary {domain}:")


@canary_app.command("status")
def canary_status(domain: Domain, url: ServiceUrl = None, as_json: AsJson = False) -> None:
    """Both arms' counts, whether the canary is live, and why the service ended it if it did."""
    from mmops import pipeline

    guarded(lambda: pipeline.canary_status(domain, _service(url)), as_json, f"canary {domain}:")


@canary_app.command("conclude")
def canary_conclude(domain: Domain, url: ServiceUrl = None, as_json: AsJson = False) -> None:
    """Promote a canary that held its bounds over release.canary_records records (and swap it in), or reject
    one the service ended; says when it is too early to decide."""
    from mmops import pipeline

    guarded(lambda: pipeline.canary_conclude(domain, _service(url)), as_json, f"canary {domain}:")


@canary_app.command("stop")
def canary_stop(domain: Domain, url: ServiceUrl = None, as_json: AsJson = False) -> None:
    """End the canary: every record back on the champion (its counts go to the audit log)."""
    from mmops import pipeline

    guarded(lambda: pipeline.canary_stop(domain, _service(url)), as_json, f"canary {domain}:")
