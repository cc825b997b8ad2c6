"""Deploy DAGs, one per domain: mmops_deploy_<domain>, scheduled on the champion Asset that every change of
the champion alias emits (the training DAG's champion task where the gate promotes, the release DAG's canary in
a staged domain): the new champion is swapped into the running service without a restart."""

from airflow.sdk import dag, task

from mmops.orchestration import configure, dag_defaults, dag_params, domains, project_root
from mmops.releasing import champion_asset, deploy

ROOT = project_root(__file__)
configure(ROOT)


def make_deploy_dag(domain: str):
    @dag(dag_id=f"mmops_deploy_{domain}", schedule=champion_asset(domain), tags=["mmops", "deploy", domain],
         **dag_defaults(retries=2), params=dag_params("release"),
         doc_md=f"""
### Deploy `{domain}`
Runs when the champion alias changed (asset `mmops_{domain}_champion`), or by hand: swaps the registry's
champion into the service at `MMOPS_SERVICE_URL_{domain.upper()}` without a restart (requests in flight finish
on the model they started on), then ends any trial there. Skipped, saying why, when no service is set or the
training run that made the champion had `deploy` off.
""")
    def deploy_dag():
        task(task_id="deploy")(
            lambda params=None, triggering_asset_events=None: deploy(domain, params, triggering_asset_events))()

    return deploy_dag()


for _domain in domains(ROOT):
    globals()[f"mmops_deploy_{_domain}"] = make_deploy_dag(_domain)
