"""Daily drift monitoring, per domain: the service's prediction log against the served model's reference
sketch; on drift, the domain's drift Asset is emitted and its training DAG runs."""

from airflow.sdk import dag, task

from mmops.orchestration import (
    configure,
    dag_defaults,
    dag_params,
    domains,
    drift_asset,
    monitor_since,
    project_root,
    run_stage,
    signal_drift,
)

ROOT = project_root(__file__)
configure(ROOT)


@dag(
    dag_id="mmops_monitor",
    schedule="@daily",
    tags=["mmops", "monitor"],
    **dag_defaults(retry_minutes=5),
    params=dag_params("monitor"),
    doc_md="""
### Monitor drift
For each domain, streams the service's prediction log (`var/predictions/<domain>.jsonl`) through the
reference sketch of the model that answered it: each modality's summary statistics, the predicted class,
each modality's embedding. Writes the verdict (`artifacts/<domain>/drift/drift_report.json`), Evidently's
report on a sample (`drift_report.html`) and a row in the catalog's `drift_reports`.

**signal_drift_&lt;domain&gt;** succeeds only on drift (a modality past `monitor.drift_share_threshold` in
params.yaml, or an embedding past its no-drift 95th percentile) and then emits the asset
`mmops_<domain>_drift`, which schedules `mmops_train_<domain>`. A domain whose service saw no traffic is
skipped. Trigger with the param **since** (`{"since": "2026-11-24T08:00:00Z"}`) to check the log from a given
time (default: the last `monitor.window_hours`).
""",
)
def mmops_monitor():
    for domain in domains(ROOT):

        @task(task_id=f"monitor_{domain}")
        def monitor(d: str = domain, *, params=None) -> dict:
            # a run with since=<epoch seconds or ISO time> (a param: the trigger form or the run's conf) checks
            # the log from then on; otherwise the last monitor.window_hours of it
            return run_stage("monitor", d, since=monitor_since(dict(params or {}))).to_json()

        @task(task_id=f"signal_drift_{domain}", outlets=[drift_asset(domain)])
        def signal(result: dict, d: str = domain, *, outlet_events=None) -> dict:
            return signal_drift(d, result, outlet_events)

        signal(monitor())


mmops_monitor()
