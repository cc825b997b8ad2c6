"""Daily drift monitoring: an Evidently report per domain of what the service saw vs the training data."""

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from mmops.orchestration import configure, domains, project_root, run_stage

ROOT = project_root(__file__)
configure(ROOT)


@dag(
    dag_id="mmops_monitor",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["mmops", "monitor"],
    default_args={"owner": "mmops", "retries": 2, "retry_delay": timedelta(minutes=5)},
    doc_md="""
### Monitor drift
For each domain, compares the served model's prediction log (`var/predictions/<domain>.jsonl`) with the
training split it learnt from, and writes an Evidently data-drift report
(`artifacts/<domain>/drift/drift_report.html`). A domain whose service saw no traffic is skipped.
""",
)
def mmops_monitor():
    for domain in domains(ROOT):

        @task(task_id=f"monitor_{domain}")
        def monitor(d: str = domain) -> dict:
            return run_stage("monitor", d)

        monitor()


mmops_monitor()
