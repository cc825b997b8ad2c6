"""What the Airflow DAGs call: a stage by name, with mmops errors translated into Airflow's terms.

Data-validation failures fail the task without retries (retrying cannot fix the data); anything else raises
as-is so that Airflow's retries apply to transient errors. Tasks exchange their stage's typed result as JSON
(ids, paths, counts) through XCom, never data; the next task reads it back into the type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmops.stages.results import StageResult


def project_root(dag_file: str) -> Path:
    """The project a DAG file belongs to (dags/ sits at its top level)."""
    return Path(dag_file).resolve().parents[1]


def configure(root: Path) -> None:
    """Point mmops at the project unless the deployment already did (MMOPS_HOME)."""
    os.environ.setdefault("MMOPS_HOME", str(root))


def domains(root: Path) -> list[str]:
    from mmops.config import load_params

    return load_params(root / "params.yaml").domains


def run_stage(stage: str, domain: str, **kwargs: Any) -> StageResult:
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


TRAINING_POOL = "mmops_training"  # training tasks share its slots: one per GPU (`make airflow` creates it)


def training_task_args() -> dict[str, Any]:
    """Where training tasks run, beyond the pool: on CeleryExecutor the queue of the GPU workers
    (MMOPS_TRAINING_QUEUE; start them with `airflow celery worker --queues gpu`), on KubernetesExecutor the
    pod template that asks for a GPU (MMOPS_TRAINING_POD_TEMPLATE, e.g. deploy/airflow/gpu-pod-template.yaml).
    Read when the DAG file is parsed; unset, training runs where every other task runs."""
    args: dict[str, Any] = {"pool": TRAINING_POOL}
    if os.environ.get("MMOPS_TRAINING_QUEUE"):
        args["queue"] = os.environ["MMOPS_TRAINING_QUEUE"]
    if os.environ.get("MMOPS_TRAINING_POD_TEMPLATE"):
        args["executor_config"] = {"pod_template_file": os.environ["MMOPS_TRAINING_POD_TEMPLATE"]}
    return args


def dag_defaults(owner: str = "mmops", retries: int = 2, retry_minutes: int = 1) -> dict[str, Any]:
    """Arguments every mmops DAG shares: no backfill, one run at a time, retries with exponential backoff for
    transient errors (a database restart, a full disk being cleaned), and a time limit on every task so a
    hung one fails and alerts instead of holding its slot forever (training sets a longer one)."""
    from datetime import datetime, timedelta

    return {
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {"owner": owner, "retries": retries, "retry_delay": timedelta(minutes=retry_minutes),
                         "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=30),
                         "execution_timeout": timedelta(hours=2)},
    }


def dag_params(kind: str) -> dict[str, Any]:
    """The parameters a DAG offers for a manual run (Airflow's trigger form), with the defaults a scheduled
    run uses. A run's conf (`airflow dags trigger -c '{...}'`, the REST API) sets them too."""
    from airflow.sdk import Param

    return {
        "train": {
            "deploy": Param(True, type="boolean", title="Deploy a promoted model",
                            description="the deploy DAG hot-swaps a newly promoted champion into the running "
                                        "service (MMOPS_SERVICE_URL_<DOMAIN>); off: promote only"),
            "resume": Param(False, type="boolean", title="Resume training",
                            description="continue the last interrupted training of the same dataset and params "
                                        "(a retry of the task does so anyway)"),
        },
        "ingest": {
            "announce": Param(True, type="boolean", title="Announce new records",
                              description="emit the labeled-records asset (which starts training) when new records "
                                          "or label changes arrived; off: a backfill that trains nothing"),
        },
        "label": {
            "export": Param(True, type="boolean", title="Export Label Studio tasks",
                            description="write the most uncertain records as Label Studio tasks"),
        },
        "release": {
            "note": Param("", type="string", title="Note", description="kept with a manual run's audit events"),
        },
        "monitor": {
            "since": Param(None, type=["null", "string", "number"], title="Check the log since",
                           description="an ISO-8601 time or epoch seconds; empty: the last monitor.window_hours"),
        },
    }[kind]


def labeled_asset(domain: str) -> Any:
    """The Asset an ingest DAG emits and the training DAG is scheduled on."""
    from airflow.sdk import Asset

    return Asset(name=f"mmops_{domain}_labeled", uri=f"mmops://{domain}/labeled-records")


def parallel_batches() -> int:
    """How many ingest batches of one DAG run may run at once: one on SQLite (a single writer), four on a
    server database."""
    from mmops.config import get_settings

    return 1 if get_settings().catalog_url.startswith("sqlite") else 4


def announce(new_records: int, label_changes: int, enabled: bool = True) -> dict[str, int]:
    """Succeed (and so emit the task's outlet Asset) only when there is something new to train on (and the
    run's `announce` param is on)."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not enabled:
        raise AirflowSkipException(f"announce is off for this run ({new_records} new records, {label_changes} "
                                   "label changes): training is not started")
    if new_records == 0 and label_changes == 0:
        raise AirflowSkipException("no new records and no label changes: nothing to announce")
    return {"new_records": new_records, "label_changes": label_changes}


def drift_asset(domain: str) -> Any:
    """The Asset the monitor DAG emits when what the domain's service sees has drifted; retraining is
    scheduled on it."""
    from airflow.sdk import Asset

    return Asset(name=f"mmops_{domain}_drift", uri=f"mmops://{domain}/drift")


def signal_drift(domain: str, result: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
    """Succeed (and so emit the domain's drift Asset, its event carrying the verdict) only on drift, or when
    the served model's accuracy on ground truth that came in has dropped (`monitor.accuracy_drop`)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mmops.stages.results import Monitored

    checked = Monitored.model_validate(result)
    if not checked.drifted and not checked.degraded:
        raise AirflowSkipException(f"{domain}: no drift (drift share {checked.drift_share:.2f}) and no "
                                   "performance drop; nothing to retrain")
    summary = checked.to_json(include={"drifted", "drifted_groups", "drifted_embeddings", "drifted_columns",
                                       "drift_share", "n_current", "performance", "json_path"})
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


def gather(domain: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Newly landed records (field captures) and the labels that came in since the last run."""
    from mmops.stages.results import Ingested, Labeled

    ingested, labeled = run_stage("ingest", domain), run_stage("label", domain)
    assert isinstance(ingested, Ingested) and isinstance(labeled, Labeled)
    return {"ingested": ingested.ingested, "quarantined": ingested.quarantined, "labeled": labeled.labeled,
            "by_kind": labeled.by_kind}


class RetrainingTasks:
    """The tasks of a domain's retraining, for a DAG file to wire into its own graph: gather newly landed
    and labeled data, validate, build, train a challenger, evaluate (promoted only if it beats the champion),
    package, champion (announce a new champion: the deploy DAG swaps it into the service), release (hand a
    challenger that passed the gate in a staged domain to the release DAG). Called inside a DAG (or task group) definition.

    Ids flow forward through XCom: train takes what build returned, evaluate what train returned, so a
    build made meanwhile by hand or by another run changes neither what this run trains nor what it
    evaluates."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def chain(self) -> None:
        """The whole retraining, wired: gather >> validate >> build >> train >> evaluate >> package >>
        [champion, release]; ids flow forward through XCom (build -> train -> evaluate -> champion, release)."""
        gathered, validated, built = self.gather(), self.validate(), self.build()
        evaluated = self.evaluate(self.train(built))
        gathered >> validated >> built
        evaluated >> self.package() >> [self.champion(evaluated), self.release(evaluated)]

    def gather(self) -> Any:
        return stage_task("gather", self.domain, gather)

    def validate(self) -> Any:
        return stage_task("validate", self.domain, run_stage_named("validate"))

    def build(self) -> Any:
        return stage_task("build", self.domain, run_stage_named("build"))

    def train(self, built: Any) -> Any:
        from datetime import timedelta

        return stage_task("train", self.domain, run_stage_named("train"), built,
                          execution_timeout=timedelta(hours=6), **training_task_args())

    def evaluate(self, trained: Any) -> Any:
        return stage_task("evaluate", self.domain, run_stage_named("evaluate"), trained)

    def package(self) -> Any:
        return stage_task("package", self.domain, run_stage_named("package"))

    def champion(self, evaluated: Any) -> Any:
        """Emit the champion Asset (the deploy DAG's schedule) when evaluate made the challenger champion."""
        from mmops.releasing import announce_champion, champion_asset

        return stage_task("champion", self.domain, announce_champion, evaluated, retries=0,
                          outlets=[champion_asset(self.domain)])

    def release(self, evaluated: Any) -> Any:
        """Emit the challenger Asset (the release DAG's schedule) when evaluate left the challenger to it."""
        from mmops.releasing import announce_challenger, challenger_asset

        return stage_task("release", self.domain, announce_challenger, evaluated, retries=0,
                          outlets=[challenger_asset(self.domain)])


def stage_task(task_id: str, domain: str, call: Any, *upstream: Any, **task_kwargs: Any) -> Any:
    """A task that runs `call(domain, *what upstream tasks returned, params=the run's params)`."""
    from airflow.sdk import task

    def run(*handed: Any, params: Any = None, outlet_events: Any = None) -> dict:  # Airflow passes these by name
        _note_dag_version()
        emits = {"outlet_events": outlet_events} if task_kwargs.get("outlets") else {}
        return call(domain, *handed, params=dict(params or {}), **emits)

    run.__name__ = task_id
    return task(task_id=task_id, **task_kwargs)(run)(*upstream)


def _note_dag_version() -> None:
    """The DAG version Airflow recorded for this task instance, for the audit events the stage writes."""
    from airflow.sdk import get_current_context

    from mmops.audit import DAG_VERSION_ENV

    try:
        os.environ[DAG_VERSION_ENV] = str(get_current_context()["ti"].dag_version_id)
    except Exception:  # outside a running task (a test calling the body): none to note
        os.environ.pop(DAG_VERSION_ENV, None)


def run_stage_named(name: str) -> Any:
    """A task body: the named pipeline stage for a domain, given what the upstream task returned (build's
    result to train, train's to evaluate). A retry of a training task (its worker died, the task timed
    out) continues from the last epoch checkpoint of the same dataset and params."""
    from mmops.stages.results import Built, Trained

    def call(domain: str, upstream: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if name == "train" and upstream:
            kwargs["dataset_version"] = Built.model_validate(upstream).dataset_version
        if name == "evaluate" and upstream:
            kwargs["training_run"] = Trained.model_validate(upstream).training_run
        if name == "train" and (params or {}).get("resume"):
            kwargs["resume"] = True
        elif name == "train" and _try_number() > 1:
            kwargs["resume"] = "auto"
        return run_stage(name, domain, **kwargs).to_json()

    return call


def _try_number() -> int:
    from airflow.sdk import get_current_context

    try:
        return int(get_current_context()["ti"].try_number)
    except Exception:  # outside a running task (a test calling the body): a first try
        return 1


def loop_state(domain: str, consume: bool = False) -> dict[str, Any]:
    """What Airflow's metadata DB says about the domain's retraining loop: the events of its drift Asset,
    whether they queued its training DAG, whether the scheduler would start that DAG now (its own query),
    and the latest runs' task states (monitor, training, deploy). consume: drop the training DAG's queue entries, as the scheduler does
    when it starts the run (used after `dag.test()` ran it in place of a scheduler)."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    train_dag = f"mmops_train_{domain}"
    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == drift_asset(domain).name))
        events = [] if asset is None else [
            {"id": e.id, "at": e.timestamp.isoformat(), "extra": e.extra, "source": f"{e.source_dag_id}."
             f"{e.source_task_id}", "source_run_id": e.source_run_id}
            for e in session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id).order_by(AssetEvent.id))]
        queued = session.scalars(select(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == train_dag)).all()
        queued_assets = sorted(session.scalars(select(AssetModel.name).where(
            AssetModel.id.in_([q.asset_id for q in queued])))) if queued else []
        _, due = DagModel.dags_needing_dagruns(session)  # the scheduler's own "start these DAGs now"
        runs = {}
        for dag_id in ("mmops_monitor", train_dag, f"mmops_deploy_{domain}"):
            run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1))
            if run is not None:
                tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                                                 TaskInstance.run_id == run.run_id))
                runs[dag_id] = {"run_id": run.run_id, "state": str(run.state),
                                "tasks": {t.task_id: str(t.state) for t in tis}}
        if consume and queued:
            session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == train_dag))
    return {"asset": drift_asset(domain).name, "events": events, "queued_assets": queued_assets,
            "train_due": train_dag in due, "runs": runs}
