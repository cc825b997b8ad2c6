"""`mmops drift-demo`: the monitoring loop closing on a running service, step by step.

1. The domain's champion serves on localhost (or at `--url`). Held-out records go in as they are, their
   labels come in later (ground truth), and the monitor DAG checks that window: no drift, no performance
   drop, so its drift Asset stays silent and nothing is queued.
2. The field changes (`mmops.shifts`: a miscalibrated sensor, a darker blurred camera, another site's
   report vocabulary) and the same kinds of records go in as the field now sends them. The monitor DAG finds
   drift, writes the report and a dashboard snapshot, records it in the catalog, and emits the domain's
   drift Asset, which queues the domain's training DAG.
3. The site lands what it captured, with labels (landing/<domain>/<modality>/, ground_truth/). The training
   DAG gathers it, validates it, trains a challenger, evaluates it against the champion on the same held-out
   split and records the decision; a promoted challenger's champion Asset event runs the deploy DAG, which
   hot-swaps it into the running service.

Airflow runs in place: `airflow dags test` (`dag.test()`) on the project's metadata DB, so no scheduler or
API server is needed. The scheduler's own query says whether the asset made the training DAG due; the
training run (then the deploy run) runs in place of the scheduler's, and its queue entries are consumed as
the scheduler would. A summary goes to artifacts/<domain>/drift_demo.json.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from mmops import pipeline
from mmops.airflow_local import Airflow, airflow_env
from mmops.atomic import write_atomic
from mmops.config import Settings, get_settings
from mmops.domains import DomainPack, load_domain
from mmops.errors import MmopsError
from mmops.serving.client import metadata, record_payload, wait_logged
from mmops.serving.schemas import wire_to_file
from mmops.shifts import shift_record


def land_captures(pack: DomainPack, landing: Path, payloads: list[dict[str, Any]], labels: dict[str, str],
                  batch: str) -> dict[str, Any]:
    """What a site lands after serving: each record's files (named by the id the service logged) and, in
    ground_truth/<batch>.csv, the labels its people gave them."""
    files = 0
    for payload in payloads:
        for name, value in payload["inputs"].items():
            data, suffix = wire_to_file(pack.modality(name), value)
            path = landing / name / f"{payload['id']}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files += 1
    return {"files": files, "ground_truth": str(write_ground_truth(landing, labels, batch))}


def write_ground_truth(landing: Path, labels: dict[str, str], batch: str) -> Path:
    path = landing / "ground_truth" / f"{batch}.csv"
    write_atomic(path, "sample_id,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    return path


def _send(url: str, payloads: list[dict[str, Any]], already_logged: int) -> int:
    from mmops.serving.client import predict

    predict(url, payloads, batch=8)
    stats = wait_logged(url, already_logged + len(payloads))
    return int(stats.get("written", 0))


def _monitor(airflow: Airflow, domain: str, since: float, console: Console) -> dict[str, Any]:
    airflow.test_dag("mmops_monitor", {"since": since})
    state = airflow.state(domain)
    report = json.loads((get_settings().artifacts_dir / domain / "drift" / "drift_report.json").read_text())
    tasks = state["runs"].get("mmops_monitor", {}).get("tasks", {})
    perf = report.get("performance") or {}
    acc = f"{perf['accuracy']:.3f} on {perf['n_labeled']} labeled" if perf.get("accuracy") is not None else "n/a"
    console.print(f"  monitor: drift share {report['drift_share']:.2f}, drifted modalities "
                  f"{report.get('drifted_groups') or 'none'}, embeddings {report.get('drifted_embeddings') or 'none'}; "
                  f"served accuracy {acc} (test {perf.get('test_accuracy')})")
    console.print(f"  signal_drift_{domain}: {tasks.get(f'signal_drift_{domain}')}; asset events so far "
                  f"{len(state['events'])}; training DAG queued by {state['queued_assets'] or 'nothing'}, "
                  f"due now: {state['train_due']}")
    return {"report": report, "state": state}


def run_drift_demo(domain: str, console: Console, url: str | None = None, port: int | None = None) -> dict[str, Any]:
    from mmops.demo import serving

    settings = get_settings()
    if url is None:
        with serving(domain, port or _free_port()) as local:
            return _loop(domain, local, settings, console)
    return _loop(domain, url, settings, console)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _loop(domain: str, url: str, settings: Settings, console: Console) -> dict[str, Any]:
    pack = load_domain(domain)
    manifest = pipeline.load_manifest(domain, settings)
    meta = metadata(url)
    if meta.get("domain", domain) != domain:
        raise MmopsError(f"{url} serves {meta.get('domain')}, not {domain}")
    served_before = meta.get("model_version")
    airflow = Airflow(airflow_env(settings, {f"MMOPS_SERVICE_URL_{domain.upper()}": url}),
                      settings.var_dir / "logs" / f"drift-demo-{domain}-airflow.log", settings.root)
    airflow.log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]{domain}[/bold]: service {url} runs {served_before}; Airflow at "
                  f"{airflow.env['AIRFLOW_HOME']} (log: {airflow.log_path})")
    airflow.prepare()
    # Airflow creates DAGs paused, and a paused DAG is not queued by its assets: switch this one on, as an
    # operator does in the UI
    if airflow.run("dags", "unpause", f"mmops_train_{domain}").returncode != 0:
        raise MmopsError(f"could not unpause mmops_train_{domain}; see {airflow.log_path}")
    events_before = len(airflow.state(domain)["events"])
    decisions_before = len(_decisions(domain, settings))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    from mmops.ingest import Landing

    landing = Landing(settings.landing(domain)).local
    if landing is None:
        raise MmopsError(f"the drift demo lands the field's captures in a local folder; {domain}'s landing area is "
                         f"{settings.landing(domain)}")
    logged = int((meta.get("prediction_log") or {}).get("written", 0))

    console.rule("1. traffic as the model knows it")
    held_out = manifest.split("test")
    since_normal = time.time()
    logged = _send(url, [record_payload(pack, settings.data_dir, r) for r in held_out], logged)
    write_ground_truth(landing, {r["key"]: r["label"] for r in held_out}, f"{stamp}-held-out")
    console.print(f"  sent {len(held_out)} held-out records; their labels came in (ground truth)")
    normal = _monitor(airflow, domain, since_normal, console)

    console.rule("2. the field changes")
    rows = [r for s in ("train", "val", "test") for r in manifest.split(s)]
    shifted = [shift_record(pack, record_payload(pack, settings.data_dir, r)) for r in rows]
    since_shift = time.time()
    logged = _send(url, shifted, logged)
    console.print(f"  sent {len(shifted)} records as the field now sends them ({_what_shifted(pack)})")
    landed = land_captures(pack, landing, shifted, {p["id"]: r["label"] for p, r in zip(shifted, rows, strict=True)},
                           f"{stamp}-field")
    console.print(f"  the site landed its {landed['files']} captured files and their labels: {landed['ground_truth']}")
    drifted = _monitor(airflow, domain, since_shift, console)

    console.rule("3. retraining, triggered by the drift asset")
    training = _retrain_if_due(airflow, domain, drifted, events_before, console)
    decisions = _decisions(domain, settings)
    decision = decisions[0] if len(decisions) > decisions_before else None
    served_after = metadata(url).get("model_version")
    console.print(f"  registry: v{decision['version']} {decision['action']} ({decision['reason']})" if decision
                  else "  registry: no new decision")
    console.print(f"  the service now runs {served_after} (before: {served_before})")
    drift_dir = settings.artifacts_dir / domain / "drift"
    embedding_reports = {g: r["html"] for g, r in drifted["report"].get("evidently_embeddings", {}).items()
                         if "html" in r}
    summary: dict[str, Any] = {
        "domain": domain, "url": url, "served_before": served_before, "served_after": served_after,
        "normal": _phase(normal, len(held_out), events_before),
        "shifted": _phase(drifted, len(shifted), len(normal["state"]["events"])),
        "landed": landed, "training": training, "decision": decision,
        "report": {"html": str(drift_dir / "drift_report.html"), "json": str(drift_dir / "drift_report.json"),
                   "embeddings": embedding_reports},
        "airflow_log": str(airflow.log_path),
    }
    _write_summary(settings.artifacts_dir / domain / "drift_demo.json", summary, console)
    return summary


def _retrain_if_due(airflow: Airflow, domain: str, drifted: dict[str, Any], events_before: int,
                    console: Console) -> dict[str, Any]:
    """Run the training DAG as the scheduler would, when the drift events queued it."""
    if not drifted["state"]["train_due"]:
        console.print("  the training DAG was not due: nothing retrained")
        return {"ran": False}
    events = [e["id"] for e in drifted["state"]["events"][events_before:]]
    airflow.test_dag(f"mmops_train_{domain}", {"triggering_asset_events": events})
    after = airflow.state(domain, consume=True)
    training = {"ran": True, "tasks": after["runs"].get(f"mmops_train_{domain}", {}).get("tasks", {})}
    console.print(f"  mmops_train_{domain}: " + ", ".join(f"{k} {v}" for k, v in training["tasks"].items()))
    if training["tasks"].get("champion") == "success":  # the champion Asset event: the deploy DAG's turn
        airflow.test_dag(f"mmops_deploy_{domain}")
        training["deploy"] = airflow.state(domain)["runs"].get(f"mmops_deploy_{domain}", {}).get("tasks", {})
        console.print(f"  mmops_deploy_{domain}: " + ", ".join(f"{k} {v}" for k, v in training["deploy"].items()))
    return training


def _write_summary(out: Path, summary: dict[str, Any], console: Console) -> None:
    out.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    console.print(f"\nreport     {summary['report']['html']}\n"
                  + "".join(f"embedding  {g}: {path}\n" for g, path in sorted(summary["report"]["embeddings"].items()))
                  + f"dashboard  make dashboard -> http://127.0.0.1:8000, project 'mmops {summary['domain']}' (a "
                  f"verdict and the sample reports per check)\nsummary    {out}")


def _phase(result: dict[str, Any], sent: int, events_before: int) -> dict[str, Any]:
    report, state = result["report"], result["state"]
    return {"sent": sent, "drifted": report["drifted"], "drift_share": report["drift_share"],
            "drifted_groups": report.get("drifted_groups"), "drifted_embeddings": report.get("drifted_embeddings"),
            "performance": report.get("performance"), "new_asset_events": state["events"][events_before:],
            "monitor_tasks": state["runs"].get("mmops_monitor", {}).get("tasks", {}),
            "train_queued_by": state["queued_assets"], "train_due": state["train_due"]}


def _what_shifted(pack: DomainPack) -> str:
    from mmops.modalities import kind_of

    notes = [kind_of(m).shift_note for m in pack.modalities]
    return "; ".join(n for i, n in enumerate(notes) if n and n not in notes[:i])


def _decisions(domain: str, settings: Settings) -> list[dict[str, Any]]:
    """The registry's audit log of champion decisions for the domain, newest first."""
    from mmops.catalog import session_scope
    from mmops.registry import describe

    with session_scope(settings.catalog_url) as session:
        log: list[dict[str, Any]] = describe(session, domain)["audit_log"]
    return log
