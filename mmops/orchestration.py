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


def drift_asset(domain: str) -> Any:
    """The Asset the monitor DAG emits when what the domain's service sees has drifted; retraining is
    scheduled on it."""
    from airflow.sdk import Asset

    return Asset(name=f"mmops_{domain}_drift", uri=f"mmops://{domain}/drift")


def signal_drift(domain: str, result: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
    """Succeed (and so emit the domain's drift Asset, its event carrying the verdict) only on drift."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not result.get("drifted"):
        raise AirflowSkipException(f"{domain}: no drift (drift share {result.get('drift_share', 0):.2f}); "
                                   "nothing to retrain")
    summary = {k: result.get(k) for k in ("drifted_groups", "drifted_embeddings", "drifted_columns", "drift_share",
                                          "n_current", "json")}
    if outlet_events is not None:
        outlet_events[drift_asset(domain)].extra = summary
    return summary


def monitor_since(conf: dict[str, Any]) -> float | None:
    """The start of the log window a monitor run checks, from its trigger config (`since`: epoch seconds or
    an ISO-8601 time); None: the default window."""
    from datetime import datetime

    from mmops.errors import ConfigError

    value = conf.get("since")
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ConfigError(f"since: {value!r} is neither epoch seconds nor an ISO-8601 time") from exc


def service_url(domain: str) -> str | None:
    """Where the domain's running service answers (MMOPS_SERVICE_URL_<DOMAIN>), for hot reloads."""
    return os.environ.get(f"MMOPS_SERVICE_URL_{domain.upper()}") or None


def deploy_champion(domain: str, evaluated: dict[str, Any]) -> dict[str, Any]:
    """After evaluate and package: a promoted challenger is swapped into the running service; otherwise the
    champion keeps serving (the task is skipped, saying why)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops import pipeline

    if not evaluated.get("promoted"):
        raise AirflowSkipException(f"not promoted ({evaluated.get('reason')}): the champion keeps serving")
    url = service_url(domain)
    if url is None:
        raise AirflowSkipException(f"no running service to reload (MMOPS_SERVICE_URL_{domain.upper()} unset): "
                                   "the new champion serves from the service's next start")
    return pipeline.reload_service(domain, url)


def retrain_tasks(domain: str) -> None:
    """Inside a DAG (or task group) definition: gather newly labeled data -> validate -> build -> train a
    challenger -> evaluate (promoted only if it beats the champion) -> package -> deploy if promoted."""
    from datetime import timedelta

    from airflow.sdk import task

    @task
    def gather() -> dict:
        return run_stage("label", domain)

    @task
    def validate() -> dict:
        return run_stage("validate", domain)

    @task
    def build() -> dict:
        return run_stage("build", domain)

    @task(execution_timeout=timedelta(hours=6))
    def train() -> dict:
        return run_stage("train", domain)

    @task
    def evaluate() -> dict:
        return run_stage("evaluate", domain)

    @task
    def package() -> dict:
        return run_stage("package", domain)

    @task(retries=0)
    def deploy(evaluated: dict) -> dict:
        return deploy_champion(domain, evaluated)

    steps = [gather(), validate(), build(), train()]
    evaluated = evaluate()
    packaged = package()
    for upstream, downstream in zip(steps, [*steps[1:], evaluated], strict=True):
        upstream >> downstream
    evaluated >> packaged >> deploy(evaluated)  # type: ignore[arg-type]  # an XComArg stands for the dict
