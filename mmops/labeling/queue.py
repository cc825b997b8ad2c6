"""Model-assisted labeling and the review queue (active learning).

`prelabel` runs the domain's champion model over records that no human has labeled and stores its
predictions as kind `model` labels (source `model:<domain>@v<N>`, with confidence and detail). `refresh_queue`
ranks the records still waiting for a human (no human or file label yet) as the domain's task kind says
(mmops.tasks, `prelabel`): a classifier's least sure answers first (normalised entropy of its
probabilities, or the margin between the top two), where a label teaches the model most; an anomaly
detector's flagged records first, most anomalous leading. Without a model, the rules' vote margin ranks
them; without either, all rank equal. Records that got a human label leave the queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mmops.catalog import Label, ModelVersion, ReviewItem, Sample, TrainingRun
from mmops.domains import DomainPack
from mmops.labeling.store import put_label
from mmops.tasks import Prelabel, task_of

REVIEWED = ("human", "file")  # label kinds that take a record out of the review queue
UNMODELLED = ("rule_margin", "none")  # queue ranks that no model gave


def _labeled_by(session: Session, domain: str, kinds: tuple[str, ...]) -> set[int]:
    return set(session.scalars(select(Label.sample_id).join(Sample).where(
        Sample.domain == domain, Label.kind.in_(kinds), Label.superseded_at.is_(None))))


@dataclass
class PrelabelSummary:
    domain: str
    model_version: str
    records: int = 0
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    superseded: int = 0  # current labels of older model versions retired


def prelabel(session: Session, pack: DomainPack, data_root: Path, mv: ModelVersion, device: str = "cpu",
             method: str = "entropy") -> tuple[PrelabelSummary, dict[int, Prelabel]]:
    """Predict every record without a human label with model version `mv`. -> (summary, sample id -> its
    pre-label, which `refresh_queue` ranks by)."""
    from mmops.datasets.tensors import load_split
    from mmops.records import load_records

    run = session.get(TrainingRun, mv.training_run_id)
    if run is None or not run.checkpoint_path:
        raise ValueError(f"model {pack.name} v{mv.version} has no checkpoint on record")
    task = task_of(pack.task)
    predictor = task.load(Path(run.checkpoint_path), device)
    humans = _labeled_by(session, pack.name, ("human",))
    ids = {s.sample_key: s.id for s in session.scalars(select(Sample).where(Sample.domain == pack.name))}
    records = [r for r in load_records(session, pack.name) if ids[r.key] not in humans]
    source = f"model:{pack.name}@v{mv.version}"
    summary = PrelabelSummary(pack.name, source, records=len(records))
    by_id: dict[int, Prelabel] = {}
    for start in range(0, len(records), 256):
        chunk = records[start:start + 256]
        answers = task.prelabel(predictor, load_split(pack, data_root, [r.to_manifest() for r in chunk]), method)
        for record, answer in zip(chunk, answers, strict=True):
            sample_id = ids[record.key]
            by_id[sample_id] = answer
            outcome = put_label(session, sample_id, answer.label, "model", source, model_version_id=mv.id,
                                confidence=answer.confidence, detail=answer.detail)
            setattr(summary, outcome, getattr(summary, outcome) + 1)
    # an older model's pre-labels step aside (kept as history): the current champion speaks for the model tier
    stale = session.execute(
        update(Label).where(Label.kind == "model", Label.source != source, Label.superseded_at.is_(None),
                            Label.sample_id.in_(select(Sample.id).where(Sample.domain == pack.name)))
        .values(superseded_at=datetime.now(UTC)).execution_options(synchronize_session=False))
    summary.superseded = getattr(stale, "rowcount", 0) or 0  # a CursorResult for UPDATE
    return summary, by_id


def refresh_queue(session: Session, pack: DomainPack, prelabels: dict[int, Prelabel] | None = None,
                  mv: ModelVersion | None = None) -> dict[str, Any]:
    """Rebuild the domain's review queue from the model's pre-labels (or the rules' confidence): every record
    that neither a human nor a label file has labeled."""
    humans = _labeled_by(session, pack.name, REVIEWED)
    session.execute(delete(ReviewItem).where(ReviewItem.domain == pack.name, ReviewItem.sample_id.in_(humans)))
    existing = {i.sample_id: i for i in session.scalars(select(ReviewItem).where(ReviewItem.domain == pack.name))}
    waiting = [sid for sid in session.scalars(select(Sample.id).where(Sample.domain == pack.name))
               if sid not in humans]
    pending = set(waiting)
    rule_votes = {sid: (label, conf) for sid, label, conf in session.execute(
        select(Label.sample_id, Label.label, Label.confidence).join(Sample).where(
            Sample.domain == pack.name, Label.kind == "rule", Label.superseded_at.is_(None)))}
    now = datetime.now(UTC)
    scores: dict[int, tuple[float, str, str | None, dict[str, float] | None]] = {
        sid: (p.priority, p.method, p.label, p.scores) for sid, p in (prelabels or {}).items() if sid in pending}
    for sid in waiting:
        if sid not in scores:  # no model output: the rules' vote and confidence, else unknown (= most uncertain)
            label, conf = rule_votes.get(sid, (None, None))
            scores[sid] = ((1.0 - conf, "rule_margin", label, {label: conf}) if label is not None and conf is not None
                           else (1.0, "none", None, None))
    for sid, (score, how, prediction, probabilities) in scores.items():
        item = existing.get(sid)
        if item is None:
            item = ReviewItem(sample_id=sid, domain=pack.name, status="open")
            session.add(item)
        item.score, item.method, item.prediction, item.probabilities = round(score, 6), how, prediction, probabilities
        item.model_version_id = mv.id if mv is not None and how not in UNMODELLED else None
        item.refreshed_at = now
    return {"domain": pack.name, "queued": len(scores), "labeled": len(humans),
            "by_method": {m: sum(1 for s in scores.values() if s[1] == m) for m in {s[1] for s in scores.values()}}}


def top(session: Session, domain: str, limit: int | None = None) -> list[tuple[ReviewItem, str]]:
    """The queue, highest priority first (the least sure, or the most anomalous): (item, record key)."""
    query = (select(ReviewItem, Sample.sample_key).join(Sample, ReviewItem.sample_id == Sample.id)
             .where(ReviewItem.domain == domain).order_by(ReviewItem.score.desc(), Sample.sample_key))
    if limit:
        query = query.limit(limit)
    return [(item, key) for item, key in session.execute(query).all()]
