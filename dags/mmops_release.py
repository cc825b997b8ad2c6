"""Release DAGs, one per staged domain (params.yaml release.staged): mmops_release_<domain>, scheduled on the
challenger Asset the training DAG emits when a challenger passed the promotion gate: shadow -> approve (a person,
in Airflow's Required Actions or over the REST API, where release.approval names the domain) -> decide
(recorded with who and why; a rejection releases nothing) -> canary (champion if it holds its bounds; emits the
champion Asset, which starts mmops_deploy_<domain>: dags/mmops_deploy.py)."""

from datetime import timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, dag, task

from mmops.config import load_params
from mmops.orchestration import configure, dag_defaults, dag_params, project_root
from mmops.releasing import (
    APPROVE,
    REJECT,
    canary,
    challenger_asset,
    champion_asset,
    decide,
    shadow,
)

ROOT = project_root(__file__)
configure(ROOT)
RELEASE = load_params(ROOT / "params.yaml").release
SHADOWED = "ti.xcom_pull(task_ids='shadow')"


def make_release_dag(domain: str):
    @dag(dag_id=f"mmops_release_{domain}", schedule=challenger_asset(domain), tags=["mmops", "release", domain],
         **dag_defaults(retries=2), params=dag_params("release"),
         doc_md=f"""
### Release `{domain}`
Runs when a challenger passed the promotion gate (asset `mmops_{domain}_challenger`).

1. **shadow**: the challenger runs beside the champion on mirrored traffic (`release.shadow_records`);
2. **approve**: {"a person approves or rejects, seeing the holdout, shadow and card figures (Required Actions, "
                 "or `PATCH .../taskInstances/approve/-1/hitlDetails`)" if domain in RELEASE.approval
                 else "not asked: the domain is not in release.approval"};
3. **decide**: the answer recorded with who and why; a rejection stops here and releases nothing;
4. **canary**: the challenger answers `release.canary_share` of the records, sticky by id; champion once it held
   its bounds for `release.canary_records` records, rejected if the service ended it. A new champion emits
   `mmops_{domain}_champion`, which starts `mmops_deploy_{domain}`.
""")
    def release_dag():
        shadowed = task(task_id="shadow", retries=0)(lambda params=None: shadow(domain, params))()
        answer = None
        if domain in RELEASE.approval:
            approve = HITLOperator(
                task_id="approve", subject=f"Release {domain} v{{{{ {SHADOWED}['version'] }}}} as champion?",
                body=f"{{{{ {SHADOWED}['summary_md'] }}}}", options=[APPROVE, REJECT],
                params={"reason": Param("", type="string", title="Why",
                                        description="your reason, kept in the audit ledger")},
                response_timeout=timedelta(days=3), retries=0, execution_timeout=timedelta(hours=1))
            shadowed >> approve
            answer = approve.output
        decided = task(task_id="decide", retries=0)(
            lambda shadowed, answer, params=None: decide(domain, shadowed, answer, params))(shadowed, answer)
        task(task_id="canary", retries=0, outlets=[champion_asset(domain)])(
            lambda decided, params=None, outlet_events=None: canary(domain, decided, params, outlet_events))(decided)

    return release_dag()


for _domain in RELEASE.staged:
    globals()[f"mmops_release_{_domain}"] = make_release_dag(_domain)
