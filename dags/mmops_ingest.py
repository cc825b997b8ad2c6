"""Ingest DAGs, one per domain: land -> catalog -> labels; emits the domain's labeled-records Asset."""

from airflow.sdk import dag, task

from mmops.orchestration import configure, dag_defaults, domains, labeled_asset, project_root, run_stage

ROOT = project_root(__file__)
configure(ROOT)


def make_ingest_dag(domain: str):
    @dag(
        dag_id=f"mmops_ingest_{domain}",
        schedule="@hourly",
        tags=["mmops", "ingest", domain],
        **dag_defaults(),
        doc_md=f"""
### Ingest `{domain}`
Picks up new files under `landing/{domain}/`: decodes and checks each one, stores it content-addressed in
`data/raw/{domain}/`, records it in the catalog, and quarantines bad files with a reason
(`quarantine/{domain}/`). Then imports `landing/{domain}/labels.csv`.
Emits the `mmops_{domain}_labeled` asset, which schedules `mmops_train_{domain}`.
""",
    )
    def ingest_dag():
        @task
        def ingest() -> dict:
            return run_stage("ingest", domain)

        @task(outlets=[labeled_asset(domain)])
        def label() -> dict:
            return run_stage("label", domain)

        ingest() >> label()

    return ingest_dag()


for _domain in domains(ROOT):
    globals()[f"mmops_ingest_{_domain}"] = make_ingest_dag(_domain)
