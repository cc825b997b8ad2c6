"""Labeling stages: labels from files, ground truth, Label Studio and rules; the champion's pre-labels and
the review queue; Label Studio tasks out and annotations in."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mmops import audit
from mmops.catalog import locked_session, session_scope
from mmops.config import Settings, get_settings
from mmops.context import artifacts
from mmops.domains import DomainPack
from mmops.errors import NotFoundError
from mmops.stages.common import jsonable, resolve, write_summary
from mmops.stages.data import ground_truth_files, landed_file, landed_folder
from mmops.stages.results import Exported, Labeled, Prelabeled

log = logging.getLogger(__name__)


def label(domain: str) -> Labeled:
    """Labels from every source that needs no model: the labels file (CSV or JSON), ground truth that came in
    after serving (landing/<domain>/ground_truth/), Label Studio exports dropped in landing/<domain>/annotations/,
    and the domain's labeling functions. Writes the resolution
    report (labels chosen per kind, conflicts, disagreements) to artifacts/<domain>/labels.json."""
    from mmops.labeling import import_labels
    from mmops.labeling.labelstudio import import_annotations
    from mmops.labeling.rules import apply_rules

    settings, params, pack = resolve(domain)
    result: dict[str, Any] = {"domain": domain, "files": [], "ground_truth": [], "annotations": [], "rules": None}
    with locked_session(f"labels-{domain}", settings.catalog_url) as session:
        stem = Path(pack.labels_file).stem
        for name in dict.fromkeys([pack.labels_file, f"{stem}.csv", f"{stem}.json"]):
            path = landed_file(settings, domain, name)
            if path is not None:
                result["files"].append(jsonable(import_labels(session, pack, path)))
        for path in ground_truth_files(domain, settings):
            result["ground_truth"].append(jsonable(import_labels(session, pack, path, ground_truth=True)))
        for name in landed_folder(settings, domain, "annotations", (".json",)):
            path = landed_file(settings, domain, name)
            if path is not None:
                result["annotations"].append(jsonable(import_annotations(session, pack, path)))
        result["rules"] = jsonable(apply_rules(session, pack, settings.data_dir))
        resolution = _label_report(session, pack, settings)
        audit.record(session, "labeled", domain, f"labels:{resolution['labeled']} records",
                     by_kind=resolution["by_kind"], conflicts=len(resolution["conflicts"]),
                     files=[f["source"] for f in result["files"]], ground_truth=len(result["ground_truth"]),
                     annotations=len(result["annotations"]))
    if not result["files"] and not result["annotations"] and not resolution["labeled"]:
        raise NotFoundError(f"no labels for {domain}: land {pack.labels_file} (or Label Studio exports in "
                            f"annotations/) next to the data, or add label_rules to the domain pack")
    trusted = sum(n for k, n in resolution["by_kind"].items() if k in params.label.train_on)
    result |= {"labeled": resolution["labeled"], "by_kind": resolution["by_kind"], "trusted": trusted,
               "conflicts": len(resolution["conflicts"]), "disagreements": len(resolution["disagreements"])}
    if resolution["conflicts"]:
        log.warning("%s: %d records have conflicting labels; see %s", domain, len(resolution["conflicts"]),
                    artifacts(domain, settings) / "label_conflicts.json")
    return Labeled(**write_summary(artifacts(domain, settings) / "labels.json", result))


def _label_report(session: Any, pack: DomainPack, settings: Settings) -> dict[str, Any]:
    """Resolve every record's label and write the records whose sources disagree to label_conflicts.json."""
    from mmops.labeling import report, resolve
    from mmops.tasks import task_of

    session.flush()
    task = task_of(pack.task)  # a detector's `anomalous` agrees with any kind of anomaly a file names
    resolution = report(resolve(session, pack.name), lambda vote, chosen: task.agrees(pack, vote, chosen))
    write_summary(artifacts(pack.name, settings) / "label_conflicts.json",
                   {k: resolution[k] for k in ("conflicts", "disagreements")})
    return resolution


def prelabel(domain: str, export: bool = True) -> Prelabeled:
    """Model-assisted labeling: the champion's predictions on records no human labeled (as `model` labels),
    the review queue re-ranked (by the model's uncertainty, or a detector's anomaly score), and the top of it
    exported as Label Studio tasks to artifacts/<domain>/labelstudio/. Without a model yet, the queue is ranked by the rules' confidence."""
    from mmops.labeling.queue import prelabel as model_prelabel
    from mmops.labeling.queue import refresh_queue
    from mmops.registry import champion_or_latest

    settings, params, pack = resolve(domain)
    result: dict[str, Any] = {"domain": domain, "model": None, "export": None}
    with locked_session(f"labels-{domain}", settings.catalog_url) as session:
        try:
            mv = champion_or_latest(session, domain)
        except NotFoundError:
            mv, prelabels = None, None
        if mv is not None:
            summary, prelabels = model_prelabel(session, pack, settings.data_dir, mv, params.train.device,
                                                params.label.uncertainty)
            result["model"] = jsonable(summary)
        session.flush()
        result["queue"] = refresh_queue(session, pack, prelabels, mv)
        resolution = _label_report(session, pack, settings)
        # records whose chosen label the model (or the rules) contradicts: likely label errors, worth a look
        result["disagreements"] = len(resolution["disagreements"])
    if export:
        result["export"] = export_tasks(domain).to_json()
    return Prelabeled(**write_summary(artifacts(domain, settings) / "prelabel.json", result))


def export_tasks(domain: str) -> Exported:
    """The most uncertain queued records as Label Studio tasks in artifacts/<domain>/labelstudio/."""
    from mmops.labeling.labelstudio import export_tasks as _export

    settings, params, pack = resolve(domain)
    with session_scope(settings.catalog_url) as session:
        return Exported(**_export(session, pack, settings.data_dir, artifacts(domain, settings) / "labelstudio",
                                  params.label.export_limit))


def import_annotations(domain: str, path: str) -> dict[str, Any]:
    """Import one Label Studio JSON export as human labels."""
    from mmops.labeling.labelstudio import import_annotations as _import

    settings, _, pack = resolve(domain)
    export = Path(path)
    if not export.is_file():
        raise NotFoundError(f"no Label Studio export at {export}")
    with locked_session(f"labels-{domain}", settings.catalog_url) as session:
        summary = jsonable(_import(session, pack, export))
        audit.record(session, "annotations_imported", domain, f"file:{export.name}",
                     imported=summary["imported"], updated=summary["updated"], rejected=len(summary["rejected"]))
        return summary


def review_queue(domain: str, limit: int = 20) -> list[dict[str, Any]]:
    """The records waiting for a human label, highest priority first (least sure, or most anomalous)."""
    from mmops.labeling.queue import top

    with session_scope(get_settings().catalog_url) as session:
        return [{"key": key, "score": item.score, "method": item.method, "prediction": item.prediction,
                 "status": item.status} for item, key in top(session, domain, limit)]
