"""Label Studio round trip: the review queue out as tasks (with the model's predictions as pre-annotations),
finished annotations back in as human labels.

`export_tasks` writes `tasks.json` (import it into a Label Studio project) and `config.xml` (the project's
labeling interface: every modality of the record side by side, one single-choice question `label`). The
record travels inside the task: text as text, images as PNG data URIs, sensor series as inline JSON for the
TimeSeries tag, so no storage has to be shared with the Label Studio server.

`import_annotations` reads a Label Studio JSON export (Export -> JSON). Each annotator's non-cancelled
choice becomes a `human` label with source `human:<annotator>` and the annotation's time; tasks that name
unknown records or classes are reported, never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mmops.blobs import read_blob
from mmops.catalog import ModelVersion, ReviewItem, Sample, SampleFile
from mmops.domains import DomainPack
from mmops.errors import BadInputError
from mmops.labeling.queue import top
from mmops.labeling.store import put_label
from mmops.modalities import kind_of, read_value

CHOICE = "label"  # the from_name of the classification question


def config_xml(pack: DomainPack) -> str:
    parts = ["<View>", '  <Header value="$sample_key"/>']
    parts += ["  " + kind_of(spec).labelstudio_tag(spec) for spec in pack.modalities]
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in pack.classes)
    parts.append(f'  <Choices name="{CHOICE}" toName={quoteattr(pack.modalities[0].name)} choice="single" '
                 f'showInLine="true" required="true">{choices}</Choices>')
    parts.append("</View>")
    return "\n".join(parts) + "\n"


def _media(spec: Any, data: bytes) -> Any:
    return kind_of(spec).labelstudio_value(spec, read_value(data, spec))


def _model_name(session: Session, item: ReviewItem) -> str:
    mv = session.get(ModelVersion, item.model_version_id)
    return f"{mv.domain}@v{mv.version}" if mv is not None else str(item.model_version_id)


def _placeholder(spec: Any) -> Any:
    return kind_of(spec).labelstudio_placeholder(spec)


def export_tasks(session: Session, pack: DomainPack, data_root: Path, out_dir: Path,
                 limit: int | None = 100) -> dict[str, Any]:
    """Write the `limit` most uncertain queued records as Label Studio tasks; marks them exported."""
    items = top(session, pack.name, limit)
    files: dict[int, dict[str, str]] = {}
    if items:
        for sample_id, modality, blob in session.execute(
            select(SampleFile.sample_id, SampleFile.modality, SampleFile.blob_path).where(
                SampleFile.sample_id.in_([i.sample_id for i, _ in items]), SampleFile.status == "ok")
        ):
            if sample_id is not None and modality is not None and blob is not None:
                files.setdefault(sample_id, {})[modality] = blob
    tasks = []
    now = datetime.now(UTC)
    for item, key in items:
        data: dict[str, Any] = {"sample_key": key, "domain": pack.name}
        present = files.get(item.sample_id, {})
        for spec in pack.modalities:
            blob = present.get(spec.name)
            # Label Studio needs every $variable of the config: a missing modality gets an explicit placeholder
            data[spec.name] = _media(spec, read_blob(data_root, blob)) if blob else _placeholder(spec)
        missing = [m for m in pack.modality_names if m not in present]
        task: dict[str, Any] = {"data": data, "meta": {"priority": item.score, "method": item.method,
                                                       "missing_modalities": missing}}
        if item.prediction is not None:
            score = (item.probabilities or {}).get(item.prediction)
            task["predictions"] = [{
                "model_version": item.method if item.model_version_id is None else _model_name(session, item),
                "score": score,
                "result": [{"from_name": CHOICE, "to_name": pack.modalities[0].name, "type": "choices",
                            "value": {"choices": [item.prediction]}}],
            }]
        tasks.append(task)
        item.status, item.exported_at = "exported", now
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tasks.json").write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    (out_dir / "config.xml").write_text(config_xml(pack), encoding="utf-8")
    return {"domain": pack.name, "tasks": len(tasks), "path": str(out_dir / "tasks.json"),
            "config": str(out_dir / "config.xml")}


@dataclass
class AnnotationSummary:
    domain: str
    source_file: str
    tasks: int = 0
    annotations: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    cancelled: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # "<task id>" -> reason


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("created_username") or annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("username") or who.get("id")
    if isinstance(who, str):
        who = who.split(",")[0].strip()  # "alice@x.org, 3" in recent exports
    if isinstance(who, int):
        return f"label-studio-user-{who}"  # only the server's user id is in the export
    return str(who) if who not in (None, "") else "unknown"


def _when(annotation: dict[str, Any]) -> datetime | None:
    for key in ("updated_at", "created_at"):
        raw = annotation.get(key)
        if isinstance(raw, str):
            try:
                when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                continue
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def import_annotations(session: Session, pack: DomainPack, export_path: Path) -> AnnotationSummary:
    """Import a Label Studio JSON export as human labels with provenance. An export is data from another
    system: a file over the size limit or not JSON is refused whole; a task or annotation of the wrong shape is
    rejected with its reason, the rest imported."""
    from mmops.labeling.files import MAX_LABEL_FILE_BYTES

    if export_path.stat().st_size > MAX_LABEL_FILE_BYTES:
        raise BadInputError(f"{export_path} is over {MAX_LABEL_FILE_BYTES} bytes: not a Label Studio export of this "
                            "platform's tasks")
    try:
        tasks = json.loads(export_path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadInputError(f"{export_path} is not a Label Studio JSON export: {exc}") from None
    if not isinstance(tasks, list):
        raise BadInputError(f"{export_path}: expected a list of tasks (Label Studio Export -> JSON)")
    summary = AnnotationSummary(pack.name, export_path.name, tasks=len(tasks))
    ids = {s.sample_key: s.id for s in session.scalars(select(Sample).where(Sample.domain == pack.name))}
    done: set[int] = set()
    for n, task in enumerate(tasks):
        task = task if isinstance(task, dict) else {}
        tid = str(task.get("id", n))[:64]
        data = task.get("data")
        data = data if isinstance(data, dict) else {}
        key = data.get("sample_key")
        if data.get("domain", pack.name) != pack.name or not isinstance(key, str) or key not in ids:
            summary.rejected[tid] = f"task names no record of {pack.name}: {str(key)[:80]!r}"
            continue
        annotations = task.get("annotations") or []
        for annotation in annotations if isinstance(annotations, list) else [None]:
            summary.annotations += 1
            if not isinstance(annotation, dict):
                summary.rejected[tid] = "an annotation that is not a JSON object"
                continue
            if annotation.get("was_cancelled"):
                summary.cancelled += 1
                continue
            results = annotation.get("result")
            choices = [c for r in (results if isinstance(results, list) else [])
                       if isinstance(r, dict) and r.get("from_name") == CHOICE and isinstance(r.get("value"), dict)
                       for c in (r["value"].get("choices") if isinstance(r["value"].get("choices"), list) else [])]
            if len(choices) != 1 or choices[0] not in pack.classes:
                summary.rejected[tid] = (f"annotation of {key} chose {str(choices)[:80]}, expected one of "
                                         f"{list(pack.classes)}")
                continue
            who = _annotator(annotation)[:128]
            aid = annotation.get("id")
            outcome = put_label(session, ids[key], choices[0], "human", f"human:{who}", annotator=who,
                                detail={"label_studio_task": tid, "annotation": aid if isinstance(aid, int | str) else None},
                                at=_when(annotation))
            setattr(summary, outcome, getattr(summary, outcome) + 1)
            done.add(ids[key])
    if done:
        session.execute(delete(ReviewItem).where(ReviewItem.sample_id.in_(done)))
    return summary
