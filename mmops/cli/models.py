"""The registry and what a person asks of the project: versions and promotions, status, the audit log,
pretraining and the results table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mmops.cli.common import (
    AsJson,
    Domain,
    app,
    guarded,
    out,
    short,
)


@app.command()
def registry(domain: Domain, as_json: AsJson = False) -> None:
    """Model versions (lineage, metrics, aliases) and the promotion audit log."""
    from mmops import pipeline

    result = guarded(lambda: pipeline.registry(domain), as_json=as_json)
    if as_json:
        return
    for v in result["versions"]:
        tags = ",".join(v["aliases"]) or "-"
        out.print(f"v{v['version']:<3} {tags:<20} macro_f1={short(v['metrics'].get('macro_f1'))} "
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

    guarded(lambda: pipeline.promote(domain, version, reason), as_json, f"promote {domain}:")


@app.command()
def release(
    domain: Domain,
    version: Annotated[int | None, typer.Option(help="a registered version; default: the champion")] = None,
    as_json: AsJson = False,
) -> None:
    """A model version's lineage: raw files -> gate -> labels -> code -> package -> who made it champion ->
    deployments, and whether the audit ledger holding it is intact."""
    from mmops import pipeline

    r = guarded(lambda: pipeline.release(domain, version), as_json=as_json)
    if as_json:
        return
    raw, gate, code, labels = r["raw_files"], r["gate"], r["code"], r["labels"]
    out.print(f"[bold]{domain} v{r['version']}[/bold] checkpoint {r['checkpoint_sha256'][:12]}", highlight=False)
    out.print(f"  raw files   {raw['files']} files of {raw['records']} records, sha256 {str(raw['sha256'])[:16]} "
              f"({raw['dataset_version']})", highlight=False)
    out.print("  gate        " + ("none recorded" if gate is None else
                                  f"validation run {gate['validation_run']}: {'passed' if gate['success'] else 'FAILED'} "
                                  f"{gate['expectations']} expectations"), highlight=False)
    out.print(f"  labels      {labels['by_kind']}, changed since {labels['changed_since']}", highlight=False)
    out.print(f"  code        git {str(code['git_commit'])[:10]} params {code['params_hash'][:10]} "
              f"on {code['device']} (training run {code['training_run']}) by {code['trained_by']}"
              + (f", DAG version {code['dag_version']}" if code["dag_version"] else ""), highlight=False)
    out.print(f"  package     {r['package']['model_tag']}", highlight=False)
    for d in r["decisions"]:
        out.print(f"  {d['at'][:19]} {d['action']:<9} by {d['by']}: {d['reason']}", highlight=False, soft_wrap=True)
    for e in r["events"]:
        out.print(f"  {e['at'][:19]} {e['action']:<12} {e['subject']} by {e['by']}", highlight=False)
    ledger = r["ledger"]
    out.print(f"  ledger      {'intact' if ledger['ok'] else 'TAMPERED (mmops audit verify)'}, "
              f"{ledger['events']} events, head {str(ledger['head'])[:16]}", highlight=False)


@app.command()
def rollback(
    domain: Domain,
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")] = "",
    url: Annotated[str | None, typer.Option(help="a running service to swap the restored champion into (no "
                                                 "request dropped); default: the registry only")] = None,
    as_json: AsJson = False,
) -> None:
    """Restore the champion before the current one: in the registry and, with --url, in the running service."""
    from mmops import pipeline

    guarded(lambda: pipeline.rollback(domain, reason, url), as_json, f"rollback {domain}:")


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

    params = guarded(load_params)
    if domain:
        guarded(lambda: load_domain(domain))
    domains = [domain] if domain else params.domains
    result = guarded(lambda: gather(domains, get_settings(), params.serve.port), as_json=as_json)
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
        metrics = " ".join(f"{k}={short(v)}" for k, v in m["metrics"].items() if v is not None)
        card = f"\n[link=file://{m['card']}]card: {m['card']}[/link]" if m.get("card") else ""
        return f"v{m['version']}  {metrics}  on {m['dataset_version']}" + when(m) + card

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


audit_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
app.add_typer(audit_app, name="audit")


@audit_app.callback()
def audit(
    ctx: typer.Context,
    domain: Annotated[str | None, typer.Option("--domain", "-d", help="one domain; default: all")] = None,
    limit: Annotated[int, typer.Option(help="the newest this many events")] = 50,
    as_json: AsJson = False,
) -> None:
    """Who ingested, labeled, built, trained, registered, promoted, packaged and deployed what (MMOPS_ACTOR,
    else the Airflow task, else user@host). `mmops audit verify` checks that none of it was rewritten."""
    if ctx.invoked_subcommand is not None:
        return
    from mmops import pipeline

    events = guarded(lambda: pipeline.audit_log(domain, limit), as_json=as_json)
    if as_json:
        return
    for e in events:
        detail = ", ".join(f"{k}={short(v)}" for k, v in e["detail"].items() if v not in (None, [], {}))
        out.print(f"{e['at'][:19]} {e['domain']:<10} {e['action']:<20} {e['subject']:<28} by {e['actor']}"
                  + (f"  ({detail})" if detail else ""), highlight=False, soft_wrap=True)


@audit_app.command("verify")
def audit_verify(as_json: AsJson = False) -> None:
    """Recompute the audit ledger's hash chain: exit 1 naming each edited, inserted or deleted event. Keep the
    head hash it prints where the catalog's writers cannot write: a consistent rewrite of every row is only
    caught against it."""
    from mmops import pipeline

    verdict = guarded(pipeline.audit_verify, as_json=as_json)
    if not as_json:
        for p in verdict["problems"]:
            out.print(f"[red]event {p['id']}[/red]: {p['problem']}", highlight=False, soft_wrap=True)
        out.print(("[green]intact[/green]" if verdict["ok"] else "[red]TAMPERED[/red]")
                  + f" {verdict['events']} events, head {verdict['head']}", highlight=False)
    if not verdict["ok"]:
        raise typer.Exit(1)


@app.command()
def pretrain(
    domain: Domain,
    modality: Annotated[str, typer.Option(help="the target sensor or audio modality (its spec shapes the input)")],
    source: Annotated[str, typer.Option(help="daphnet (aeon's bundled gait recording; sensors) or a domain's own "
                                             "records (sensor or audio)")] = "daphnet",
    arch: Annotated[str | None, typer.Option(help="sensor encoder; default: params train.sensor_encoder")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    out_file: Annotated[Path | None, typer.Option("--out")] = None,
    as_json: AsJson = False,
) -> None:
    """Self-supervised (contrastive) pretraining of a sensor or audio encoder; fine-tune it with
    train.init_weights."""
    from mmops.config import get_settings, load_params
    from mmops.domains import load_domain
    from mmops.pretrain import pretrain as run_pretrain

    def go() -> dict[str, Any]:
        params = load_params()
        a = arch or (params.train.sensor_encoder if load_domain(domain).modality(modality).kind == "sensor"
                     else "logmel_cnn")
        name = f"{source}_{domain}_{modality}_{a}.safetensors"  # under the project's artifacts, wherever we run
        path = out_file or get_settings().artifacts_dir / "pretrained" / name
        return run_pretrain(source, domain, modality, a, path, epochs, params.seed)

    guarded(go, as_json, "pretrain:")


@app.command()
def results(
    domain: Annotated[list[str] | None, typer.Option("--domain", "-d", help="default: every pack in params")] = None,
    quick: Annotated[bool, typer.Option(help="fewer variants and one UCR set (a smoke run)")] = False,
    epochs: Annotated[int | None, typer.Option(help="override train.epochs for every model")] = None,
    ucr: Annotated[list[str] | None, typer.Option(help="UCR/UEA sets bundled with aeon")] = None,
    folds: Annotated[int, typer.Option(min=1, help="cross-validation folds for the all-sensor packs and packs with a small test split")] = 5,
    out_file: Annotated[Path, typer.Option("--out", help="markdown table")] = Path("docs/results.md"),
    merge: Annotated[bool, typer.Option(help="replace these domains' rows in the existing table, keep the others "
                                              "(UCR sets only if --ucr names them)")] = False,
) -> None:
    """Regenerate the results table: single modality vs fusion, fine-tuned vs from scratch, UCR baselines."""

    from mmops.config import load_params
    from mmops.results import run
    from mmops.results_page import from_markdown, provenance, this_run, to_markdown
    from mmops.results_page import merge as merged

    def go() -> dict[str, Any]:
        domains = domain or list(load_params().packs)
        sets = tuple(ucr) if ucr else (() if merge else None)
        at = provenance()  # the code that runs, before anyone edits it
        rows = run(domains, quick, sets, epochs, folds)
        now = this_run("mmops " + " ".join(sys.argv[1:]), rows, at)
        runs, table = [now], rows
        if merge and out_file.is_file():
            runs, table = merged(from_markdown(out_file.read_text(encoding="utf-8")), now, rows)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(to_markdown(table, runs), encoding="utf-8")
        return {"rows": len(rows), "table": str(out_file), "rows_in_table": len(table)}

    guarded(go, title="results:")
