"""Explaining files: why the domain's champion (or its latest model, before any champion) answers as it does
for records given as files, decoded and checked as ingest checks landed files (`mmops explain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmops.catalog import session_scope
from mmops.stages.common import resolve


def explain_files(domain: str, inputs: list[str], target: str | None = None,
                  out_dir: Path | None = None) -> dict[str, Any]:
    """inputs: `MODALITY=FILE` (one record) or landing-style folders (a record per key), as `mmops predict`
    takes them. With out_dir, a figure per record there (its maps over its inputs)."""
    from mmops.explain.report import figure
    from mmops.registry import champion_or_latest, store_path
    from mmops.serving.client import records_from_paths
    from mmops.serving.schemas import decode_record
    from mmops.tasks import task_of

    settings, _, pack = resolve(domain)
    records, _ = records_from_paths(pack, inputs)
    values = [decode_record(pack, r, stats=False)[0] for r in records]
    with session_scope(settings.catalog_url) as session:
        mv = champion_or_latest(session, domain)
        version, sha = mv.version, mv.checkpoint_sha256
    task = task_of(pack.task)
    predictor = task.load(store_path(settings.var_dir, domain, sha))
    explained = task.explain(predictor, values, target)
    answers = []
    for i, (rec, e) in enumerate(zip(records, explained, strict=True)):
        name = rec.get("id") or f"record-{i}"
        answer = {"id": rec.get("id"), **e}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{_safe(name)}.png"
            figure(pack, values[i], e, path, f"{name}: {e['explained']} {e['value']:.3f}")
            answer["figure"] = str(path)
        answers.append(answer)
    return {"domain": domain, "model_version": version, "explanations": answers}


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "record"
