"""Model-assisted labeling and the review queue (active learning).

`prelabel` runs the domain's champion model over records that no human has labeled and stores its
predictions as kind `model` labels (source `model:<domain>@v<N>`, with confidence and probabilities).
`refresh_queue` ranks the records still waiting for a human (no human or file label yet) by how unsure the model is: normalised entropy
of its probabilities (or the margin between the top two), so that annotators spend their time where a
label teaches the model most. Without a model, the rules' vote margin ranks them; without either, all
rank equal. Records that got a human label leave the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mmops.catalog import Label, ModelVersion, ReviewItem, Sample, TrainingRun
from mmops.domains import DomainPack
from mmops.labeling.store import put_label

METHODS = ("entropy", "margin")
REVIEWED = ("human", "file")  # label kinds that take a record out of the review queue


def uncertainty(probs: np.ndarray, method: str = "entropy") -> np.ndarray:
    """(N, K) probabilities -> (N,) scores in [0, 1]; higher = less sure."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    if method == "entropy":
        return -(p * np.log(p)).sum(axis=1) / math.log(p.shape[1])
    if method == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    raise ValueError(f"unknown uncertainty method {method!r}; use one of {METHODS}")


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


def prelabel(session: Session, pack: DomainPack, data_root: Path, mv: ModelVersion,
             device: str = "cpu") -> tuple[PrelabelSummary, dict[int, np.ndarray]]:
    """Predict every record without a human label with model version `mv`. -> (summary, sample id -> probs)."""
    from mmops.datasets.tensors import load_split
    from mmops.inference import Predictor
    from mmops.records import load_records

    run = session.get(TrainingRun, mv.training_run_id)
    if run is None or not run.checkpoint_path:
        raise ValueError(f"model {pack.name} v{mv.version} has no checkpoint on record")
    predictor = Predictor.load(Path(run.checkpoint_path), device)
    humans = _labeled_by(session, pack.name, ("human",))
    ids = {s.sample_key: s.id for s in session.scalars(select(Sample).where(Sample.domain == pack.name))}
    records = [r for r in load_records(session, pack.name) if ids[r.key] not in humans]
    source = f"model:{pack.name}@v{mv.version}"
    summary = PrelabelSummary(pack.name, source, records=len(records))
    probs_by_id: dict[int, np.ndarray] = {}
    for start in range(0, len(records), 256):
        chunk = records[start:start + 256]
        probs = predictor.predict_proba(load_split(pack, data_root, [r.to_manifest() for r in chunk]))
        for record, p in zip(chunk, probs, strict=True):
            sample_id = ids[record.key]
            probs_by_id[sample_id] = p
            best = int(p.argmax())
            outcome = put_label(session, sample_id, pack.classes[best], "model", source, model_version_id=mv.id,
                                confidence=round(float(p[best]), 4),
                                detail={"probabilities": {c: round(float(x), 4) for c, x in zip(pack.classes, p, strict=True)}})
            setattr(summary, outcome, getattr(summary, outcome) + 1)
    # an older model's pre-labels step aside (kept as history): the current champion speaks for the model tier
    stale = session.execute(
        update(Label).where(Label.kind == "model", Label.source != source, Label.superseded_at.is_(None),
                            Label.sample_id.in_(select(Sample.id).where(Sample.domain == pack.name)))
        .values(superseded_at=datetime.now(UTC)).execution_options(synchronize_session=False))
    summary.superseded = getattr(stale, "rowcount", 0) or 0  # a CursorResult for UPDATE
    return summary, probs_by_id


def refresh_queue(session: Session, pack: DomainPack, probs: dict[int, np.ndarray] | None = None,
                  mv: ModelVersion | None = None, method: str = "entropy") -> dict[str, Any]:
    """Rebuild the domain's review queue from model probabilities (or rule confidence): every record that
    neither a human nor a label file has labeled."""
    humans = _labeled_by(session, pack.name, REVIEWED)
    session.execute(delete(ReviewItem).where(ReviewItem.domain == pack.name, ReviewItem.sample_id.in_(humans)))
    existing = {i.sample_id: i for i in session.scalars(select(ReviewItem).where(ReviewItem.domain == pack.name))}
    waiting = [sid for sid in session.scalars(select(Sample.id).where(Sample.domain == pack.name))
               if sid not in humans]
    rule_votes = {sid: (label, conf) for sid, label, conf in session.execute(
        select(Label.sample_id, Label.label, Label.confidence).join(Sample).where(
            Sample.domain == pack.name, Label.kind == "rule", Label.superseded_at.is_(None)))}
    now = datetime.now(UTC)
    scores: dict[int, tuple[float, str, str | None, dict[str, float] | None]] = {}
    if probs:
        ids = [sid for sid in waiting if sid in probs]
        if ids:
            values = uncertainty(np.stack([probs[i] for i in ids]), method)
            for sid, score in zip(ids, values, strict=True):
                p = probs[sid]
                scores[sid] = (float(score), method, pack.classes[int(p.argmax())],
                               {c: round(float(x), 4) for c, x in zip(pack.classes, p, strict=True)})
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
        item.model_version_id = mv.id if mv is not None and how in METHODS else None
        item.refreshed_at = now
    return {"domain": pack.name, "queued": len(scores), "labeled": len(humans),
            "by_method": {m: sum(1 for s in scores.values() if s[1] == m) for m in {s[1] for s in scores.values()}}}


def top(session: Session, domain: str, limit: int | None = None) -> list[tuple[ReviewItem, str]]:
    """The queue, most uncertain first: (item, record key)."""
    query = (select(ReviewItem, Sample.sample_key).join(Sample, ReviewItem.sample_id == Sample.id)
             .where(ReviewItem.domain == domain).order_by(ReviewItem.score.desc(), Sample.sample_key))
    if limit:
        query = query.limit(limit)
    return [(item, key) for item, key in session.execute(query).all()]
