"""What every stage shares: the resolved context, its JSON summary, the per-domain lock of the
stages that write a model, and the catalog lookups they share."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import select

from mmops.catalog import ModelVersion
from mmops.config import Params, Settings, get_settings
from mmops.context import Context
from mmops.domains import DomainPack

Progress = Callable[..., None] | None


def resolve(domain: str) -> tuple[Settings, Params, DomainPack]:
    ctx = Context.resolve(domain)
    return ctx.settings, ctx.params, ctx.pack



def jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        obj = asdict(obj)  # type: ignore[arg-type]
    return json.loads(json.dumps(obj, default=str))


def write_summary(path: Path, summary: Any) -> dict[str, Any]:
    from mmops.atomic import write_atomic

    data = jsonable(summary)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))
    return data


_Stage = TypeVar("_Stage", bound=Callable[..., Any])


def one_at_a_time(stage: _Stage) -> _Stage:
    """The stages that write a domain's dataset and model (build, train, evaluate, package) run one at a time
    per domain and project: a second run at once (a CLI call beside a DAG run) waits, saying so, instead of
    interleaving its writes into artifacts/<domain>/. The lock is a file in var/locks/, released by the OS if
    its holder is killed."""

    @functools.wraps(stage)
    def locked(domain: str, *args: Any, **kwargs: Any) -> Any:
        from mmops.locks import file_lock

        path = get_settings().var_dir / "locks" / f"model-{domain}.lock"
        with file_lock(path, f"another build, train, evaluate or package of {domain} in this project"):
            return stage(domain, *args, **kwargs)

    return cast(_Stage, locked)


def model_version(session: Any, domain: str, checkpoint_sha256: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.domain == domain,
                                                     ModelVersion.checkpoint_sha256 == checkpoint_sha256))
