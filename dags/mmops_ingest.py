"""Ingest DAGs, one per domain: plan the new files -> ingest them batch by batch (dynamic task mapping) ->
labels -> emit the domain's labeled-records Asset, only when something new arrived."""

from datetime import timedelta

from airflow.sdk import dag, task

from mmops.orchestration import (
    announce,
    configure,
    dag_defaults,
    dag_params,
    domains,
    labeled_asset,
    parallel_batches,
    project_root,
    run_stage,
)

ROOT = project_root(__file__)
configure(ROOT)


def make_ingest_dag(domain: str):
    @dag(
        dag_id=f"mmops_ingest_{domain}",
        schedule="@hourly",
        tags=["mmops", "ingest", domain],
        **dag_defaults(),
        params=dag_params("ingest"),
        doc_md=f"""
### Ingest `{domain}`
`plan` lists what is new or changed in the landing area (`landing/{domain}/`, or `MMOPS_LANDING_URL`) without
reading it, in batches of `ingest.batch_files` (params.yaml). `ingest` runs once per batch (dynamic task
mapping): it decodes and checks each file, stores it content-addressed in `data/raw/{domain}/`, commits the
batch to the catalog in one transaction and quarantines bad files with a reason (`quarantine/{domain}/`,
`mmops quarantine list`). A failed batch is retried with backoff (transient I/O); rerunning one is safe.
`label` imports the labels file, Label Studio exports and the domain's rules. `announce` emits the
`mmops_{domain}_labeled` asset, which schedules `mmops_train_{domain}`, only when new records or changed
labels arrived; otherwise it is skipped. A manual run with **announce** off (a backfill) ingests and labels
without starting training.
""",
    )
    def ingest_dag():
        @task
        def plan() -> list[list[str]]:
            return run_stage("plan_ingest", domain).to_json()["batches"]

        @task(retries=3, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True,
              max_active_tis_per_dagrun=parallel_batches())
        def ingest(paths: list[str]) -> dict:
            summary = run_stage("ingest", domain, paths=paths)
            return summary.to_json(include={"seen", "ingested", "duplicates", "quarantined", "new_records", "seconds"})

        @task(trigger_rule="none_failed")
        def label() -> dict:
            result = run_stage("label", domain).to_json()
            return {"changed": sum(f.get("imported", 0) + f.get("updated", 0)
                                   for f in result["files"] + result["annotations"]),
                    "trusted": result["trusted"], "conflicts": result["conflicts"]}

        @task(outlets=[labeled_asset(domain)], trigger_rule="none_failed")
        def announce_new(batches: list[dict], labels: dict, *, params=None) -> dict:
            return announce(new_records=sum(b["ingested"] for b in batches or []), label_changes=labels["changed"],
                            enabled=bool((params or {}).get("announce", True)))

        batches = ingest.expand(paths=plan())
        labels = label()
        batches >> labels
        announce_new(batches, labels)

    return ingest_dag()


for _domain in domains(ROOT):
    globals()[f"mmops_ingest_{_domain}"] = make_ingest_dag(_domain)
