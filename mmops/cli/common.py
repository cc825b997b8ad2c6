"""What every command group shares: the app and its sub-apps, the consoles, the option types, and the
guard that turns a user error into one line and a non-zero exit."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from mmops.errors import MmopsError, ValidationFailedError

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

Domain = Annotated[str, typer.Option("--domain", "-d", help="medical | security | industrial | surveillance | your own pack")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "matplotlib", "evidently", "bentoml", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def guarded(fn: Callable[[], Any], as_json: bool = False, title: str = "") -> Any:
    """Run a stage; a user-facing error becomes one line on stderr and a non-zero exit, never a traceback."""
    try:
        result = fn()
    except ValidationFailedError as exc:
        console.print(f"[red]gate failed:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except MmopsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    from mmops.stages.results import StageResult  # pydantic: not on `mmops --help`'s path

    shown = result.to_json() if isinstance(result, StageResult) else result
    if as_json:
        out.print_json(json.dumps(shown, default=str))
    elif title:
        out.print(f"[bold]{title}[/bold] " + ", ".join(f"{k}={short(v)}" for k, v in shown.items()),
                  highlight=False, soft_wrap=True)
    return result


def listed_domains() -> list[str]:
    """The domains params.yaml lists (a broken params.yaml is one line, like every user error)."""
    from mmops.config import load_params

    return list(guarded(lambda: load_params().domains))


def short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and (len(v) > 4 or any(isinstance(x, dict | list) for x in v.values())):
        return f"{{{len(v)} entries}}"
    if isinstance(v, list) and (len(v) > 4 or any(isinstance(x, dict | list) for x in v)):
        return f"[{len(v)} entries]"
    return str(v)


class ProgressLine:
    """A rich progress bar on a terminal; elsewhere (a pipe, a file, a CI log) plain lines on stderr, at
    most one per `every` seconds unless told `force` (an epoch is always worth a line), so long work is
    never silent."""

    def __init__(self, label: str, every: float = 10.0) -> None:
        self.label, self.every, self._last = label, every, 0.0
        self._bar: Any = None

    def __enter__(self) -> ProgressLine:
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


def progress_ingest(domain: str) -> Any:
    from mmops import pipeline

    with ProgressLine(f"ingest {domain}") as bar:
        return pipeline.ingest(domain, progress=lambda n, total: bar.update(f"ingest {domain}: files", n, total))


def progress_train(domain: str, resume: bool = False, nodes: Any = None, dataset: str | None = None) -> Any:
    from mmops import pipeline

    if nodes is not None and nodes.node_rank > 0:
        return pipeline.join_training(domain, nodes, resume, dataset)
    with ProgressLine(f"train {domain}") as bar:

        def step(epoch: int, total: int, row: dict[str, float]) -> None:
            losses = f" train_loss={row['train_loss']:.4f} val_loss={row['val_loss']:.4f}" if not console.is_terminal else ""
            bar.update(f"train {domain} val_f1={row['val_macro_f1']:.3f}{losses} epoch", epoch, total, force=True)

        return pipeline.train(domain, progress=step, resume=resume, nodes=nodes, dataset_version=dataset)


def stage_command(name: str, doc: str) -> None:
    def command(domain: Domain, as_json: AsJson = False) -> None:
        from mmops import pipeline

        guarded(lambda: pipeline.STAGES[name](domain), as_json, f"{name} {domain}:")

    command.__doc__ = doc
    app.command(name)(command)
