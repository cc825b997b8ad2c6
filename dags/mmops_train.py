"""Training DAGs, one per domain, scheduled on the domain's labeled-records Asset or its drift Asset:
gather labels -> validate (gate) -> build dataset version -> train -> evaluate (registry: promoted only if
better) -> package (BentoML) -> champion (an Asset event when promoted: mmops_deploy_<domain> hot-swaps it into
the running service) | release (a staged domain's challenger, to mmops_release_<domain>)."""

from airflow.sdk import dag

from mmops.orchestration import (
    RetrainingTasks,
    configure,
    dag_defaults,
    dag_params,
    domains,
    drift_asset,
    labeled_asset,
    project_root,
)

ROOT = project_root(__file__)
configure(ROOT)


def make_train_dag(domain: str):
    @dag(
        dag_id=f"mmops_train_{domain}",
        schedule=(labeled_asset(domain) | drift_asset(domain)),
        tags=["mmops", "train", domain],
        **dag_defaults(retry_minutes=2),
        params=dag_params("train"),
        doc_md=f"""
### Train `{domain}`
Runs when new labeled `{domain}` records arrive (asset `mmops_{domain}_labeled`), when the monitor finds
that what the service sees has drifted (asset `mmops_{domain}_drift`; the event's extra says which
modalities), or by hand. `mmops_retrain_weekly` runs the same steps every week.

1. **gather**: resolve the labels that came in since the last run (files, Label Studio exports, rules);
2. **validate**: the Great Expectations gate; a failure stops the DAG without retries (the log names the
   broken expectations and links the Data Docs);
3. **build** a dataset version, **train** a challenger (CUDA when the worker has one);
4. **evaluate** on the held-out split: the registry promotes it only if it beats the champion;
5. **package** it into the BentoML model store and a bento;
6. **champion**: a promoted model emits `mmops_{domain}_champion`, which starts `mmops_deploy_{domain}`: the
   running service (`MMOPS_SERVICE_URL_{domain.upper()}`) swaps it in; skipped, saying why, when not promoted;
7. **release**: in a staged domain (params.yaml `release.staged`) a challenger that passed the gate is not
   promoted here: this task emits `mmops_{domain}_challenger`, which starts `mmops_release_{domain}` (shadow,
   a person's approval, canary); skipped otherwise.

Manual runs: **deploy** (default on) off promotes without touching the service (the champion event says so); **resume** continues the
last interrupted training of the same dataset and params (a retried train task does so by itself).
""",
    )
    def train_dag():
        RetrainingTasks(domain).chain()

    return train_dag()


for _domain in domains(ROOT):
    globals()[f"mmops_train_{_domain}"] = make_train_dag(_domain)
