"""Daily drift monitoring: an Evidently report per domain of what the service saw vs the training data."""

from airflow.sdk import dag, task

from mmops.orchestration import configure, dag_defaults, domains, project_root, run_stage

ROOT = project_root(__file__)
configure(ROOT)


@dag(
    dag_id="mmops_monitor",
    schedule="@daily",
    tags=["mmops", "monitor"],
    **dag_defaults(retry_minutes=5),
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
