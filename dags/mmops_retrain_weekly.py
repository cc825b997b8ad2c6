"""Weekly retraining of every domain, drift or not: the same steps as the drift- and label-triggered
training DAGs, one task group per domain."""

from airflow.sdk import TaskGroup, dag

from mmops.orchestration import RetrainingTasks, configure, dag_defaults, dag_params, domains, project_root

ROOT = project_root(__file__)
configure(ROOT)


@dag(
    dag_id="mmops_retrain_weekly",
    schedule="@weekly",
    tags=["mmops", "train", "weekly"],
    **dag_defaults(retry_minutes=5),
    params=dag_params("train"),
    doc_md="""
### Weekly retraining
Every week, for each domain: gather labels -> validate -> build -> train a challenger -> evaluate
(promoted only if it beats the champion on the held-out split) -> package -> champion event when promoted
(`mmops_deploy_<domain>` swaps it in), or release, in a staged domain.
Catches slow changes that stay under the drift thresholds, and labels that arrived late. Between weeks,
`mmops_train_<domain>` runs the same steps on new labels or detected drift. Manual runs take the same
**deploy** and **resume** params as `mmops_train_<domain>`.
""",
)
def mmops_retrain_weekly():
    for domain in domains(ROOT):
        with TaskGroup(group_id=domain):
            RetrainingTasks(domain).chain()


mmops_retrain_weekly()
