"""The `mmops` command line: one command per stage (each a thin call into mmops.pipeline), plus the demos,
the service and the registry, one module per command group. Heavy libraries are imported inside commands so
that `mmops --help` answers at once.
"""

from __future__ import annotations

from mmops.cli.common import app, console
from mmops.errors import MmopsError

# each group registers its commands on `app`, in the order `mmops --help` lists them
# isort: off
from mmops.cli import data  # noqa: F401, E402
from mmops.cli import stages  # noqa: F401, E402
from mmops.cli import models  # noqa: F401, E402
from mmops.cli import serve  # noqa: F401, E402
from mmops.cli import apps  # noqa: F401, E402
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The `mmops` console script: `app`, and a user error that escapes a command (one raised before its
    `guarded`) still ends as one line and exit 1, never a traceback."""
    try:
        app()
    except MmopsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
