"""What the Airflow DAGs call: a stage by name, with mmops errors translated into Airflow's terms.

Data-validation failures fail the task without retries (retrying cannot fix the data); anything else raises
as-is so that Airflow's retries apply to transient errors. Tasks exchange small JSON summaries (ids, paths,
counts) through XCom, never data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def project_root(dag_file: str) -> Path:
    """The project a DAG file belongs to (dags/ sits at its top level)."""
    return Path(dag_file).resolve().parents[1]


def configure(root: Path) -> None:
    """Point mmops at the project unless the deployment already did (MMOPS_HOME)."""
    os.environ.setdefault("MMOPS_HOME", str(root))


def domains(root: Path) -> list[str]:
    from mmops.config import load_params

    return load_params(root / "params.yaml").domains


def run_stage(stage: str, domain: str, **kwargs: Any) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from mmops import pipeline
    from mmops.errors import BadInputError, ConfigError, NotFoundError, ValidationFailedError

    try:
        return pipeline.STAGES[stage](domain, **kwargs)
    except (ValidationFailedError, BadInputError, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc
    except NotFoundError as exc:
        if stage == "monitor":  # no traffic yet: nothing to compare, not a failure
            raise AirflowSkipException(str(exc)) from exc
        raise AirflowFailException(str(exc)) from exc


def dag_defaults(owner: str = "mmops", retries: int = 2, retry_minutes: int = 1) -> dict[str, Any]:
    """Arguments every mmops DAG shares: no backfill, one run at a time, retries for transient errors."""
    from datetime import datetime, timedelta

    return {
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {"owner": owner, "retries": retries, "retry_delay": timedelta(minutes=retry_minutes)},
    }


def labeled_asset(domain: str) -> Any:
    """The Asset an ingest DAG emits and the training DAG is scheduled on."""
    from airflow.sdk import Asset

    return Asset(name=f"mmops_{domain}_labeled", uri=f"mmops://{domain}/labeled-records")


def parallel_batches() -> int:
    """How many ingest batches of one DAG run may run at once: one on SQLite (a single writer), four on a
    server database."""
    from mmops.config import get_settings

    return 1 if get_settings().catalog_url.startswith("sqlite") else 4


def announce(new_records: int, label_changes: int) -> dict[str, int]:
    """Succeed (and so emit the task's outlet Asset) only when there is something new to train on."""
    from airflow.sdk.exceptions import AirflowSkipException

    if new_records == 0 and label_changes == 0:
        raise AirflowSkipException("no new records and no label changes: nothing to announce")
    return {"new_records": new_records, "label_changes": label_changes}
