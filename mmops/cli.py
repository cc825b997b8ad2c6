"""The `mmops` command line: one command per stage (each a thin call into mmops.pipeline), plus `demo`.

Heavy libraries are imported inside commands so that `mmops --help` answers at once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mmops.errors import MmopsError, NotFoundError, ValidationFailedError

app = typer.Typer(help="mmops: multimodal MLOps - ingest, label, validate, train, serve, monitor.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Bundled real data packs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
domain_app = typer.Typer(help="Domain packs: what a domain's records look like. A new domain is a YAML file.",
                          no_args_is_help=True)
app.add_typer(domain_app, name="domain")
quarantine_app = typer.Typer(help="Files ingest rejected: list, release for another try, purge.",
                             no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 120)  # logs and CI get full table rows

Domain = Annotated[str, typer.Option("--domain", "-d", help="medical | security | industrial | your own pack")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "matplotlib", "evidently", "bentoml", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _run(fn: Callable[[], Any], as_json: bool = False, title: str = "") -> Any:
    """Run a stage; a user-facing error becomes one line on stderr and a non-zero exit, never a traceback."""
    try:
        result = fn()
    except ValidationFailedError as exc:
        console.print(f"[red]gate failed:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except MmopsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps(result, default=str))
    elif title:
        out.print(f"[bold]{title}[/bold] " + ", ".join(f"{k}={_short(v)}" for k, v in result.items()),
                  highlight=False, soft_wrap=True)
    return result


def _domains() -> list[str]:
    """The domains params.yaml lists (a broken params.yaml is one line, like every user error)."""
    from mmops.config import load_params

    return list(_run(lambda: load_params().domains))


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and (len(v) > 4 or any(isinstance(x, dict | list) for x in v.values())):
        return f"{{{len(v)} entries}}"
    if isinstance(v, list) and (len(v) > 4 or any(isinstance(x, dict | list) for x in v)):
        return f"[{len(v)} entries]"
    return str(v)


class _Progress:
    """A rich progress bar on a terminal; elsewhere (a pipe, a file, a CI log) plain lines on stderr, at
    most one per `every` seconds unless told `force` (an epoch is always worth a line), so long work is
    never silent."""

    def __init__(self, label: str, every: float = 10.0) -> None:
        self.label, self.every, self._last = label, every, 0.0
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if console.is_terminal:
            from rich.progress import Progress

            self._bar = Progress(console=console, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, description: str, completed: int | None = None, total: int | None = None,
               force: bool = False) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description, completed=completed, total=total)
            return
        import time

        now = time.monotonic()
        if force or now - self._last >= self.every or (total is not None and completed == total):
            self._last = now
            count = f" {completed}/{total}" if completed is not None and total is not None else ""
            console.print(f"{description}{count}", highlight=False, soft_wrap=True)


def _progress_ingest(domain: str) -> Any:
    from mmops import pipeline

    with _Progress(f"ingest {domain}") as bar:
        return pipeline.ingest(domain, progress=lambda n, total: bar.update(f"ingest {domain}: files", n, total))


def _progress_train(domain: str, resume: bool = False, nodes: Any = None) -> Any:
    from mmops import pipeline

    if nodes is not None and nodes.node_rank > 0:
        return pipeline.join_training(domain, nodes, resume)
    with _Progress(f"train {domain}") as bar:

        def step(epoch: int, total: int, row: dict[str, float]) -> None:
            losses = f" train_loss={row['train_loss']:.4f} val_loss={row['val_loss']:.4f}" if not console.is_terminal else ""
            bar.update(f"train {domain} val_f1={row['val_macro_f1']:.3f}{losses} epoch", epoch, total, force=True)

        return pipeline.train(domain, progress=step, resume=resume, nodes=nodes)


@data_app.command("pull")
def data_pull(
    pack: Annotated[str | None, typer.Argument(help="pack name; default: the packs params.yaml assigns")] = None,
    domain: Annotated[str | None, typer.Option("--domain", "-d")] = None,
    as_json: AsJson = False,
) -> None:
    """Land a bundled real data set into landing/<domain>/ (PNG, CSV, UTF-8 text, labels.csv)."""
    from mmops import pipeline

    if pack:
        _run(lambda: pipeline.pull_data(pack), as_json, f"pulled {pack}:")
    else:
        for d in [domain] if domain else _domains():
            _run(partial(pipeline.pull_domain, d), as_json, f"pulled for {d}:")


@domain_app.command("list")
def domain_list() -> None:
    """Every domain pack (bundled, or the project's domains/*.yaml), whether params.yaml lists it, and what
    its records hold."""
    from rich.table import Table

    from mmops.config import get_settings, load_params
    from mmops.domains import available_domains, load_domain

    packs = _run(lambda: load_params().packs)
    root = get_settings().root
    table = Table("domain", "file", "data (params.yaml packs)", "modalities", "classes")
    for name, path in _run(available_domains).items():
        where = path.relative_to(root).as_posix() if path.is_relative_to(root) else f"bundled ({path.name})"
        data = "[dim]not listed[/dim]" if name not in packs else packs[name] or f"you land it (landing/{name}/)"
        try:
            pack = load_domain(name)
        except MmopsError as exc:
            table.add_row(name, where, data, f"[red]invalid:[/red] {exc}", "")
            continue
        table.add_row(name, where, data, ", ".join(f"{m.name} ({m.kind})" for m in pack.modalities),
                      str(len(pack.classes)))
    out.print(table)


@domain_app.command("show")
def domain_show(
    name: Annotated[str, typer.Argument(help="the domain")],
    out_file: Annotated[Path | None, typer.Option("--out", help="write the JSON here instead")] = None,
) -> None:
    """The domain pack as mmops reads it (validated, defaults filled in), as JSON. `dvc repro` records it as
    artifacts/<domain>/domain.json, so that the stages rerun when a domain's pack changes, wherever it lives."""
    from mmops.atomic import write_atomic
    from mmops.domains import load_domain

    pack = _run(lambda: load_domain(name))
    text = json.dumps(pack.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    if out_file is None:
        out.print_json(text)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_file, text)
    out.print(f"{name}: {len(pack.modalities)} modalities, {len(pack.classes)} classes -> {out_file}", highlight=False)


@domain_app.command("add")
def domain_add(
    name: Annotated[str, typer.Argument(help="a domain with a pack in domains/<name>.yaml (or a bundled one)")],
    pack: Annotated[str | None, typer.Option(help="a bundled data pack for it; default: you land its files")] = None,
) -> None:
    """Check the domain's pack and list the domain in params.yaml, so that every command, DAG and `dvc repro`
    takes it in (the file keeps its comments)."""
    from mmops.config import add_domain
    from mmops.domains import load_domain

    spec = _run(lambda: load_domain(name))
    if pack is not None:
        from mmops.datasets.packs import pack_for

        _run(lambda: pack_for(name, pack))
    added = _run(lambda: add_domain(name, pack=pack))
    where = f"`mmops data pull --domain {name}` lands {pack}" if pack else f"land its files in landing/{name}/"
    out.print(f"{name}: {'listed in params.yaml' if added else 'already in params.yaml'} "
              f"({len(spec.modalities)} modalities, {len(spec.classes)} classes); {where}", highlight=False)


@data_app.command("list")
def data_list() -> None:
    """List the bundled data packs."""
    from mmops.datasets.packs import PACKS

    for p in PACKS.values():
        out.print(f"[bold]{p.name}[/bold] -> {p.domain}: {p.summary}\n    license: {p.license}", highlight=False)


@app.command()
def ingest(domain: Domain, as_json: AsJson = False) -> None:
    """Decode, hash, dedupe and catalog landed files; quarantine bad ones with a reason."""
    _run(lambda: _progress_ingest(domain), as_json, f"ingest {domain}:")


def _stage(name: str, doc: str) -> None:
    def command(domain: Domain, as_json: AsJson = False) -> None:
        from mmops import pipeline

        _run(lambda: pipeline.STAGES[name](domain), as_json, f"{name} {domain}:")

    command.__doc__ = doc
    app.command(name)(command)


_stage("label", "Labels from files (labels.csv/.json), Label Studio exports in landing/<domain>/annotations/ and "
       "the domain's rules; reports conflicts.")
_stage("prelabel", "Champion-model pre-labels, the review queue by uncertainty, Label Studio tasks in "
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

    _run(lambda: pipeline.validate(domain, profile=profile), as_json,
         f"{'profile' if profile else 'validate'} {domain}:")
_stage("build", "Build a dataset version (manifest + stratified splits) from gated, labeled records.")
_stage("evaluate", "Test-split metrics, confusion matrix, registry (champion/challenger).")
_stage("package", "Save the model to the BentoML model store and build its bento.")


@app.command("annotations")
def import_annotations(
    export: Annotated[str, typer.Argument(help="a Label Studio JSON export (Export -> JSON)")],
    domain: Domain,
    as_json: AsJson = False,
) -> None:
    """Import a Label Studio export as human labels (with annotator and time)."""
    from mmops import pipeline

    _run(lambda: pipeline.import_annotations(domain, export), as_json, f"annotations {domain}:")


@app.command("queue")
def queue(domain: Domain, limit: Annotated[int, typer.Option(help="rows to show")] = 20,
          as_json: AsJson = False) -> None:
    """The review queue: records waiting for a human label, most uncertain first."""
    from mmops.stages.labels import review_queue

    result = _run(lambda: review_queue(domain, limit))
    if as_json:
        out.print_json(json.dumps(result))
        return
    from rich.table import Table

    if not result:
        out.print(f"the {domain} review queue is empty: every record has a human or file label, or "
                  f"`mmops prelabel --domain {domain}` has not run yet", highlight=False)
        return
    table = Table("record", "uncertainty", "method", "suggested", "status", title=f"{domain} review queue")
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
    as_json: AsJson = False,
) -> None:
    """Train the fusion model on the current dataset version (CUDA when present; DDP with --nproc, across
    machines with --nnodes/--node-rank/--master)."""
    from mmops.pipeline import Nodes

    _run(lambda: _progress_train(domain, resume, Nodes(nproc, nnodes, node_rank, master)), as_json, f"train {domain}:")


@app.command()
def registry(domain: Domain, as_json: AsJson = False) -> None:
    """Model versions (lineage, metrics, aliases) and the promotion audit log."""
    from mmops import pipeline

    result = _run(lambda: pipeline.registry(domain), as_json=as_json)
    if as_json:
        return
    for v in result["versions"]:
        tags = ",".join(v["aliases"]) or "-"
        out.print(f"v{v['version']:<3} {tags:<20} macro_f1={_short(v['metrics'].get('macro_f1'))} "
                  f"dataset={v['dataset_version']} params={str(v['params_hash'])[:10]} "
                  f"git={str(v['git_commit'])[:10]} sha={v['checkpoint_sha256'][:12]}", highlight=False)
    for e in result["audit_log"]:
        out.print(f"{e['at'][:19]} v{e['version']} {e['action']:<9} by {e['actor']}: {e['reason']}",
                  highlight=False, soft_wrap=True)


@app.command()
def promote(
    domain: Domain,
    version: Annotated[int, typer.Option(help="the registered version to make champion")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
    as_json: AsJson = False,
) -> None:
    """Make a model version champion by hand (a rollback or an override); audited."""
    from mmops import pipeline

    _run(lambda: pipeline.promote(domain, version, reason), as_json, f"promote {domain}:")


@app.command()
def status(
    domain: Annotated[str | None, typer.Option("--domain", "-d", help="one domain; default: all in params.yaml")] = None,
    as_json: AsJson = False,
) -> None:
    """One screen per domain: landed / ingested / quarantined files, the latest gate and dataset version,
    champion and challenger, the last drift check, and the service if it is running."""
    from mmops.config import get_settings, load_params
    from mmops.domains import load_domain
    from mmops.status import status as gather

    params = _run(load_params)
    if domain:
        _run(lambda: load_domain(domain))
    domains = [domain] if domain else params.domains
    result = _run(lambda: gather(domains, get_settings(), params.serve.port), as_json=as_json)
    if not as_json:
        for d in result:
            out.print(_status_table(d))


def _status_table(d: dict[str, Any]) -> Any:
    from rich.table import Table

    def stamp(at: str) -> str:
        return at[:16].replace("T", " ")

    def when(x: dict[str, Any] | None) -> str:
        return f"  [dim]{stamp(x['at'])}[/dim]" if x and x.get("at") else ""

    def model(m: dict[str, Any] | None) -> str:
        if m is None:
            return "[dim]none[/dim]"
        metrics = " ".join(f"{k}={_short(v)}" for k, v in m["metrics"].items() if v is not None)
        return f"v{m['version']}  {metrics}  on {m['dataset_version']}" + when(m)

    data, gate, ds, drift, svc = d["data"], d["gate"], d["dataset"], d["drift"], d["service"]
    table = Table(title=f"[bold]{d['domain']}[/bold]", show_header=False, title_justify="left", min_width=60)
    table.add_column("what", style="bold")
    table.add_column("state")
    landed = "?" if data["landed"] is None else data["landed"]
    table.add_row("files", f"{landed} landed, {data['ingested']} ingested, "
                  + (f"[red]{data['quarantined']} quarantined[/red]" if data["quarantined"] else "0 quarantined")
                  + (f", {data['purged']} purged" if data["purged"] else ""))
    table.add_row("records", f"{data['records']} ({data['labeled']} labeled)")
    table.add_row("gate", "[dim]not run[/dim]" if gate is None else (
        ("[green]passed[/green]" if gate["success"] else f"[red]failed[/red] ({gate['failed']} critical)")
        + f" {gate['n_expectations']} expectations" + when(gate)))
    table.add_row("dataset", "[dim]none[/dim]" if ds is None else
                  f"{ds['version']}  {ds['n_samples']} samples {ds['split_counts']}  gate {ds['gate']}" + when(ds))
    tr = d["training"]
    if tr is not None:
        times = f"started {stamp(tr['started_at'])}" + (f", ended {stamp(tr['finished_at'])}" if tr["finished_at"] else "")
        table.add_row("training", f"run {tr['id']} {tr['status']} on {tr['device']}  [dim]{times}[/dim]")
    table.add_row("champion", model(d["champion"]))
    if d["challenger"] is not None:
        table.add_row("challenger", model(d["challenger"]))
    table.add_row("drift", "[dim]not checked[/dim]" if drift is None else (
        ("[red]DRIFT[/red]" if drift["drifted"] else "[green]no drift[/green]")
        + f" share {drift['drift_share']:.2f} on {drift['n_current']} {drift['current']} rows" + when(drift)))
    table.add_row("service", "[dim]not running[/dim]" if svc is None else
                  f"[green]{svc['url']}[/green] serving {svc['model_version']}")
    ev = d["last_event"]
    if ev is not None:
        table.add_row("last change", f"{ev['action']} {ev['subject']} by {ev['actor']}" + when(ev))
    return table


@app.command()
def audit(
    domain: Annotated[str | None, typer.Option("--domain", "-d", help="one domain; default: all")] = None,
    limit: Annotated[int, typer.Option(help="the newest this many events")] = 50,
    as_json: AsJson = False,
) -> None:
    """Who ingested, labeled, built, trained, registered, promoted, packaged and deployed what (MMOPS_ACTOR,
    else the Airflow task, else user@host)."""
    from mmops import pipeline

    events = _run(lambda: pipeline.audit_log(domain, limit), as_json=as_json)
    if as_json:
        return
    for e in events:
        detail = ", ".join(f"{k}={_short(v)}" for k, v in e["detail"].items() if v not in (None, [], {}))
        out.print(f"{e['at'][:19]} {e['domain']:<10} {e['action']:<20} {e['subject']:<28} by {e['actor']}"
                  + (f"  ({detail})" if detail else ""), highlight=False, soft_wrap=True)


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
    _run(lambda: pipeline.reload_service(domain, target, tag), as_json, f"reload {domain}:")


@app.command()
def pretrain(
    domain: Domain,
    modality: Annotated[str, typer.Option(help="the target sensor modality (its rate and length shape windows)")],
    source: Annotated[str, typer.Option(help="daphnet (aeon's bundled gait recording) or a domain's own records")]
    = "daphnet",
    arch: Annotated[str | None, typer.Option(help="sensor encoder; default: params train.sensor_encoder")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    out_file: Annotated[Path | None, typer.Option("--out")] = None,
    as_json: AsJson = False,
) -> None:
    """Self-supervised (contrastive) pretraining of a sensor encoder; fine-tune it with train.init_weights."""
    from mmops.config import get_settings, load_params
    from mmops.pretrain import pretrain as run_pretrain

    def go() -> dict[str, Any]:
        params = load_params()
        a = arch or params.train.sensor_encoder
        name = f"{source}_{domain}_{modality}_{a}.safetensors"  # under the project's artifacts, wherever we run
        path = out_file or get_settings().artifacts_dir / "pretrained" / name
        return run_pretrain(source, domain, modality, a, path, epochs, params.seed)

    _run(go, as_json, "pretrain:")


@app.command()
def results(
    domain: Annotated[list[str] | None, typer.Option("--domain", "-d", help="default: every pack in params")] = None,
    quick: Annotated[bool, typer.Option(help="fewer variants and one UCR set (a smoke run)")] = False,
    epochs: Annotated[int | None, typer.Option(help="override train.epochs for every model")] = None,
    ucr: Annotated[list[str] | None, typer.Option(help="UCR/UEA sets bundled with aeon")] = None,
    folds: Annotated[int, typer.Option(min=1, help="cross-validation folds for the all-sensor packs")] = 5,
    out_file: Annotated[Path, typer.Option("--out", help="markdown table")] = Path("docs/results.md"),
) -> None:
    """Regenerate the results table: single modality vs fusion, fine-tuned vs from scratch, UCR baselines."""
    import sys

    from mmops.config import load_params
    from mmops.results import run, to_markdown

    def go() -> dict[str, Any]:
        domains = domain or list(load_params().packs)
        rows = run(domains, quick, tuple(ucr) if ucr else None, epochs, folds)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(to_markdown(rows, "mmops " + " ".join(sys.argv[1:])), encoding="utf-8")
        return {"rows": len(rows), "table": str(out_file)}

    _run(go, title="results:")


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
    _run(lambda: _progress_monitor(domain, current, since), as_json, f"monitor {domain}:")


def _progress_monitor(domain: str, current: str, since: float | None) -> Any:
    from mmops import pipeline

    with _Progress(f"monitor {domain}") as bar:

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

    for d in domain or _domains():
        _run(partial(pipeline.pull_domain, d), title=f"pull {d}:")
        _run(partial(_progress_ingest, d), title=f"ingest {d}:")
        for stage in ("label", "validate", "build"):
            _run(partial(pipeline.STAGES[stage], d), title=f"{stage} {d}:")
        _run(partial(_progress_train, d), title=f"train {d}:")
        _run(partial(pipeline.evaluate, d), title=f"evaluate {d}:")
        if package:
            _run(partial(pipeline.package, d), title=f"package {d}:")


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

    port = port or _run(load_params).serve.port
    env, tag = _run(lambda: _servable(domain))
    url = f"http://{host}:{port}"
    _run(lambda: pipeline.record_deploy(get_settings(), domain, tag, url, how="serve"))
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

    pack = _run(lambda: load_domain(domain))
    records, expected = _run(lambda: records_from_paths(pack, inputs))
    url = url or f"http://127.0.0.1:{_run(load_params).serve.port}"

    answers = _run(lambda: post(url, records))
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

    raise typer.Exit(_run(lambda: standalone(get_settings(), port, host, console, training_slots)))


@app.command()
def demo(
    domain: Annotated[list[str] | None, typer.Option("--domain", "-d")] = None,
    port: Annotated[int | None, typer.Option(help="default: params.yaml serve.port")] = None,
    requests: Annotated[int, typer.Option(help="held-out records sent to each service")] = 60,
) -> None:
    """The whole path on real data: pull, every stage, serve, real requests, drift report."""
    from mmops.config import load_params
    from mmops.demo import run_demo

    try:
        run_demo(list(domain or _domains()), port or load_params().serve.port, requests, out)
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


OptDomain = Annotated[str | None, typer.Option("--domain", "-d")]
FileIds = Annotated[list[int] | None, typer.Argument(help="file ids from `mmops quarantine list`")]


@quarantine_app.command("list")
def quarantine_list(domain: OptDomain = None, as_json: AsJson = False) -> None:
    """Quarantined files with their reasons."""
    from rich.table import Table

    from mmops.stages.quarantine import quarantined

    rows = _run(lambda: quarantined(domain))
    if as_json:
        out.print_json(json.dumps([r.__dict__ for r in rows], default=str))
        return
    table = Table(title=f"quarantine ({len(rows)} files)")
    for col in ("id", "domain", "file", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id), r.domain, r.source_path, r.reason)
    out.print(table)


@quarantine_app.command("release")
def quarantine_release(ids: FileIds = None, domain: OptDomain = None) -> None:
    """Give files another ingest (after fixing them in landing/, or to re-check them as they are)."""
    from mmops.stages.quarantine import release_files

    if not ids:
        console.print("[red]error:[/red] name the file ids to release (see `mmops quarantine list`)")
        raise typer.Exit(1)
    done = _run(lambda: release_files(ids, domain))
    out.print(f"released {len(done)} file(s); run `mmops ingest` to check them again", highlight=False)


@quarantine_app.command("purge")
def quarantine_purge(
    ids: FileIds = None, domain: OptDomain = None,
    yes: Annotated[bool, typer.Option("--yes", help="purge every quarantined file in scope")] = False,
) -> None:
    """Delete quarantined copies for good; the decision stays on record in the catalog."""
    from mmops.stages.quarantine import purge_files

    if not ids and not yes:
        console.print("[red]error:[/red] name file ids, or pass --yes to purge all (of --domain)")
        raise typer.Exit(1)
    n = _run(lambda: purge_files(ids, domain))
    out.print(f"purged {n} file(s)", highlight=False)


def main() -> None:
    """The `mmops` console script: `app`, and a user error that escapes a command (one raised before its
    `_run`) still ends as one line and exit 1, never a traceback."""
    try:
        app()
    except MmopsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
