"""Data in: bundled packs landed, domain packs listed, shown and added, and the quarantine."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from mmops.cli.common import (
    AsJson,
    console,
    data_app,
    domain_app,
    guarded,
    listed_domains,
    out,
    quarantine_app,
)
from mmops.errors import MmopsError


@data_app.command("pull")
def data_pull(
    pack: Annotated[str | None, typer.Argument(help="pack name; default: the packs params.yaml assigns")] = None,
    domain: Annotated[str | None, typer.Option("--domain", "-d")] = None,
    as_json: AsJson = False,
) -> None:
    """Land a bundled real data set into landing/<domain>/ (PNG, CSV, UTF-8 text, labels.csv)."""
    from mmops import pipeline

    if pack:
        guarded(lambda: pipeline.pull_data(pack), as_json, f"pulled {pack}:")
    else:
        for d in [domain] if domain else listed_domains():
            guarded(partial(pipeline.pull_domain, d), as_json, f"pulled for {d}:")


@domain_app.command("list")
def domain_list() -> None:
    """Every domain pack (bundled, or the project's domains/*.yaml), whether params.yaml lists it, and what
    its records hold."""
    from rich.table import Table

    from mmops.config import get_settings, load_params
    from mmops.domains import available_domains, load_domain

    packs = guarded(lambda: load_params().packs)
    root = get_settings().root
    table = Table("domain", "file", "data (params.yaml packs)", "modalities", "classes")
    for name, path in guarded(available_domains).items():
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

    pack = guarded(lambda: load_domain(name))
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

    spec = guarded(lambda: load_domain(name))
    if pack is not None:
        from mmops.datasets.packs import pack_for

        guarded(lambda: pack_for(name, pack))
    added = guarded(lambda: add_domain(name, pack=pack))
    where = f"`mmops data pull --domain {name}` lands {pack}" if pack else f"land its files in landing/{name}/"
    out.print(f"{name}: {'listed in params.yaml' if added else 'already in params.yaml'} "
              f"({len(spec.modalities)} modalities, {len(spec.classes)} classes); {where}", highlight=False)


@data_app.command("list")
def data_list() -> None:
    """List the bundled data packs."""
    from mmops.datasets.packs import PACKS

    for p in PACKS.values():
        out.print(f"[bold]{p.name}[/bold] -> {p.domain}: {p.summary}\n    license: {p.license}", highlight=False)


OptDomain = Annotated[str | None, typer.Option("--domain", "-d")]
FileIds = Annotated[list[int] | None, typer.Argument(help="file ids from `mmops quarantine list`")]


@quarantine_app.command("list")
def quarantine_list(domain: OptDomain = None, as_json: AsJson = False) -> None:
    """Quarantined files with their reasons."""
    from rich.table import Table

    from mmops.stages.quarantine import quarantined

    rows = guarded(lambda: quarantined(domain))
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
    done = guarded(lambda: release_files(ids, domain))
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
    n = guarded(lambda: purge_files(ids, domain))
    out.print(f"purged {n} file(s)", highlight=False)
