"""Labeling DAGs, one per domain: import finished annotations -> pre-label with the champion model and
re-rank the review queue -> export the next Label Studio tasks. Emits the labeled-records Asset when human
labels changed, so that training picks them up."""

from airflow.sdk import dag, task

from mmops.orchestration import (
    announce,
    configure,
    dag_defaults,
    dag_params,
    domains,
    labeled_asset,
    project_root,
    run_stage,
)

ROOT = project_root(__file__)
configure(ROOT)


def make_label_dag(domain: str):
    @dag(
        dag_id=f"mmops_label_{domain}",
        schedule="@daily",
        tags=["mmops", "label", domain],
        **dag_defaults(),
        params=dag_params("label"),
        doc_md=f"""
### Label `{domain}`
1. `import_annotations`: Label Studio JSON exports dropped in `landing/{domain}/annotations/` become human
   labels (annotator, time; precedence human > file > model > rule; conflicts in
   `artifacts/{domain}/label_conflicts.json`), with the labels file and the domain's rules.
2. `prelabel`: the champion model predicts every record no human labeled (kind `model`, with confidence), and
   the review queue is re-ranked by uncertainty (active learning).
3. `export`: the most uncertain records go to `artifacts/{domain}/labelstudio/tasks.json` with the model's
   predictions as pre-annotations (`config.xml` is the labeling interface).

Annotations are imported first so that what annotators finished leaves the queue before it is re-ranked.
A manual run with **export** off re-ranks the queue without writing new tasks.
""",
    )
    def label_dag():
        @task
        def import_annotations() -> dict:
            result = run_stage("label", domain).to_json()
            return {"changed": sum(a.get("imported", 0) + a.get("updated", 0) for a in result["annotations"]),
                    "conflicts": result["conflicts"]}

        @task(outlets=[labeled_asset(domain)])
        def announce_labels(result: dict) -> dict:
            return announce(new_records=0, label_changes=result["changed"])

        @task
        def prelabel() -> dict:
            result = run_stage("prelabel", domain, export=False).to_json()
            return {"model": (result["model"] or {}).get("model_version"), "queue": result["queue"]}

        @task
        def export(*, params=None) -> dict:
            if not (params or {}).get("export", True):
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException("export is off for this run")
            return run_stage("export_tasks", domain).to_json()

        imported = import_annotations()
        announce_labels(imported)
        imported >> prelabel() >> export()

    return label_dag()


for _domain in domains(ROOT):
    globals()[f"mmops_label_{_domain}"] = make_label_dag(_domain)
