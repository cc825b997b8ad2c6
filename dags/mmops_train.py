"""Training DAGs, one per domain, scheduled on the domain's labeled-records Asset:
validate (gate) -> build dataset version -> train -> evaluate (registry) -> package (BentoML)."""

from datetime import timedelta

from airflow.sdk import dag, task

from mmops.orchestration import configure, dag_defaults, domains, labeled_asset, project_root, run_stage

ROOT = project_root(__file__)
configure(ROOT)


def make_train_dag(domain: str):
    @dag(
        dag_id=f"mmops_train_{domain}",
        schedule=[labeled_asset(domain)],
        tags=["mmops", "train", domain],
        **dag_defaults(retry_minutes=2),
        doc_md=f"""
### Train `{domain}`
Runs when new labeled `{domain}` records arrive (asset `mmops_{domain}_labeled`), or by hand.
The validation gate fails this DAG without retries when the data breaks a critical expectation
(the task log names them). A passing gate builds a dataset version, trains the fusion model (CUDA when the
worker has one), evaluates it on the held-out split, registers it (champion/challenger) and packages a bento.
""",
    )
    def train_dag():
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

        validate() >> build() >> train() >> evaluate() >> package()

    return train_dag()


for _domain in domains(ROOT):
    globals()[f"mmops_train_{_domain}"] = make_train_dag(_domain)
